"""``fsstools`` command line: one subcommand per stage, each a thin layer over the library.

Every command parses its options, builds a config and calls one library function. Configs
take one override syntax everywhere: ``--set key=value`` (repeatable; values are YAML, so
``--set shots=[1,5]``). ``--force`` rebuilds a cached result instead of reusing it.

A mistake the user can fix (a bad value, a missing file, unusable data, an unknown name)
ends with one ``fsstools <command>: error: ...`` paragraph and exit status 2; ``--debug``
(anywhere on the line) or ``FSSTOOLS_DEBUG=1`` adds the traceback. Anything else is a bug
and keeps its traceback. Warnings print as one ``warning:`` line each.

The stages chain through files::

    fsstools episodes --root data/synth/A --list lists/val.txt --dataset synth --fold 0 \\
        --shots 1 --n 1000 --out ep.json
    fsstools extract --checkpoint RUN/best.pt --episodes ep.json --size 128
    fsstools evaluate --set checkpoint=RUN/best.pt --set episodes=[ep.json] --set size=128

One concern, the command table: a parser and a handler of a few lines per command, kept in
one file so every command reads alike (its length grows with the commands, not with logic).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

from fsstools import __version__
from fsstools.errors import ConfigError, MissingError, UserError, did_you_mean

COMMANDS: dict[str, str] = {
    "synth": "generate the embedded synthetic benchmark",
    "coco-masks": "write per-image class-id masks for COCO 2014",
    "episodes": "sample and save an episode list",
    "train": "base-train PSPNet with cross-entropy on base classes",
    "extract": "extract and cache features for episode lists",
    "evaluate": "run inference methods on episodes and score them",
    "reproduce": "run all notebooks with papermill (the main job)",
    "report": "write docs/results.md and the README's headline table from the main job",
    "sweep": "run a notebook or evaluation over a grid as submitit jobs (local or SLURM)",
    "gather": "gather a sweep's points into one table, a summary and a figure",
}
EXIT_USER_ERROR = 2  # what argparse uses for a bad option, so every user error exits alike
EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C
DEBUG_FLAG = "--debug"
DEBUG_ENV = "FSSTOOLS_DEBUG"
_PLAIN_PATH = re.compile(r"[\w./-]+")


class _Formatter(argparse.HelpFormatter):
    """Help that shows each option's default where it says something (not for required
    options, flags, or options whose help explains their absence)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        silent = action.required or any(action.default is v for v in (None, False,
                                                                       argparse.SUPPRESS))
        if silent or "(default" in text or "%(default)" in text:
            return text
        return f"{text} (default: %(default)s)"


def _parser(name: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=f"fsstools {name}", description=description, formatter_class=_Formatter,
        epilog=f"{DEBUG_FLAG} (or {DEBUG_ENV}=1) shows the traceback of an error.",
    )


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"  # argparse names the type in its messages
    return parse


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config keys (repeatable; values are YAML, e.g. shots=[1,5])")


def _add_force(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="rebuild cached results instead of "
                   "reusing them")


def _add_accept_edited(p: argparse.ArgumentParser) -> None:
    p.add_argument("--accept-edited", action="store_true", help="use episode files edited by "
                   "hand (their new hash is recorded and a warning says so)")


# ----------------------------------------------------------------------------- parsers


