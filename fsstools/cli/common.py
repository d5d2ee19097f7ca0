"""What every command shares: the parser style, option types and common options."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path

from fsstools import config as config_lib
from fsstools.errors import ConfigError

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


def new_parser(name: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=f"fsstools {name}", description=description, formatter_class=_Formatter,
        epilog=f"{DEBUG_FLAG} (or {DEBUG_ENV}=1) shows the traceback of an error.",
    )


def at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        try:
            config_lib.check_at_least("", value, low)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return value

    parse.__name__ = f"integer >= {low}"  # argparse names the type in its messages
    return parse


def add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config keys (repeatable; values are YAML, e.g. shots=[1,5])")


def add_force(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="rebuild cached results instead of "
                   "reusing them")


def add_accept_edited(p: argparse.ArgumentParser) -> None:
    p.add_argument("--accept-edited", action="store_true", help="use episode files edited by "
                   "hand (their new hash is recorded and a warning says so)")


def yaml_path(path: Path) -> str:
    """A path as a YAML value, quoted where YAML would misread it (``:``, ``#``, spaces)."""
    return str(path) if _PLAIN_PATH.fullmatch(str(path)) else json.dumps(str(path))
