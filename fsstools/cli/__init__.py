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

Each command is one row of :data:`COMMANDS`: its one-line help, its parser and its
handler; the parsers and handlers live in the modules of this package by topic
(:mod:`.data`, :mod:`.pascal`, :mod:`.pipeline`, :mod:`.paper`, :mod:`.own`,
:mod:`.jobs`, :mod:`.sweeps`). ``python -m fsstools.cli <command>`` runs the
same commands (what torchrun starts: ``torchrun -m fsstools.cli train ...``).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from fsstools import __version__
from fsstools.cli import data, jobs, own, paper, pascal, pipeline, sweeps
from fsstools.cli.common import DEBUG_ENV, DEBUG_FLAG, EXIT_INTERRUPTED, EXIT_USER_ERROR
from fsstools.errors import UserError, did_you_mean


@dataclass(frozen=True)
class Command:
    """One subcommand: its line in ``fsstools --help``, its parser and what it runs."""

    help: str
    parser: Callable[[], argparse.ArgumentParser]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {
    "demo": Command("RePRI against three baselines on the embedded benchmark, in minutes",
                    jobs.demo_parser, jobs.run_demo),
    "synth": Command("generate the embedded synthetic benchmark",
                     data.synth_parser, data.run_synth),
    "coco-masks": Command("write per-image class-id masks for COCO 2014",
                          data.coco_masks_parser, data.run_coco_masks),
    "prepare-pascal": Command("make a PASCAL-5i data root from VOC2012 and SBD (masks, lists)",
                              pascal.prepare_pascal_parser, pascal.run_prepare_pascal),
    "data-check": Command("list every missing or malformed file of a data root",
                          pascal.data_check_parser, pascal.run_data_check),
    "episodes": Command("sample and save an episode list",
                        data.episodes_parser, data.run_episodes),
    "train": Command("base-train PSPNet with cross-entropy on base classes",
                     pipeline.train_parser, pipeline.run_train),
    "extract": Command("extract and cache features for episode lists",
                       pipeline.extract_parser, pipeline.run_extract),
    "evaluate": Command("run inference methods on episodes and score them",
                        pipeline.evaluate_parser, pipeline.run_evaluate),
    "paper-check": Command("the paper's table from your data and the authors' checkpoints",
                           paper.paper_check_parser, paper.run_paper_check),
    "segment": Command("segment your own images from a few labelled examples",
                       own.segment_parser, own.run_segment),
    "reproduce": Command("run all notebooks with papermill (the main job)",
                         jobs.reproduce_parser, jobs.run_reproduce),
    "sweep": Command("run a notebook or evaluation over a grid as submitit jobs (local or SLURM)",
                     sweeps.sweep_parser, sweeps.run_sweep),
    "gather": Command("gather a sweep's points into one table, a summary and a figure",
                      sweeps.gather_parser, sweeps.run_gather),
    "report": Command("write docs/results.md and the README's headline table and reading from the main job",
                      jobs.report_parser, jobs.run_report),
}
__all__ = ["COMMANDS", "DEBUG_ENV", "EXIT_USER_ERROR", "Command", "main", "usage"]


def usage() -> str:
    lines = ["usage: fsstools [--version] [--debug] <command> [options]", "", "commands:"]
    width = max(map(len, COMMANDS))
    lines += [f"  {name:<{width}} {command.help}" for name, command in COMMANDS.items()]
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
    if name not in COMMANDS:
        print(f"fsstools: error: unknown command {name!r}{did_you_mean(name, COMMANDS)}\n\n"
              f"{usage()}", file=sys.stderr)
        return EXIT_USER_ERROR
    with warnings.catch_warnings():  # restores the warning printer when the command ends

        def one_line(message, category, filename, lineno, file=None, line=None) -> None:
            print(f"fsstools {name}: warning: {message}", file=sys.stderr)

        warnings.showwarning = one_line
        try:
            command = COMMANDS[name]
            return int(command.run(command.parser().parse_args(rest)) or 0)
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
