"""Commands over the whole study: ``reproduce`` (the main job) and ``report``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fsstools.cli.common import add_set, at_least, new_parser
from fsstools.errors import ConfigError, MissingError, did_you_mean


def reproduce_parser() -> argparse.ArgumentParser:
    p = new_parser("reproduce", "Run the numbered notebooks with papermill (full embedded-benchmark "
                "parameters from configs/reproduce/).")
    p.add_argument("--only", nargs="*", help="notebook prefixes to run, e.g. 00 02")
    add_set(p)
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: the outputs folder, see fsstools.paths)")
    return p


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


def run_reproduce(args: argparse.Namespace) -> int:
    from fsstools import config as config_lib
    from fsstools import paths
    from fsstools.jobs.reproduce import list_notebooks, reproduce

    params = dict(config_lib.parse_override(item) for item in args.set)
    _check_notebook_params(list_notebooks(args.only), params)
    runs = reproduce(args.only, params, paths.resolve(args.out or paths.outputs_dir()))
    failed = [r for r in runs if r.error]
    for r in failed:
        print(f"FAILED: {r.notebook}.ipynb {r.error}", file=sys.stderr)
    return 1 if failed else 0


def report_parser() -> argparse.ArgumentParser:
    p = new_parser("report", "Write docs/results.md (every table and figure of the main job, with "
                "the commit and machine it ran on) and the README's headline table and reading "
                "from the main job's outputs.")
    p.add_argument("--outputs", type=Path, default=None,
                   help="the main job's folder (default: the outputs folder)")
    p.add_argument("--docs", type=Path, default=Path("docs"), help="where results.md goes")
    p.add_argument("--readme", type=Path, default=Path("README.md"),
                   help="README whose headline and reading blocks are replaced (an empty value: none)")
    return p


def run_report(args: argparse.Namespace) -> int:
    from fsstools import paths
    from fsstools.jobs.publish import write_report

    outputs = paths.resolve(args.outputs or paths.outputs_dir())
    readme = paths.resolve(args.readme) if str(args.readme) not in ("", ".") else None
    if readme is not None and not readme.is_file():
        raise MissingError(f"--readme {readme} does not exist; pass the README to update, "
                           "or --readme '' for none")
    try:
        path = write_report(outputs, paths.resolve(args.docs), readme)
    except ValueError as err:
        raise ConfigError(f"--readme {readme}: {err}", key="readme") from None
    print(f"{path}" + (f" and the headline table and reading of {readme}" if readme else ""))
    return 0


def demo_parser() -> argparse.ArgumentParser:
    p = new_parser("demo", "RePRI against three baselines on one fold of the embedded benchmark, "
                   "in minutes: generates the data and trains one small base model on first "
                   "use, prints mIoU with 95% intervals, writes a figure, one task as a "
                   "picture and the files of the README's own-images example.")
    p.add_argument("--profile", default="quick", choices=("quick", "tiny", "full"),
                   help="size of the benchmark and the base training (tiny: seconds, numbers "
                   "that test the code only)")
    p.add_argument("--fold", type=int, default=0, choices=range(4), help="fold (0-3)")
    p.add_argument("--n-episodes", type=at_least(1), default=100,
                   help="tasks per shot count (1 and 5 shots)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: <outputs>/demo, see fsstools.paths)")
    return p


def run_demo(args: argparse.Namespace) -> int:
    import time

    from fsstools import paths
    from fsstools.studies.demo import run_demo
    from fsstools.studies.profiles import get_profile

    tic = time.perf_counter()
    out = paths.resolve(args.out or paths.outputs_dir() / "demo")
    result = run_demo(get_profile(args.profile), out, args.fold, n_episodes=args.n_episodes,
                      device=args.device)
    print(f"\nmIoU (%) on {args.n_episodes} tasks per shot count of fold {args.fold}'s novel "
          f"classes, 95% interval over tasks ({args.profile} profile: numbers to see the "
          "method work, not to report):")
    print(result.table.to_string())
    print("\nRePRI minus each baseline (points, paired on the same tasks):")
    print(result.gaps.to_string())
    print()
    for name, path in result.files.items():
        print(f"{name + ':':<10} {path}")
    print(f"done in {time.perf_counter() - tic:.0f} s")
    return 0
