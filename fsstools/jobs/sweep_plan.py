"""A sweep's points: the grid expanded, every point checked, and the job that runs one.

``--grid key=[v1, v2]`` options expand into points (the product of their values), each
with a folder named by its values. Every point is checked before anything is submitted:
against the notebook's declared parameters (types, then the values' ranges, see
:func:`fsstools.studies.profiles.check_values`) or against the evaluation config's schema.
:func:`run_point` is what a submitit job runs for one point (see :mod:`fsstools.jobs.sweep`).

Example:
    >>> grid = parse_grid(["fold=[0,", "1]", "shots=[[1],[5]]"])
    >>> [p.name for p in expand(grid, Path("/sweeps/demo"))]
    ['fold-0_shots-1', 'fold-0_shots-5', 'fold-1_shots-1', 'fold-1_shots-5']
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from fsstools import config as config_lib
from fsstools import paths
from fsstools.cache import atomic_write_text
from fsstools.errors import ConfigError, MissingError, did_you_mean
from fsstools.studies.parameters import Declared, Parameters, fits, notebook_declarations

SWEEP_NAME = "sweep.json"
"""The sweep's record: target, fixed values, grid, and each point's job and state."""
POINT_NAME = "point.json"
"""A point's record, written by its job when it ends: values, parameters, state, error."""
LOG_NAME = "log.txt"
"""What a point's job printed (cells' progress and output, training, evaluation)."""
GRID_FLAG, SET_FLAG = "--grid", "--set"
OUT_KEYS = {"notebook": "output_dir", "eval": "out_dir"}
"""The key each kind of point gets its folder through (the sweep sets it)."""
SLUG_LENGTH = 60
HASH_LENGTH = 6
_ITEM_START = re.compile(r"[A-Za-z_][\w.]*=")
_UNSAFE = re.compile(r"[^\w.+-]")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Target:
    """What every point runs: a notebook or an evaluation config (absolute path), with the
    fixed values (``--set``) under the grid's."""

    kind: str
    path: Path
    fixed: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict:
        return {"kind": self.kind, "path": str(self.path), "fixed": self.fixed}


@dataclass(frozen=True)
class Point:
    """One point of the grid: its values and its folder."""

    name: str
    values: dict[str, Any]
    folder: Path

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={json.dumps(v)}" for k, v in self.values.items())

    def parameters(self, target: Target) -> dict[str, Any]:
        """The fixed values, each ``{key}`` of a grid key in their text replaced by this
        point's value (``fold{fold}.yaml``), then the point's values."""

        def fill(value: Any) -> Any:
            if isinstance(value, list):
                return [fill(v) for v in value]
            if not isinstance(value, str):
                return value
            return _PLACEHOLDER.sub(lambda m: str(self.values[m[1]]) if isinstance(
                self.values.get(m[1]), int | float | str) else m[0], value)

        return {**{k: fill(v) for k, v in target.fixed.items()}, **self.values}


# ----------------------------------------------------------------------------- the grid


def make_target(notebook: Path | None, eval_config: Path | None, sets: Sequence[str]) -> Target:
    """The target of ``fsstools sweep``: a notebook (a file, or a prefix of the numbered
    notebooks such as "03") or an evaluation config, with the ``--set`` values."""
    fixed = dict(config_lib.parse_override(item, SET_FLAG) for item in sets)
    if eval_config is not None:
        if not Path(eval_config).is_file():
            raise MissingError(f"--eval {eval_config} does not exist; e.g. configs/synth/eval.yaml")
        return Target("eval", paths.resolve(eval_config), fixed)
    path = Path(notebook)
    if not path.is_file():
        if path.suffix == ".ipynb" or len(path.parts) > 1:
            raise MissingError(f"notebook {path} does not exist; check the path")
        from fsstools.jobs.reproduce import list_notebooks

        books = list_notebooks([str(path)])
        if len(books) > 1:
            raise ConfigError(f"notebook {path} matches {', '.join(b.stem for b in books)}; "
                              "give one of them")
        path = books[0]
    return Target("notebook", paths.resolve(path), fixed)


def parse_grid(words: Sequence[str]) -> dict[str, list]:
    """``["fold=[0,", "1]", "shots=[[1],[5]]"]`` -> ``{"fold": [0, 1], "shots": [[1], [5]]}``.

    A word that does not start with ``key=`` continues the one before while its brackets
    are open, so an unquoted ``--grid fold=[0, 1]`` reads as written. Values are YAML lists, at least one value each.
    """
    items: list[str] = []
    for word in words:
        if items and not _ITEM_START.match(word) and _open(items[-1]):
            items[-1] += f" {word}"
        elif _ITEM_START.match(word):
            items.append(word)
        else:
            raise ConfigError(f"{GRID_FLAG} {word!r} is not key=[v1, v2]; a notebook goes "
                              f"before the options: fsstools sweep NOTEBOOK {GRID_FLAG} ...")
    grid: dict[str, list] = {}
    for item in items:
        key, values = config_lib.parse_override(item, GRID_FLAG)
        if key in grid:
            raise ConfigError(f"{GRID_FLAG} {key} is given twice; list all its values in one "
                              f"{GRID_FLAG} {key}=[...]", key=key)
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{GRID_FLAG} {item!r}: the values must be a YAML list, e.g. "
                              f"{GRID_FLAG} {key}=[{json.dumps(values)}, ...]", key=key)
        encoded = [json.dumps(v, sort_keys=True) for v in values]
        if len(set(encoded)) < len(encoded):
            raise ConfigError(f"{GRID_FLAG} {item!r} repeats a value", key=key)
        grid[key] = values
    if not grid:
        raise ConfigError(f"nothing to sweep: give {GRID_FLAG} key=[v1, v2]")
    return grid