def synth_parser() -> argparse.ArgumentParser:
    from fsstools.data.synth_render import STYLES
    from fsstools.data.synthetic import PRESETS, SynthConfig

    d = SynthConfig()
    p = _parser("synth", "Generate the embedded synthetic benchmark (VOC layout, two styles).")
    p.add_argument("--out", type=Path, default=Path("data/synth"), help="output folder")
    p.add_argument("--n-train", type=_at_least(1), default=d.n_train,
                   help="train images per style")
    p.add_argument("--n-val", type=_at_least(1), default=d.n_val, help="val images per style")
    p.add_argument("--size", type=int, default=d.size, help="image side in pixels")
    p.add_argument("--seed", type=_at_least(0), default=d.seed, help="root of every image's seed")
    p.add_argument("--styles", nargs="+", default=list(d.styles), choices=sorted(STYLES),
                   help="styles to generate (each its own folder)")
    p.add_argument("--preset", default=d.preset, choices=PRESETS,
                   help="benchmark version: v2 PASCAL-like object sizes, v1 the first version")
    p.add_argument("--workers", type=_at_least(1), default=None,
                   help="processes (default: all CPUs)")
    p.add_argument("--contact-sheet", type=Path, default=None, help="also save a sample grid here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def coco_masks_parser() -> argparse.ArgumentParser:
    from fsstools.data.coco import SPLITS

    p = _parser("coco-masks", "Write class-id masks and an image list for a COCO 2014 split.")
    p.add_argument("--coco-root", required=True, help="folder with annotations/ and <split>/")
    p.add_argument("--split", required=True, choices=SPLITS, help="COCO 2014 split")
    p.add_argument("--out", help="output folder for masks/ and lists/ (default: --coco-root)")
    p.add_argument("--overwrite", action="store_true", help="rewrite existing masks")
    return p


def episodes_parser() -> argparse.ArgumentParser:
    from fsstools.data import splits

    p = _parser("episodes", "Sample an episode list and save it as JSON (for fsstools extract "
                "and fsstools evaluate --set episodes=[FILE]).")
    p.add_argument("--root", required=True, help="data root (folder holding JPEGImages/)")
    p.add_argument("--list", required=True, help="image list, relative to the root")
    p.add_argument("--dataset", required=True, choices=splits.DATASETS, help="class table")
    p.add_argument("--fold", type=int, required=True, choices=range(splits.N_FOLDS),
                   help="which classes are novel")
    p.add_argument("--scheme", default="interleaved", choices=splits.SCHEMES,
                   help="COCO-20i split scheme")
    p.add_argument("--shots", type=_at_least(1), default=1, help="support images per episode")
    p.add_argument("--random-shots", type=_at_least(1), nargs=2, metavar=("LO", "HI"),
                   help="draw each episode's shot count in LO..HI")
    p.add_argument("--n", type=_at_least(1), default=1000, help="number of episodes")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--min-fg", type=_at_least(1),
                   help="pixels a class must cover (default: 2048 scaled to the image area)")
    p.add_argument("--coco-to-pascal", action="store_true",
                   help="test the PASCAL classes unseen by COCO base training on --fold")
    p.add_argument("--skip-small", action="store_true", help="skip classes with too few images")
    p.add_argument("--out", required=True, help="output JSON file")
    return p


def train_parser() -> argparse.ArgumentParser:
    p = _parser("train", "Base-train PSPNet with cross-entropy on the base classes of a fold "
                "(also under torchrun: torchrun -m fsstools.training ...).")
    p.add_argument("--config", required=True, help="YAML file, e.g. configs/synth/fold0.yaml")
    _add_set(p)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    return p


def extract_parser() -> argparse.ArgumentParser:
    from fsstools.data.transforms import FEATURE_STRIDE

    p = _parser("extract", "Extract and cache the features of the images of episode lists; "
                "fsstools evaluate with the same checkpoint, files, size and dtype reuses them "
                "(the command to run is printed).")
    p.add_argument("--checkpoint", required=True, type=Path, help="base-model checkpoint")
    p.add_argument("--episodes", required=True, type=Path, nargs="+",
                   help="episode list JSON file(s) of one data root")
    p.add_argument("--size", type=_at_least(FEATURE_STRIDE), default=417,
                   help="test-time image size")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--batch-size", type=_at_least(1), default=32, help="images per forward pass")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"],
                   help="stored feature precision")
    _add_accept_edited(p)
    _add_force(p)
    return p


def evaluate_parser() -> argparse.ArgumentParser:
    p = _parser("evaluate", "Score inference methods on sampled or saved episodes "
                "(keys: see fsstools.evaluate.EvalConfig; methods may be names or variants "
                "such as {name: repri_tpi2, base: repri, t_pi: [2]}).")
    p.add_argument("--config", type=Path, help="EvalConfig YAML (e.g. configs/synth/eval.yaml)")
    _add_set(p)
    _add_accept_edited(p)
    _add_force(p)
    return p


