"""Notebook parameters: declared in one cell, checked by type, recorded next to the results.

A numbered notebook declares its parameters in the cell tagged ``parameters``, one annotated
literal assignment per line with its help as a trailing comment::

    shots: list[int] = [1, 5]  # shot counts to evaluate

papermill reads exactly that form for ``papermill --help-notebook`` (type and help), and
injects a run's values as a cell of plain assignments headed ``# Parameters`` right after
it. The first code cell after the parameters calls :func:`check`, which

- finds the declared cell and any injected one in IPython's history of executed cells
  (``In``), or, without it, in the notebook file of the checkout;
- rejects a parameter the notebook does not declare (papermill itself only warns);
- checks every value against its declared type and names the parameter, the expected type
  and the help when one does not fit (papermill passes ``-p shots 5`` as the int 5);
- returns the values with a short hash of them, which names the default output folder so
  that the runs of a sweep never overwrite each other.

Types are the few papermill can show: ``int``, ``float``, ``str``, ``bool`` and ``list[T]``.

Example:
    >>> ns = {"In": ["", "n: int = 3  # episodes", "# Parameters\\nn = 2.5\\n"], "n": 2.5}
    >>> check("demo", ns)  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ConfigError: parameter n of notebook demo: expected int (episodes), got 2.5 (float) ...
"""

from __future__ import annotations

import ast
import io
import json
import tokenize
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsstools import config as config_lib
from fsstools import paths
from fsstools.cache import atomic_write_text
from fsstools.config import config_hash
from fsstools.errors import ConfigError

PARAMETERS_TAG = "parameters"
"""Tag of the cell that declares a notebook's parameters (papermill's convention)."""
INJECTED_HEADER = "# Parameters"
"""First line of the cell papermill injects with a run's values."""
SCALARS: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool}
HASH_LENGTH = 8
"""Hex digits of the parameters' hash in default output folder names."""
UNHASHED = ("output_dir",)
"""Parameters that say where results go, not what they are: left out of the hash."""
PATH_SUFFIXES = ("_dir", "_root", "_config", "checkpoint", "checkpoints")
"""A parameter whose name ends so holds a path (relative: to the kernel's working folder)."""
RECORD_NAME = "parameters.json"


@dataclass(frozen=True)
class Declared:
    """One declared parameter: ``name: annotation = default  # help``."""

    name: str
    annotation: str
    default: Any
    help: str


@dataclass(frozen=True)
class Parameters:
    """The checked values of one run of a notebook.

    Attributes:
        notebook: the notebook's stem, e.g. "03_shot_scaling".
        values: parameter -> value, in declaration order.
        declared: parameter -> its declaration.
        injected: the parameters a caller (papermill) set.
    """

    notebook: str
    values: dict[str, Any]
    declared: dict[str, Declared]
    injected: tuple[str, ...] = ()

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    @property
    def key(self) -> str:
        """Short hash of the values that shape the results (``output_dir`` left out)."""
        return config_hash({k: v for k, v in self.values.items() if k not in UNHASHED},
                           HASH_LENGTH)

    def resolved(self) -> dict[str, Any]:
        """The values with non-empty path parameters made absolute (against the working
        folder, where papermill was started)."""
        return {k: str(paths.resolve(v)) if is_path(k) and isinstance(v, str) and v else v
                for k, v in self.values.items()}

    def record(self, folder: str | Path) -> Path:
        """Write ``<folder>/parameters.json``: notebook, hash, resolved values, what was
        injected, and the declared types and help."""
        data = {
            "notebook": self.notebook,
            "key": self.key,
            "parameters": self.resolved(),
            "injected": list(self.injected),
            "declared": {d.name: {"type": d.annotation, "default": d.default, "help": d.help}
                         for d in self.declared.values()},
        }
        text = json.dumps(data, indent=2, default=str) + "\n"
        return atomic_write_text(paths.resolve(folder) / RECORD_NAME, text)


def is_path(name: str) -> bool:
    """Whether the parameter ``name`` holds a path (by its name, see :data:`PATH_SUFFIXES`)."""
    return name.endswith(PATH_SUFFIXES)


# ----------------------------------------------------------------------------- declarations


def parse_declarations(source: str, where: str = "the parameters cell") -> dict[str, Declared]:
    """The parameters a ``parameters`` cell declares, in order.

    Raises:
        ValueError: a statement is not ``name: type = literal``, or its type is not one of
            ``int``, ``float``, ``str``, ``bool``, ``list[...]`` (a notebook bug, not a user
            error).
    """
    tree = ast.parse(source)
    comments = _line_comments(source)
    out: dict[str, Declared] = {}
    for stmt in tree.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                and stmt.value is not None):
            raise ValueError(f"{where}, line {stmt.lineno}: write `name: type = value  # help`")
        annotation = ast.unparse(stmt.annotation)
        _type_of(stmt.annotation, where)
        try:
            default = ast.literal_eval(stmt.value)
        except ValueError:
            raise ValueError(f"{where}, line {stmt.lineno}: the default of "
                             f"{stmt.target.id} must be a literal") from None
        name = stmt.target.id
        out[name] = Declared(name, annotation, default, comments.get(stmt.end_lineno, ""))
    return out


