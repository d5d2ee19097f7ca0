"""``fsstools`` command line: one subcommand per stage, each a thin layer over the library.

Every command parses its options, builds a config and calls one library function. Configs
take one override syntax everywhere: ``--set key=value`` (repeatable; values are YAML, so
``--set shots=[1,5]``). ``--force`` rebuilds a cached result instead of reusing it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

COMMANDS: dict[str, str] = {
    "synth": "generate the embedded synthetic benchmark",
    "coco-masks": "write per-image class-id masks for COCO 2014",
    "episodes": "sample and save an episode list",
    "train": "base-train PSPNet with cross-entropy on base classes",
    "extract": "extract and cache features for an episode list",
    "evaluate": "run inference methods on episodes and score them",
    "reproduce": "run all notebooks with papermill (the main job)",
}


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help with defaults, descriptions kept as written."""


def _parser(name: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"fsstools {name}", description=description,
                                   formatter_class=_Formatter)


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config keys (repeatable; values are YAML, e.g. shots=[1,5])")


def _add_force(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="rebuild cached results instead of "
                   "reusing them")


# ----------------------------------------------------------------------------- commands


def cmd_synth(argv: list[str]) -> int:
    from fsstools.data.synth_render import STYLES
    from fsstools.data.synthetic import SynthConfig, contact_sheet, ensure_synth

    d = SynthConfig()
    p = _parser("synth", "Generate the embedded synthetic benchmark (VOC layout, two styles).")
    p.add_argument("--out", type=Path, default=Path("data/synth"), help="output folder")
    p.add_argument("--n-train", type=int, default=d.n_train, help="train images per style")
    p.add_argument("--n-val", type=int, default=d.n_val, help="val images per style")
    p.add_argument("--size", type=int, default=d.size, help="image side in pixels")
    p.add_argument("--seed", type=int, default=d.seed, help="root of every image's seed")
    p.add_argument("--styles", nargs="+", default=list(d.styles), choices=sorted(STYLES))
    p.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    p.add_argument("--contact-sheet", type=Path, default=None, help="also save a sample grid here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    cfg = SynthConfig(args.n_train, args.n_val, args.size, args.seed, tuple(args.styles))
    root = ensure_synth(args.out, cfg, progress=not args.no_progress, workers=args.workers)
    if args.contact_sheet is not None:
        print(f"contact sheet: {contact_sheet(root, args.contact_sheet)}")
    return 0


def cmd_coco_masks(argv: list[str]) -> int:
    from fsstools.data.coco import SPLITS, write_masks

    p = _parser("coco-masks", "Write class-id masks and an image list for a COCO 2014 split.")
    p.add_argument("--coco-root", required=True, help="folder with annotations/ and <split>/")
    p.add_argument("--split", required=True, choices=SPLITS)
    p.add_argument("--out", help="output folder for masks/ and lists/ (default: --coco-root)")
    p.add_argument("--overwrite", action="store_true", help="rewrite existing masks")
    args = p.parse_args(argv)
    list_file = write_masks(args.coco_root, args.split, args.out, args.overwrite)
    print(f"wrote {list_file} (use it with --root {list_file.parent.parent})")
    return 0


def cmd_episodes(argv: list[str]) -> int:
    from fsstools.data import splits
    from fsstools.data.episodes import sample_episodes, save_episodes

    p = _parser("episodes", "Sample an episode list and save it as JSON.")
    p.add_argument("--root", required=True, help="data root (folder holding JPEGImages/)")
    p.add_argument("--list", required=True, help="image list, relative to the root")
    p.add_argument("--dataset", required=True, choices=splits.DATASETS)
    p.add_argument("--fold", type=int, required=True, choices=range(splits.N_FOLDS))
    p.add_argument("--scheme", default="interleaved", choices=splits.SCHEMES)
    p.add_argument("--shots", type=int, default=1, help="support images per episode")
    p.add_argument("--random-shots", type=int, nargs=2, metavar=("LO", "HI"),
                   help="draw each episode's shot count in LO..HI")
    p.add_argument("--n", type=int, default=1000, help="number of episodes")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--min-fg", type=int, help="pixels a class must cover (default: scaled 2048)")
    p.add_argument("--coco-to-pascal", action="store_true",
                   help="test the PASCAL classes unseen by COCO base training on --fold")
    p.add_argument("--skip-small", action="store_true", help="skip classes with too few images")
    p.add_argument("--out", required=True, help="output JSON file")
    args = p.parse_args(argv)
    if args.coco_to_pascal and args.dataset != "pascal":
        p.error("--coco-to-pascal samples PASCAL images: use --dataset pascal")
    classes = splits.coco_to_pascal_classes(args.fold) if args.coco_to_pascal else None
    el = sample_episodes(
        args.root, args.list, args.dataset, args.fold, args.shots, args.n, args.seed,
        scheme=args.scheme, classes=classes, min_fg=args.min_fg,
        random_shots=tuple(args.random_shots) if args.random_shots else None,
        skip_small=args.skip_small,
    )  # fmt: skip
    out = save_episodes(el, args.out)
    print(f"{len(el)} episodes of classes {list(el.classes)} -> {out} (hash {el.hash})")
    return 0


def cmd_train(argv: list[str]) -> int:
    import torch

    from fsstools import config as config_lib
    from fsstools.training import TrainConfig, main

    p = _parser("train", "Base-train PSPNet with cross-entropy on the base classes of a fold "
                "(also under torchrun: torchrun -m fsstools.training ...).")
    p.add_argument("--config", required=True, help="YAML file, e.g. configs/synth/fold0.yaml")
    _add_set(p)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    args = p.parse_args(argv)
    overrides = [*args.set, *(["run.resume=true"] if args.resume else [])]
    cfg = config_lib.load(TrainConfig, args.config, overrides)
    run_dir = main(cfg)
    if torch.distributed.is_initialized():
        rank = torch.distributed.get_rank()
        torch.distributed.destroy_process_group()
        if rank != 0:
            return 0
    print(run_dir)
    return 0


def cmd_extract(argv: list[str]) -> int:
    from fsstools.data.episodes import load_episodes
    from fsstools.features import ensure_features, episode_images

    p = _parser("extract", "Extract and cache features for an episode list.")
    p.add_argument("--checkpoint", required=True, type=Path, help="base-model checkpoint")
    p.add_argument("--episodes", required=True, type=Path, help="episode list JSON")
    p.add_argument("--size", type=int, default=417, help="test-time image size")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    _add_force(p)
    args = p.parse_args(argv)
    episodes = load_episodes(args.episodes)
    store = ensure_features(args.checkpoint, episodes.root, episode_images(episodes),
                            episodes.dataset, args.size, args.device, args.batch_size, args.dtype,
                            force=args.force)
    print(f"features {tuple(store.feats.shape)} cached under key {store.key}")
    return 0


def cmd_evaluate(argv: list[str]) -> int:
    from fsstools import config as config_lib
    from fsstools import report
    from fsstools.evaluate import EvalConfig, evaluate

    p = _parser("evaluate", "Score inference methods on saved episodes.")
    p.add_argument("--config", type=Path, help="EvalConfig YAML (e.g. configs/synth/eval.yaml)")
    _add_set(p)
    _add_force(p)
    args = p.parse_args(argv)
    cfg = config_lib.load(EvalConfig, args.config, args.set)
    _, summary = evaluate(cfg, force=args.force)
    print(report.interval_table(summary).to_string())
    print(f"results in {cfg.out_dir}")
    return 0


def cmd_reproduce(argv: list[str]) -> int:
    import yaml

    from fsstools import paths
    from fsstools.reproduce import reproduce

    p = _parser("reproduce", "Run the numbered notebooks with papermill (full embedded-benchmark "
                "parameters from configs/reproduce/).")
    p.add_argument("--only", nargs="*", help="notebook prefixes to run, e.g. 00 02")
    _add_set(p)
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: the outputs folder, see fsstools.paths)")
    args = p.parse_args(argv)
    params = {}
    for item in args.set:
        if "=" not in item:
            p.error(f"--set {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        params[key.strip()] = yaml.safe_load(raw)
    runs = reproduce(args.only, params, paths.resolve(args.out or paths.outputs_dir()))
    failed = [r for r in runs if r.error]
    for r in failed:
        print(f"FAILED: {r.notebook}.ipynb {r.error}", file=sys.stderr)
    return 1 if failed else 0


HANDLERS: dict[str, Callable[[list[str]], int]] = {
    "synth": cmd_synth,
    "coco-masks": cmd_coco_masks,
    "episodes": cmd_episodes,
    "train": cmd_train,
    "extract": cmd_extract,
    "evaluate": cmd_evaluate,
    "reproduce": cmd_reproduce,
}


def usage() -> str:
    lines = ["usage: fsstools <command> [options]", "", "commands:"]
    lines += [f"  {name:<11} {help_}" for name, help_ in COMMANDS.items()]
    lines += ["", "Run `fsstools <command> --help` for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one command; a :class:`~fsstools.errors.UserError` becomes one ``error:`` line
    and exit status 2, anything else keeps its traceback."""
    from fsstools.errors import UserError

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in HANDLERS:
        print(f"fsstools: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        return int(HANDLERS[name](rest) or 0)
    except UserError as err:
        print(f"fsstools {name}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
