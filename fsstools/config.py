"""Layered configuration: dataclass defaults, then a YAML file, then ``key=value`` overrides.

Every config is a frozen dataclass. Loading checks each value against the field's declared
type and coerces what YAML reads loosely (``1e-3`` is a string to PyYAML: it becomes a
float; a single value where a list is expected becomes a one-item list). Unknown keys, values
of the wrong type and values a dataclass rejects raise :class:`ConfigError` naming the dotted
key, the value, what is expected, and whether it came from the file or from an override, so a
typo never silently falls back to a default.

Example:
    >>> from fsstools.evaluation.pipeline import EvalConfig  # doctest: +SKIP
    >>> load(EvalConfig, "configs/synth/eval.yaml", ["shots=[1]", "fold=1"])  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from fsstools.errors import ConfigError, MissingError, did_you_mean

__all__ = ["ConfigError", "apply_overrides", "config_hash", "from_dict", "load",
           "parse_override", "read_yaml", "save_yaml", "to_dict"]

T = TypeVar("T")
OVERRIDE_FLAG = "--set"
"""How overrides are named in messages unless the caller says otherwise."""

_PLURALS = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _describe(tp: Any) -> str:
    """What a value of type ``tp`` looks like, for messages ("an integer", "a list of ...")."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any value"
    if _is_dataclass_type(tp):
        return f"a mapping of {tp.__name__} keys"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is list:
        item = args[0] if args else Any
        return f"a list of {_PLURALS.get(item, _describe(item) + ' items')}"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_PLURALS.get(args[0], _describe(args[0]) + ' items')}"
        return f"a list of {len(args)} items ({', '.join(_describe(a) for a in args)})"
    if origin in (dict, Mapping) or tp is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _bad(tp: Any, value: Any, where: str, hint: str = "") -> ConfigError:
    return ConfigError(f"{where} must be {_describe(tp)}, got {value!r}{hint}", key=where)


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a number or a string that reads as one (PyYAML reads
    ``1e-3`` as a string), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _convert_scalar(tp: Any, value: Any, where: str, exact: bool = False) -> Any:
    if tp is float:
        number = (float(value) if isinstance(value, int | float) and not isinstance(value, bool)
                  else None) if exact else _number(value)
        if number is None:
            raise _bad(tp, value, where)
        return number
    if tp is int:
        if exact and not (isinstance(value, int) and not isinstance(value, bool)):
            raise _bad(tp, value, where)
        number = _number(value)
        if number is None or not number.is_integer():
            raise _bad(tp, value, where)
        return int(number)
    if tp is bool:
        if not isinstance(value, bool):
            raise _bad(tp, value, where)
        return value
    if tp is str:
        if not isinstance(value, str):
            scalar = isinstance(value, (int, float, bool))
            raise _bad(tp, value, where, f" (quote it: '{value}')" if scalar else "")
        return value
    return value


def convert(tp: Any, value: Any, where: str, exact: bool = False) -> Any:
    """``value`` checked against (and coerced to) the declared type ``tp``: the one type
    check of configs, ``--set`` values and notebook parameters.

    Args:
        where: the key named in the error.
        exact: take no number from a string and no int from a float (a notebook uses its
            parameters as given, so they must already be of their type; an int still fits
            a float).

    Raises:
        ConfigError: naming ``where``, the type expected and the value given.
    """
    return _convert(tp, value, where, exact)