def _line_comments(source: str) -> dict[int, str]:
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {t.start[0]: t.string.lstrip("#").strip() for t in tokens if t.type == tokenize.COMMENT}


def _type_of(node: ast.expr, where: str) -> Any:
    """The Python type an annotation names: int, float, str, bool or list[...] of them."""
    if isinstance(node, ast.Name) and node.id in SCALARS:
        return SCALARS[node.id]
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "list":
        return list[_type_of(node.slice, where)]
    raise ValueError(f"{where}: type {ast.unparse(node)} is not one of int, float, str, bool, "
                     "list[...]")


def fits(value: Any, annotation: str) -> bool:
    """Whether ``value`` is of the declared type, by the config's own type check in its
    exact form (an int fits a float; a bool fits no int; nothing is converted)."""
    tp = _type_of(ast.parse(annotation, mode="eval").body, annotation)
    try:
        config_lib.convert(tp, value, annotation, exact=True)
    except ConfigError:
        return False
    return True


def is_declaration(source: str) -> bool:
    """Whether ``source`` is a parameters cell (annotated literal assignments only)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    return bool(tree.body) and all(isinstance(s, ast.AnnAssign) for s in tree.body)


def injected_names(source: str) -> list[str]:
    """Names a papermill ``# Parameters`` cell assigns."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [t.id for s in tree.body if isinstance(s, ast.Assign) for t in s.targets
            if isinstance(t, ast.Name)]


def notebook_declarations(notebook: str | Path) -> dict[str, Declared]:
    """The declarations in the ``parameters`` cell of a notebook file, or of
    ``notebooks/<notebook>.ipynb`` given a stem."""
    import nbformat

    path = notebook if isinstance(notebook, Path) else paths.notebooks_dir() / f"{notebook}.ipynb"
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if PARAMETERS_TAG in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path} must have exactly one cell tagged {PARAMETERS_TAG!r}")
    return parse_declarations(cells[0].source, f"{path.name}: parameters cell")


def _from_history(history: list[str]) -> tuple[str | None, list[str]]:
    """The last executed declaration cell and the injected cells run after it."""
    for i in range(len(history) - 1, -1, -1):
        src = history[i]
        if not src.lstrip().startswith(INJECTED_HEADER) and is_declaration(src):
            injected = [s for s in history[i + 1:] if s.lstrip().startswith(INJECTED_HEADER)]
            return src, injected
    return None, []


# ----------------------------------------------------------------------------- checking


def check(notebook: str, namespace: Mapping[str, Any]) -> Parameters:
    """Check a notebook's parameters in its namespace (``globals()``).

    Args:
        notebook: the notebook's stem, to name it in errors and find its file when the
            namespace holds no IPython history.
        namespace: the notebook's global names: the parameters and IPython's ``In``.

    Raises:
        ConfigError: an undeclared parameter was injected, or a value is not of its
            declared type; the message names the parameter, what it expects and how to
            pass it.
    """
    history = namespace.get("In")
    source, injected = _from_history(list(history)) if isinstance(history, list) else (None, [])
    if source is not None:
        declared = parse_declarations(source)
    else:
        declared = notebook_declarations(notebook)
    set_names = [n for cell in injected for n in injected_names(cell)]
    unknown = [n for n in dict.fromkeys(set_names) if n not in declared]
    if unknown:
        raise ConfigError(
            f"notebook {notebook} has no parameter {', '.join(unknown)}; its parameters are "
            f"{', '.join(declared)} (papermill --help-notebook lists them with their types)"
        )
    values = {}
    for name, d in declared.items():
        if name not in namespace:
            raise ConfigError(f"parameter {name} of notebook {notebook} is not set; run the "
                              "parameters cell first")
        value = namespace[name]
        if not fits(value, d.annotation):
            raise ConfigError(_type_message(notebook, d, value))
        values[name] = value
    return Parameters(notebook, values, declared, tuple(dict.fromkeys(set_names)))


def _type_message(notebook: str, d: Declared, value: Any) -> str:
    help_ = f" ({d.help})" if d.help else ""
    msg = (f"parameter {d.name} of notebook {notebook}: expected {d.annotation}{help_}, got "
           f"{value!r} ({type(value).__name__})")
    if d.annotation.startswith("list") and not isinstance(value, list):
        example = json.dumps(d.default if isinstance(d.default, list) else [value])
        msg += (f"; pass a list, e.g. papermill -y '{d.name}: {example}' "
                f"or fsstools reproduce --set {d.name}={example}")
    else:
        msg += f"; e.g. {d.name} = {d.default!r}"
    return msg
