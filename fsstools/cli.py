"""``fsstools`` command line: one subcommand per stage, each delegating to its module's ``cli``."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "synth": ("fsstools.data.synthetic", "generate the embedded synthetic benchmark"),
    "coco-masks": ("fsstools.data.coco", "write per-image class-id masks for COCO 2014"),
    "episodes": ("fsstools.data.episodes", "sample and save an episode list"),
    "train": ("fsstools.train", "base-train PSPNet with cross-entropy on base classes"),
    "extract": ("fsstools.features", "extract and cache features for an episode list"),
    "evaluate": ("fsstools.evaluate", "run inference methods on episodes and score them"),
    "reproduce": ("fsstools.reproduce", "run all notebooks with papermill (the main job)"),
}


def usage() -> str:
    lines = ["usage: fsstools <command> [options]", "", "commands:"]
    lines += [f"  {name:<11} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `fsstools <command> --help` for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"fsstools: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.cli(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