def reproduce_parser() -> argparse.ArgumentParser:
    p = _parser("reproduce", "Run the numbered notebooks with papermill (full embedded-benchmark "
                "parameters from configs/reproduce/).")
    p.add_argument("--only", nargs="*", help="notebook prefixes to run, e.g. 00 02")
    _add_set(p)
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: the outputs folder, see fsstools.paths)")
    return p


def report_parser() -> argparse.ArgumentParser:
    p = _parser("report", "Write docs/results.md (every table and figure of the main job, with "
                "the commit and machine it ran on) and the README's headline table from the "
                "main job's outputs.")
    p.add_argument("--outputs", type=Path, default=None,
                   help="the main job's folder (default: the outputs folder)")
    p.add_argument("--docs", type=Path, default=Path("docs"), help="where results.md goes")
    p.add_argument("--readme", type=Path, default=Path("README.md"),
                   help="README whose headline block is replaced (an empty value: none)")
    return p


def sweep_parser() -> argparse.ArgumentParser:
    from fsstools.sweep import EXECUTORS, Resources

    d = Resources()
    p = _parser("sweep", "Run a notebook or an eval config once per point of a grid as submitit "
                "jobs (local or SLURM) into <outputs>/sweeps/NAME/, reusing finished points, then "
                "fsstools gather; a --set value may name a grid key in braces, e.g. "
                "train_config=configs/synth/fold{fold}.yaml.")
    p.add_argument("notebook", nargs="?", type=Path,
                   help="notebook file, or the prefix of a numbered notebook, e.g. 03 (or --eval)")
    p.add_argument("--eval", type=Path, metavar="CONFIG", help="evaluation config to sweep instead of a notebook")
    p.add_argument("--grid", nargs="+", action="extend", default=[], metavar="KEY=[V1, V2]",
                   help="values to sweep, a YAML list (repeatable; the points are the product "
                   "of the lists; a list parameter takes a list of lists: shots=[[1],[5]])")
    _add_set(p)
    p.add_argument("--executor", choices=EXECUTORS, default=d.executor, help="local: processes "
                   "on this machine; slurm: one job array; debug: one point after another in "
                   "this process")
    p.add_argument("--jobs", type=_at_least(1), metavar="N", help="points running at once (default: 1 "
                   "locally, all of them on SLURM)")
    p.add_argument("--slurm-partition", metavar="P", help="SLURM partition (default: the cluster's)")
    p.add_argument("--slurm-gpus", type=_at_least(0), default=d.gpus, metavar="G",
                   help="GPUs per SLURM job")
    p.add_argument("--slurm-cpus", type=_at_least(1), metavar="C", help="CPUs per SLURM job (default: the "
                   "cluster's)")
    p.add_argument("--slurm-time", type=_at_least(1), default=d.time_min, metavar="MIN",
                   help="time limit per SLURM job, in minutes")
    p.add_argument("--name", help="the sweep's folder under <outputs>/sweeps (default: the "
                   "notebook or config name and the grid keys)")
    _add_metric(p)
    p.add_argument("--force", action="store_true", help="run finished points again")
    return p


def gather_parser() -> argparse.ArgumentParser:
    p = _parser("gather", "Gather a sweep's points into table.csv (every point's rows with the "
                "grid values as columns), table.md and a figure of a metric against the first "
                "grid key; a point that did not finish is listed with the end of its log.")
    p.add_argument("folder", type=Path, help="the sweep's folder, e.g. outputs/sweeps/NAME")
    _add_metric(p)
    p.add_argument("--table", default="summary.csv", help="the CSV each point wrote")
    return p


