"""Errors a user can fix, told apart from bugs.

Every error fsstools raises about a user's input (a config, a path, a data file, a name, a
value) is a :class:`UserError` that names the thing, the value and the fix. The command
line prints those as one ``error:`` paragraph with exit status 2; anything else is a bug
and keeps its traceback. Each kind also subclasses the built-in exception it refines, so
``except ValueError`` or ``except FileNotFoundError`` still catch them.
"""

from __future__ import annotations


class UserError(Exception):
    """Base of the errors a user can fix."""


class ConfigError(UserError, ValueError):
    """A config file, override or parameter that does not fit its schema."""


class DataError(UserError, ValueError):
    """A data file (image, mask, list, episode file, checkpoint) that cannot be used."""


class MissingError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist."""