def _convert(tp: Any, value: Any, where: str, exact: bool = False) -> Any:
    if tp is Any:
        return value
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise _bad(tp, value, where)
        return from_dict(tp, dict(value), where)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1 and typing.get_origin(options[0]) is not typing.Literal and (
            _is_dataclass_type(options[0]) or typing.get_origin(options[0]) is not None
        ):
            return _convert(options[0], value, where, exact)  # its message names the item
        for arg in options:
            try:
                return _convert(arg, value, where, exact)
            except ConfigError:
                continue
        raise _bad(tp, value, where)
    if origin is tuple:
        if isinstance(value, Mapping):
            raise _bad(tp, value, where)
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        variadic = len(args) == 2 and args[1] is Ellipsis
        kinds = [args[0]] * len(items) if variadic else list(args)
        if len(kinds) != len(items):
            raise _bad(tp, value, where)
        try:
            return tuple(_convert(k, v, f"{where}[{i}]", exact) for i, (k, v) in
                         enumerate(zip(kinds, items, strict=True)))
        except ConfigError as err:
            if isinstance(value, (list, tuple)):
                raise  # names the item at fault
            hint = " (write a YAML list, e.g. [1, 5])" if isinstance(value, str) else ""
            raise _bad(tp, value, where, hint) from err
    if origin is list:
        if not isinstance(value, list) and (exact or not isinstance(value, tuple)):
            raise _bad(tp, value, where)
        (item,) = args or (Any,)
        return [_convert(item, v, f"{where}[{i}]", exact) for i, v in enumerate(value)]
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(
                f"{where} must be {_describe(tp)}, got {value!r}"
                f"{did_you_mean(value, [a for a in args if isinstance(a, str)])}",
                key=where,
            )
        return value
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise _bad(tp, value, where)
        key_type, value_type = args if args else (Any, Any)
        return {_convert(key_type, k, where, exact): _convert(value_type, v, f"{where}.{k}", exact)
                for k, v in value.items()}
    return _convert_scalar(tp, value, where, exact)