def _add_metric(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metric", help="column to plot (default: miou, else the first numeric one)")


# ----------------------------------------------------------------------------- commands


def cmd_synth(argv: list[str]) -> int:
    from fsstools.data.synthetic import SynthConfig, contact_sheet, ensure_synth

    args = synth_parser().parse_args(argv)
    cfg = SynthConfig(args.n_train, args.n_val, args.size, args.seed, tuple(args.styles),
                      preset=args.preset)
    root = ensure_synth(args.out, cfg, progress=not args.no_progress, workers=args.workers)
    if args.contact_sheet is not None:
        print(f"contact sheet: {contact_sheet(root, args.contact_sheet)}")
    return 0


def cmd_coco_masks(argv: list[str]) -> int:
    from fsstools.data.coco import write_masks

    args = coco_masks_parser().parse_args(argv)
    list_file = write_masks(args.coco_root, args.split, args.out, args.overwrite)
    print(f"wrote {list_file} (use it with --root {list_file.parent.parent})")
    return 0


def cmd_episodes(argv: list[str]) -> int:
    from fsstools.data import splits
    from fsstools.data.episodes import sample_episodes, save_episodes

    p = episodes_parser()
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

    args = train_parser().parse_args(argv)
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


def _yaml_path(path: Path) -> str:
    """A path as a YAML value, quoted where YAML would misread it (``:``, ``#``, spaces)."""
    return str(path) if _PLAIN_PATH.fullmatch(str(path)) else json.dumps(str(path))


def cmd_extract(argv: list[str]) -> int:
    from fsstools import guard
    from fsstools.data.episodes import load_episode_files
    from fsstools.features import ensure_features, episode_list_images

    args = extract_parser().parse_args(argv)
    lists = list(load_episode_files(args.episodes, accept_edited=args.accept_edited).values())
    first = lists[0]
    guard.check_disjoint(args.checkpoint, first.dataset, guard.tested_classes(lists), first.fold,
                         what="extract")
    store = ensure_features(args.checkpoint, first.root, episode_list_images(lists),
                            first.dataset, args.size, args.device, args.batch_size, args.dtype,
                            force=args.force)
    print(f"features {tuple(store.feats.shape)} of {len(store.index)} images cached under key "
          f"{store.key}")
    files = ",".join(map(_yaml_path, args.episodes))
    sets = [f"checkpoint={_yaml_path(args.checkpoint)}", f"episodes=[{files}]",
            f"dataset={first.dataset}", f"fold={first.fold}", f"size={args.size}",
            f"feature_dtype={args.dtype}"]
    sets += [f"scheme={first.scheme}"] if first.dataset == "coco" else []
    print("evaluate on them with: fsstools evaluate "
          + " ".join(f"--set {shlex.quote(s)}" for s in sets)
          + (" --accept-edited" if args.accept_edited else ""))
    return 0


def cmd_evaluate(argv: list[str]) -> int:
    from fsstools import config as config_lib
    from fsstools import report
    from fsstools.evaluate import EvalConfig, run_evaluation

    args = evaluate_parser().parse_args(argv)
    cfg = config_lib.load(EvalConfig, args.config, args.set)
    results = run_evaluation(cfg, force=args.force, accept_edited=args.accept_edited)
    print(report.interval_table(results.summary).to_string())
    print(f"results in {results.out_dir}")
    return 0


def _check_notebook_params(books: list[Path], params: dict) -> None:
    """Every ``--set`` key is a parameter of at least one of ``books`` (papermill would only
    warn and run the notebooks with the default)."""
    import papermill

    known = set().union(*(papermill.inspect_notebook(str(nb)) for nb in books)) - {"output_dir"}
    for key in params:
        if key == "output_dir":
            raise ConfigError("--set output_dir: the notebooks' output folders come from --out")
        if key not in known:
            raise ConfigError(
                f"--set {key}: no notebook of {', '.join(b.stem for b in books)} has a parameter "
                f"{key!r}{did_you_mean(key, known)}; their parameters: {', '.join(sorted(known))}",
                key=key,
            )


def cmd_reproduce(argv: list[str]) -> int:
    from fsstools import config as config_lib
    from fsstools import paths
    from fsstools.reproduce import list_notebooks, reproduce

    args = reproduce_parser().parse_args(argv)
    params = dict(config_lib.parse_override(item) for item in args.set)
    _check_notebook_params(list_notebooks(args.only), params)
    runs = reproduce(args.only, params, paths.resolve(args.out or paths.outputs_dir()))
    failed = [r for r in runs if r.error]
    for r in failed:
        print(f"FAILED: {r.notebook}.ipynb {r.error}", file=sys.stderr)
    return 1 if failed else 0


def cmd_report(argv: list[str]) -> int:
    from fsstools import paths
    from fsstools.publish import write_report

    args = report_parser().parse_args(argv)
    outputs = paths.resolve(args.outputs or paths.outputs_dir())
    readme = paths.resolve(args.readme) if str(args.readme) not in ("", ".") else None
    if readme is not None and not readme.is_file():
        raise MissingError(f"--readme {readme} does not exist; pass the README to update, "
                           "or --readme '' for none")
    try:
        path = write_report(outputs, paths.resolve(args.docs), readme)
    except ValueError as err:
        raise ConfigError(f"--readme {readme}: {err}", key="readme") from None
    print(f"{path}" + (f" and the headline table of {readme}" if readme else ""))
    return 0


def cmd_sweep(argv: list[str]) -> int:
    from fsstools import sweep, sweep_plan

    p = sweep_parser()
    args = p.parse_args(argv)
    if (args.notebook is None) == (args.eval is None):
        p.error("give a NOTEBOOK or --eval CONFIG, one of them")
    target = sweep_plan.make_target(args.notebook, args.eval, args.set)
    res = sweep.Resources(args.executor, args.jobs, args.slurm_partition, args.slurm_gpus,
                          args.slurm_cpus, args.slurm_time)
    done = sweep.run_sweep(target, sweep_plan.parse_grid(args.grid), args.name, res,
                           args.force, args.metric)
    return 1 if done.failed else 0


def cmd_gather(argv: list[str]) -> int:
    from fsstools.gather import gather

    args = gather_parser().parse_args(argv)
    done = gather(args.folder, args.metric, args.table)
    print(done.markdown.read_text())
    return 1 if done.failed else 0


HANDLERS: dict[str, Callable[[list[str]], int]] = {
    "synth": cmd_synth,
    "coco-masks": cmd_coco_masks,
    "episodes": cmd_episodes,
    "train": cmd_train,
    "extract": cmd_extract,
    "evaluate": cmd_evaluate,
    "reproduce": cmd_reproduce,
    "report": cmd_report,
    "sweep": cmd_sweep,
    "gather": cmd_gather,
}
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "synth": synth_parser,
    "coco-masks": coco_masks_parser,
    "episodes": episodes_parser,
    "train": train_parser,
    "extract": extract_parser,
    "evaluate": evaluate_parser,
    "reproduce": reproduce_parser,
    "report": report_parser,
    "sweep": sweep_parser,
    "gather": gather_parser,
}