def _open(text: str) -> bool:
    """Whether ``text`` has a bracket or brace still open (a value the shell split)."""
    return text.count("[") + text.count("{") > text.count("]") + text.count("}")


def _slug(values: dict[str, Any]) -> str:
    def compact(v: Any) -> str:
        if isinstance(v, list):
            return "+".join(map(compact, v)) or "none"
        if isinstance(v, dict):
            return config_lib.config_hash(v, HASH_LENGTH)
        return str(v).lower() if isinstance(v, bool) else str(v)

    slug = _UNSAFE.sub("", "_".join(f"{k}-{compact(v)}" for k, v in values.items()))
    if len(slug) > SLUG_LENGTH:
        slug = f"{slug[:SLUG_LENGTH]}-{config_lib.config_hash(values, HASH_LENGTH)}"
    return slug


def expand(grid: dict[str, list], folder: Path) -> list[Point]:
    """The points of ``grid`` (the product of its values, in order), each with a folder of
    ``folder`` named by its values."""
    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    names = [_slug(c) for c in combos]
    if len(set(names)) < len(names):  # values that differ only in characters left out
        names = [f"{n}-{config_lib.config_hash(c, HASH_LENGTH)}" for n, c in zip(names, combos,
                                                                                  strict=True)]
    return [Point(n, c, folder / n) for n, c in zip(names, combos, strict=True)]


# ----------------------------------------------------------------------------- checks


def _check_notebook(target: Target, grid: dict[str, list], points: list[Point]) -> None:
    from fsstools.studies import profiles  # imports torch: not in the jobs, which only run points

    try:
        declared = notebook_declarations(target.path)
    except ValueError as err:
        raise ConfigError(f"notebook {target.path}: {err}") from None
    given = [(SET_FLAG, k, [v]) for k, v in target.fixed.items()]
    for flag, key, values in [*given, *((GRID_FLAG, k, v) for k, v in grid.items())]:
        _check_declared(target.path.stem, declared, flag, key, values)
    defaults = {name: d.default for name, d in declared.items()}
    for point in points:
        params = Parameters(target.path.stem, {**defaults, **point.parameters(target)}, declared)
        try:
            profiles.check_values(params)
        except ConfigError as err:
            raise ConfigError(f"point {point.label}: {err}", key=err.key) from None


def _check_declared(stem: str, declared: dict[str, Declared], flag: str, key: str,
                    values: list) -> None:
    if key not in declared:
        known = [n for n in declared if n != OUT_KEYS["notebook"]]
        raise ConfigError(f"{flag} {key}: notebook {stem} has no parameter {key!r}"
                          f"{did_you_mean(key, known)}; its parameters: {', '.join(known)}",
                          key=key)
    d = declared[key]
    for value in values:
        if not fits(value, d.annotation):
            hint = ""
            if flag == GRID_FLAG and d.annotation.startswith("list"):
                hint = (f"; each value of {GRID_FLAG} is one point's value, so a list "
                        f"parameter takes a list of lists, e.g. {GRID_FLAG} {key}=[[1],[5]]")
            raise ConfigError(f"{flag} {key}: {json.dumps(value)} is not {d.annotation} "
                              f"({d.help}){hint}", key=key)


def _items(values: dict) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in values.items()]


def is_generalized(target: Target) -> bool:
    """Whether an evaluation target runs the generalized protocol (``protocol:
    generalized`` in its file or its fixed values)."""
    from fsstools.evaluation.generalized_config import is_generalized as selects

    return target.kind == "eval" and selects(target.path, _items(target.fixed))


def point_eval_config(target: Target, point: Point | None = None) -> Any:
    """The evaluation config of ``point`` (checked; an EvalConfig, or a GFSSEvalConfig
    under the generalized protocol): the config file, the fixed values, the point's values
    and its folder as ``out_dir``; without a point, the first two."""
    from fsstools.evaluation.generalized_config import GFSSEvalConfig
    from fsstools.evaluation.pipeline import EvalConfig

    schema = GFSSEvalConfig if is_generalized(target) else EvalConfig
    if point is None:
        return config_lib.load(schema, target.path, _items(target.fixed), SET_FLAG)
    place = {OUT_KEYS["eval"]: str(point.folder)}
    overrides = _items({**point.parameters(target), **place})
    try:
        return config_lib.load(schema, target.path, overrides, GRID_FLAG)
    except ConfigError as err:
        raise ConfigError(f"point {point.label}: {err}", key=err.key) from None