def check_at_least(name: str, value: Any, low: int = 1, what: str = "",
                   key: str | None = None) -> None:
    """The one "at least" check of configs, notebook parameters and command options.

    Args:
        name: what the message names first, e.g. "shots" or "parameter n_episodes".
        value: a number, or a list of numbers that must all be >= ``low``.
        what: what the value counts, shown after the name.
        key: the config key or parameter at fault (default ``name``).

    Raises:
        ConfigError: ``<name> (<what>) must be >= <low>, got <value>``.
    """
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if any(v < low for v in values):
        shown = f"{name} ({what})" if what else name
        raise ConfigError(f"{shown} must be >= {low}, got {value}".strip(),
                          key=key or name or None)


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build the dataclass ``cls`` from a nested mapping, each value checked and coerced to
    its declared type.

    Raises:
        ConfigError: an unknown key (with the closest known one and the allowed names), a
            value of the wrong type, or a value ``cls`` itself rejects; ``key`` is the
            dotted key at fault.
    """
    prefix = f"{where}." if where else ""
    types_ = _field_types(cls)
    unknown = sorted(str(k) for k in data if k not in types_)
    if unknown:
        names = [prefix + k for k in unknown]
        raise ConfigError(
            f"unknown key{'s' if len(names) > 1 else ''} {', '.join(names)} for {cls.__name__}"
            f"{did_you_mean(names[0], [prefix + t for t in types_])}; "
            f"allowed: {', '.join(sorted(types_))}",
            key=names[0],
        )
    kwargs = {name: _convert(types_[name], value, prefix + name) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as err:
        if err.key:  # a check that names its key: keep its message, place the key
            raise ConfigError(str(err), key=f"{prefix}{err.key}") from None
        raise _own_check_error(err, cls, types_, where) from None
    except (TypeError, ValueError) as err:  # a dataclass's own checks (__post_init__)
        raise _own_check_error(err, cls, types_, where) from None


def _own_check_error(err: Exception, cls: type, types_: Mapping[str, Any],
                     where: str) -> ConfigError:
    """A dataclass's own check failing, said from where it was built; the field its message
    names, if just one, lets load() say where the value came from."""
    prefix = f"{where}." if where else ""
    named = [f for f in types_ if re.search(rf"\b{re.escape(f)}\b", str(err))]
    key = prefix + named[0] if len(named) == 1 else (where or None)
    return ConfigError(f"{where or cls.__name__}: {err}", key=key)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain nested dict (tuples become lists) suitable for YAML and JSON."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Mapping):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(cfg)


def parse_override(item: str, flag: str = OVERRIDE_FLAG) -> tuple[str, Any]:
    """``"a.b=value"`` -> ``("a.b", value)`` with the value read as YAML.

    Raises:
        ConfigError: no ``=``, an empty key, or a value that is not valid YAML.
    """
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(
            f"{flag} {item!r} is not of the form key=value (e.g. {flag} shots=[1,5])"
        )
    try:
        return key, yaml.safe_load(raw)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise ConfigError(
            f"{flag} {item!r}: the value {raw!r} is not valid YAML ({problem}); write lists as "
            "[a, b] and quote text holding ':' or '#'",
            key=key,
        ) from None


def apply_overrides(
    data: Mapping[str, Any], overrides: list[str] | tuple[str, ...], flag: str = OVERRIDE_FLAG
) -> dict[str, Any]:
    """Return a copy of ``data`` with ``a.b.c=value`` overrides applied (values parsed as YAML)."""
    out = json.loads(json.dumps(data, default=str))
    for item in overrides:
        key, value = parse_override(item, flag)
        node = out
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(
                    f"{flag} {item!r}: {'.'.join(parts[: depth + 1])} is a value "
                    f"({child!r}), not a section holding {parts[depth + 1]!r}",
                    key=key,
                )
            node = child
        node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a ``base:`` key names another file (relative) merged underneath.

    Raises:
        MissingError: the file (or its base) does not exist.
        ConfigError: it is not valid YAML, or not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingError(
            f"config file {path} does not exist; check the path (configs/ holds examples)"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise ConfigError(f"config file {path}{where} is not valid YAML ({problem}); "
                          "fix that line") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping of keys, got "
                          f"{type(data).__name__}")
    base = data.pop("base", None)
    if base is not None:
        data = _merge(read_yaml(path.parent / base), data)
    return data


def _has_key(data: Mapping[str, Any], key: str) -> bool:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _source(key: str | None, data: Mapping[str, Any], overrides: list[tuple[str, str]],
            path: Path | None, flag: str) -> str:
    """Where the value of ``key`` came from, for a message: the last override that set it,
    else the file, else nothing (a default or a check over several keys)."""
    if key is None:
        return f" (in {path})" if path is not None else ""
    key = re.sub(r"\[\d+\]", "", key)  # shots[0] -> shots
    for item, okey in reversed(overrides):
        if okey == key or key.startswith(okey + ".") or okey.startswith(key + "."):
            return f" (from {flag} {item})"
    return f" (in {path})" if path is not None and _has_key(data, key) else ""


def load(
    cls: type[T],
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    overrides_from: str = OVERRIDE_FLAG,
) -> T:
    """Defaults of ``cls``, then the YAML file at ``path`` (if any), then ``overrides``.

    Args:
        cls: the config dataclass.
        path: YAML file (it may name a ``base:`` file merged underneath).
        overrides: ``dotted.key=value`` items, values read as YAML.
        overrides_from: how messages name the overrides (the command line's ``--set``, or
            e.g. ``train_overrides`` when they come from another config).

    Raises:
        ConfigError: see :func:`from_dict`; the message also says whether the value came
            from ``path`` or from an override.
        MissingError: ``path`` does not exist.
    """
    path = Path(path) if path is not None else None
    data = read_yaml(path) if path is not None else {}
    parsed = [(item, parse_override(item, overrides_from)[0]) for item in overrides]
    merged = apply_overrides(data, overrides, overrides_from)
    try:
        return from_dict(cls, merged)
    except ConfigError as err:
        source = _source(err.key, data, parsed, path, overrides_from)
        raise ConfigError(f"{err}{source}", key=err.key) from None


def save_yaml(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config next to the results it produced (atomically)."""
    from fsstools.cache import atomic_write_text

    return atomic_write_text(Path(path), yaml.safe_dump(to_dict(cfg), sort_keys=False))


def config_hash(cfg: Any, length: int = 12) -> str:
    """Stable short hash of a config (dataclass or plain data)."""
    data = to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
