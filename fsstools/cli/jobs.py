"""Commands over the whole study: ``reproduce`` (the main job) and ``report``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fsstools.cli.common import add_set, new_parser
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