def _check_eval(target: Target, points: list[Point]) -> None:
    from fsstools.evaluation.pipeline import checked_train_config

    point_eval_config(target)
    for point in points:
        try:
            cfg = point_eval_config(target, point)
            checked_train_config(cfg.base_model_config() if is_generalized(target) else cfg)
        except ConfigError as err:
            hint = ""
            if err.key == "train_config":
                hint = ("; in a sweep, a --set value names a grid key in braces to follow it: "
                        "--set train_config=configs/synth/fold{fold}.yaml")
            raise ConfigError(f"point {point.label}: {err}{hint}", key=err.key) from None


def plan(target: Target, grid: dict[str, list], folder: Path) -> list[Point]:
    """The points of the sweep, every one checked; nothing is written.

    Raises:
        ConfigError: a key the target does not take, a value of the wrong type or out of
            range, a key given both fixed and swept, or the output folder's key.
    """
    for flag, keys in ((SET_FLAG, target.fixed), (GRID_FLAG, grid)):
        if OUT_KEYS[target.kind] in keys:
            raise ConfigError(f"{flag} {OUT_KEYS[target.kind]}: each point writes into its own "
                              f"folder of {folder}", key=OUT_KEYS[target.kind])
    both = sorted(set(grid) & set(target.fixed))
    if both:
        raise ConfigError(f"{', '.join(both)}: given by both {SET_FLAG} and {GRID_FLAG}; keep "
                          "one", key=both[0])
    points = expand(grid, folder)
    if target.kind == "notebook":
        _check_notebook(target, grid, points)
    else:
        _check_eval(target, points)
    return points


# ----------------------------------------------------------------------------- one job


class _Tee:
    """A text stream that also writes everything to a log file."""

    def __init__(self, stream: TextIO, log: TextIO) -> None:
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.log.write(text)
        self.log.flush()
        return self.stream.write(text)

    def flush(self) -> None:
        self.log.flush()
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextlib.contextmanager
def _logged(path: Path) -> Iterator[None]:
    with open(path, "a") as log, contextlib.redirect_stdout(_Tee(sys.stdout, log)), \
            contextlib.redirect_stderr(_Tee(sys.stderr, log)):
        yield


def _cell_traceback(executed: Path) -> str:
    """The traceback of the failed cell of an executed notebook ("" if none is stored)."""
    import nbformat

    try:
        nb = nbformat.read(executed, as_version=4)
    except (OSError, ValueError):
        return ""
    return "\n".join(line for cell in nb.cells if cell.cell_type == "code"
                     for out in cell.get("outputs", []) if out.get("output_type") == "error"
                     for line in out.get("traceback", []))


def _run(target: Target, point: Point) -> str | None:
    """Run ``point``; returns None, or what failed in one line."""
    params = point.parameters(target)
    if target.kind == "eval":
        from fsstools.evaluation.generalized import run_generalized
        from fsstools.evaluation.pipeline import run_evaluation

        run = run_generalized if is_generalized(target) else run_evaluation
        run(point_eval_config(target, point))
        return None
    from fsstools.jobs.reproduce import execute

    if OUT_KEYS["notebook"] in notebook_declarations(target.path):
        params[OUT_KEYS["notebook"]] = str(point.folder)
    run = execute(target.path, point.folder, params)
    if run.error is not None:
        print(_cell_traceback(point.folder / target.path.name), file=sys.stderr)
    return run.error


def run_point(target: Target, point: Point, outputs: str) -> dict:
    """What one job runs: ``point`` of ``target``, with the caches of ``outputs``; its
    printed output goes to the job's log and to ``<point>/log.txt``. Writes and returns
    the point's record (``point.json``); a failure is recorded there, not raised."""
    os.environ[paths.OUTPUTS_ENV] = outputs  # the driver's caches, wherever the job runs
    point.folder.mkdir(parents=True, exist_ok=True)
    record = {"name": point.name, "values": point.values,
              "parameters": point.parameters(target), "started": time.time()}
    with _logged(point.folder / LOG_NAME):
        try:
            error = _run(target, point)
        except Exception as exc:  # recorded for the sweep's table; the other points go on
            traceback.print_exc()
            error = f"{type(exc).__name__}: {exc}"
        print(f"point {point.label}: " + ("done" if error is None else f"FAILED, {error}"),
              file=sys.stderr)
    record.update(state="done" if error is None else "failed", error=error,
                  finished=time.time(), seconds=round(time.time() - record["started"], 1))
    atomic_write_text(point.folder / POINT_NAME, json.dumps(record, indent=2, default=str) + "\n")
    return record
