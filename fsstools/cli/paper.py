"""``fsstools paper-check``: the paper's table from your own data and the authors' models."""

from __future__ import annotations

import argparse
from pathlib import Path

from fsstools.cli.common import add_force, add_set, at_least, new_parser

BENCHMARKS = ("pascal", "coco", "coco_to_pascal")
ARCHS = ("resnet50", "resnet101")


def paper_check_parser() -> argparse.ArgumentParser:
    from fsstools.data.transforms import FEATURE_STRIDE
    from fsstools.inference import METHODS

    p = new_parser("paper-check", "Check the data root (fsstools data-check, the paper's lists), "
                   "evaluate all four folds with the authors' checkpoints and the paper's "
                   "protocol (configs/pascal/paper.yaml), and print our mIoU with its 95% "
                   "interval beside the paper's per fold, the difference and whether the "
                   "paper's number lies in our interval (also written as CSV and markdown).")
    p.add_argument("--dataset", default="pascal", choices=BENCHMARKS,
                   help="benchmark: PASCAL-5i, COCO-20i, or COCO-trained models on PASCAL")
    p.add_argument("--data-root", required=True, type=Path,
                   help="data root of the test images (PASCAL: what prepare-pascal made)")
    p.add_argument("--checkpoints", required=True, type=Path,
                   help="folder where the authors' checkpoint archive was unpacked (holds "
                   "model_ckpt/)")
    p.add_argument("--arch", default="resnet50", choices=ARCHS,
                   help="trunk of the authors' models to use (the paper's numbers are "
                   "ResNet-50's)")
    p.add_argument("--shots", nargs="+", type=at_least(1), default=[1, 5], help="shot counts")
    p.add_argument("--methods", nargs="+", default=["repri", "oracle_repri"], metavar="NAME",
                   choices=list(METHODS), help="registered methods (fsstools.inference."
                   "METHODS); repri, repri_reference and oracle_repri have paper numbers")
    p.add_argument("--n-episodes", type=at_least(1), default=1000,
                   help="tasks per fold, shot count and run")
    p.add_argument("--runs", type=at_least(1), default=2,
                   help="seeded task lists per fold and shot count")
    p.add_argument("--seed", type=int, default=2020, help="seed of the first run (then +1 ...)")
    p.add_argument("--size", type=at_least(FEATURE_STRIDE), default=417,
                   help="test image size (longer side, then padded square)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--out", type=Path, help="output folder (default: "
                   "<outputs>/paper-check/<dataset>-<arch>-<hash of the settings>)")
    add_set(p)
    p.add_argument("--no-data-check", action="store_true", help="skip reading every listed "
                   "image and mask first (after a clean fsstools data-check of the same root)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_force(p)
    return p


def run_paper_check(args: argparse.Namespace) -> int:
    from fsstools.jobs.paper_check import PaperCheck, run_paper_check

    check = PaperCheck(
        dataset=args.dataset, data_root=args.data_root, checkpoints=args.checkpoints,
        arch=args.arch, shots=tuple(args.shots), methods=tuple(args.methods),
        n_episodes=args.n_episodes, runs=args.runs, seed=args.seed, size=args.size,
        device=args.device, out=args.out, overrides=tuple(args.set),
        check_data=not args.no_data_check,
    )
    result = run_paper_check(check, progress=not args.no_progress, force=args.force)
    print(result.markdown, end="")
    print(f"table in {result.out_dir / 'paper_check.csv'} and paper_check.md, settings in "
          "paper_check.yaml, each fold's results in fold0/ .. fold3/")
    return 0
