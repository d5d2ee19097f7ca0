"""Commands on data: ``synth``, ``coco-masks``, ``episodes``."""

from __future__ import annotations

import argparse
from pathlib import Path

from fsstools.cli.common import at_least, new_parser
from fsstools.errors import ConfigError


def synth_parser() -> argparse.ArgumentParser:
    from fsstools.data.synth.generate import PRESETS, SynthConfig
    from fsstools.data.synth.render import STYLES

    d = SynthConfig()
    p = new_parser("synth", "Generate the embedded synthetic benchmark (VOC layout, two styles).")
    p.add_argument("--out", type=Path, default=Path("data/synth"), help="output folder")
    p.add_argument("--n-train", type=at_least(1), default=d.n_train,
                   help="train images per style")
    p.add_argument("--n-val", type=at_least(1), default=d.n_val, help="val images per style")
    p.add_argument("--size", type=int, default=d.size, help="image side in pixels")
    p.add_argument("--seed", type=at_least(0), default=d.seed, help="root of every image's seed")
    p.add_argument("--styles", nargs="+", default=list(d.styles), choices=sorted(STYLES),
                   help="styles to generate (each its own folder)")
    p.add_argument("--preset", default=d.preset, choices=PRESETS,
                   help="scene layout: v2 the benchmark (PASCAL-like object sizes), v1 the "
                        "uniform-size variant (docs/benchmark.md)")
    p.add_argument("--workers", type=at_least(1), default=None,
                   help="processes (default: all CPUs)")
    p.add_argument("--contact-sheet", type=Path, default=None, help="also save a sample grid here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run_synth(args: argparse.Namespace) -> int:
    from fsstools.data.synth.benchmark import SynthConfig, contact_sheet, ensure_synth

    cfg = SynthConfig(args.n_train, args.n_val, args.size, args.seed, tuple(args.styles),
                      preset=args.preset)
    root = ensure_synth(args.out, cfg, progress=not args.no_progress, workers=args.workers)
    if args.contact_sheet is not None:
        print(f"contact sheet: {contact_sheet(root, args.contact_sheet)}")
    return 0


def coco_masks_parser() -> argparse.ArgumentParser:
    from fsstools.data.coco import SPLITS

    p = new_parser("coco-masks", "Write class-id masks and an image list for a COCO 2014 split.")
    p.add_argument("--coco-root", required=True, help="folder with annotations/ and <split>/")
    p.add_argument("--split", required=True, choices=SPLITS, help="COCO 2014 split")
    p.add_argument("--out", help="output folder for masks/ and lists/ (default: --coco-root)")
    p.add_argument("--overwrite", action="store_true", help="rewrite existing masks")
    return p


def run_coco_masks(args: argparse.Namespace) -> int:
    from fsstools.data.coco import write_masks

    list_file = write_masks(args.coco_root, args.split, args.out, args.overwrite)
    print(f"wrote {list_file} (use it with --root {list_file.parent.parent})")
    return 0


def episodes_parser() -> argparse.ArgumentParser:
    from fsstools.data import splits
    p = new_parser("episodes", "Sample an episode list and save it as JSON (for fsstools extract "
                "and fsstools evaluate --set episodes=[FILE]).")
    p.add_argument("--root", required=True, help="data root (folder holding JPEGImages/)")
    p.add_argument("--list", required=True, help="image list, relative to the root")
    p.add_argument("--dataset", required=True, choices=splits.DATASETS, help="class table")
    p.add_argument("--fold", type=int, required=True,
                   help=f"which classes are novel (0..{splits.N_FOLDS - 1})")
    p.add_argument("--scheme", default="interleaved", choices=splits.SCHEMES,
                   help="COCO-20i split scheme")
    p.add_argument("--shots", type=at_least(1), default=1, help="support images per episode")
    p.add_argument("--random-shots", type=at_least(1), nargs=2, metavar=("LO", "HI"),
                   help="draw each episode's shot count in LO..HI")
    p.add_argument("--n", type=at_least(1), default=1000, help="number of episodes")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--min-fg", type=at_least(1),
                   help="pixels a class must cover (default: 2048 scaled to the image area)")
    p.add_argument("--coco-to-pascal", action="store_true",
                   help="test the PASCAL classes unseen by COCO base training on --fold")
    p.add_argument("--skip-small", action="store_true", help="skip classes with too few images")
    p.add_argument("--out", required=True, help="output JSON file")
    return p


def run_episodes(args: argparse.Namespace) -> int:
    from fsstools.data import splits
    from fsstools.data.episodes import EpisodeSettings, sample_episodes, save_episodes

    if args.coco_to_pascal and args.dataset != "pascal":
        raise ConfigError("--coco-to-pascal samples PASCAL images: use --dataset pascal")
    classes = splits.coco_to_pascal_classes(args.fold) if args.coco_to_pascal else None
    el = sample_episodes(args.root, args.list, EpisodeSettings(
        args.dataset, args.fold, args.shots, args.n, args.seed, scheme=args.scheme,
        classes=classes, min_fg=args.min_fg, random_shots=args.random_shots,
        skip_small=args.skip_small))
    out = save_episodes(el, args.out)
    print(f"{len(el)} episodes of classes {list(el.classes)} -> {out} (hash {el.hash})")
    return 0