def usage() -> str:
    lines = ["usage: fsstools [--version] [--debug] <command> [options]", "", "commands:"]
    lines += [f"  {name:<11} {help_}" for name, help_ in COMMANDS.items()]
    lines += ["", "Run fsstools <command> --help for the options of one command.",
              f"{DEBUG_FLAG} (anywhere, or {DEBUG_ENV}=1) shows the traceback of an error."]
    return "\n".join(lines)


def _debug_wanted(argv: list[str]) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    """Run one command and return its exit status.

    A :class:`~fsstools.errors.UserError` becomes one ``error:`` line and status 2 (with the
    traceback under ``--debug``); argparse's own errors exit 2 as well; anything else
    keeps its traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_wanted(argv)
    argv = [a for a in argv if a != DEBUG_FLAG]
    if argv[:1] == ["--version"]:
        print(f"fsstools {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in HANDLERS:
        print(f"fsstools: error: unknown command {name!r}{did_you_mean(name, HANDLERS)}\n\n"
              f"{usage()}", file=sys.stderr)
        return EXIT_USER_ERROR
    with warnings.catch_warnings():  # restores the warning printer when the command ends

        def one_line(message, category, filename, lineno, file=None, line=None) -> None:
            print(f"fsstools {name}: warning: {message}", file=sys.stderr)

        warnings.showwarning = one_line
        try:
            return int(HANDLERS[name](rest) or 0)
        except UserError as err:
            if debug:
                traceback.print_exc()
            print(f"fsstools {name}: error: {err}", file=sys.stderr)
            return EXIT_USER_ERROR
        except SystemExit as done:  # argparse: --help (0) or a bad option (2, message printed)
            if done.code is None:
                return 0
            return done.code if isinstance(done.code, int) else EXIT_USER_ERROR
        except KeyboardInterrupt:
            if debug:
                traceback.print_exc()
            print(f"fsstools {name}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
