"""Errors a user can fix, told apart from bugs.

Every error fsstools raises about a user's input (a config, a path, a data file, a name, a
value) is a :class:`UserError` that names the thing, the value and the fix. The command
line prints those as one ``error:`` paragraph with exit status 2 (``--debug`` adds the
traceback); anything else is a bug and keeps its traceback. Each kind also subclasses the
built-in exception it refines, so ``except ValueError`` or ``except FileNotFoundError``
still catch them.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

_CLOSE_MATCH = 0.6
"""difflib similarity above which a known name is offered as "did you mean"."""


class UserError(Exception):
    """Base of the errors a user can fix."""


class ConfigError(UserError, ValueError):
    """A config file, override or parameter that does not fit its schema.

    Args:
        message: what is wrong, with the value and the fix.
        key: the dotted config key at fault, when there is one; :func:`fsstools.config.load`
            uses it to say whether the value came from the file or from an override.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class DataError(UserError, ValueError):
    """A data file (image, mask, list, episode file, checkpoint) that cannot be used."""


class MissingError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class ConflictError(UserError, RuntimeError):
    """What is on disk conflicts with the request (an interrupted run, a results folder
    holding another configuration); the message says how to go on."""


def did_you_mean(value: object, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the known name closest to ``value``, else ``""``.

    Example:
        >>> did_you_mean("RePRI", ["repri", "ce"])
        " (did you mean 'repri'?)"
    """
    if not isinstance(value, str):
        return ""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    if value.lower() in lowered:
        return f" (did you mean {lowered[value.lower()]!r}?)"
    close = difflib.get_close_matches(value, choices, n=1, cutoff=_CLOSE_MATCH)
    return f" (did you mean {close[0]!r}?)" if close else ""
