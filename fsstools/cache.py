"""Everything fsstools puts on disk: atomic writes, content hashes, keys of cached stages,
announced reuse, and locks.

A write goes to a temporary file in the target folder and is renamed into place, so an
interrupted run never leaves a half-written checkpoint, feature cache or result. Files and
folders get the permissions any other tool would give them under the process umask
(0644 / 0755 by default), not the private 0600 / 0700 of temporary files.

A cached result (generated data, class index, episode list, base-model run, features,
scores) is stored under a key computed from everything it is made from:

- the stage's settings (a config or plain data),
- a fingerprint of the input files it reads (:func:`fingerprint_files`: relative path, size,
  mtime and inode of every file, so regenerating or editing data under the same path gives
  another key),
- the keys of the upstream artifacts it reads,
- the code version of the stage (:func:`code_version`): a hash of the source of every
  fsstools module the stage's module imports, directly or not, with docstrings and comments
  left out. Adding an import to a stage extends its version by itself; nothing to bump.

Example:
    >>> key = cache_key(stage="demo", settings={"size": 128}, code=code_version("fsstools.metrics"))
    >>> len(key)
    16
"""

from __future__ import annotations

import ast
import contextlib
import datetime
import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from fsstools import paths

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent builds are then unguarded
    fcntl = None

PACKAGE = "fsstools"
DISPLAY_ONLY = ("fsstools.progress",)
"""Modules that only show work happening (progress bars): no stage's result depends on
them, so they are left out of every code version and an edit there rebuilds nothing."""
_PACKAGE_DIR = Path(__file__).resolve().parent
KEY_LENGTH = 16


def cache_key(**parts: Any) -> str:
    """Hash of the canonical JSON of ``parts`` (paths and tuples become strings and lists)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:KEY_LENGTH]


# ----------------------------------------------------------------------------- input files


def fingerprint_files(root: str | Path, rel_paths: Iterable[str]) -> str:
    """Hash of (relative path, size, mtime_ns, inode) of each file under ``root``.

    Cheap (one ``stat`` per file), and changes when a file is rewritten, replaced or removed
    (a missing file counts as such). ``root`` itself is part of it.
    """
    root = paths.resolve(root)
    h = hashlib.sha256(str(root).encode())
    for rel in rel_paths:
        try:
            st = os.stat(root / rel)
            h.update(f"\n{rel} {st.st_size} {st.st_mtime_ns} {st.st_ino}".encode())
        except FileNotFoundError:
            h.update(f"\n{rel} missing".encode())
    return h.hexdigest()[:KEY_LENGTH]


def fingerprint_pairs(root: str | Path, pairs: Iterable[tuple[str, str]]) -> str:
    """:func:`fingerprint_files` of the images and masks of (image, mask) pairs."""
    return fingerprint_files(root, (p for pair in pairs for p in pair))


def fingerprint_file(path: str | Path | None) -> str | None:
    """Fingerprint of one optional file (None stays None)."""
    if path is None:
        return None
    path = paths.resolve(path)
    return fingerprint_files(path.parent, [path.name])


# ----------------------------------------------------------------------------- writes


def _umask() -> int:
    # os.umask only reads by setting; restore at once. /proc gives it without the race.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a new regular file under the current umask (0644 for umask 022)."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """Mode of a new folder under the current umask (0755 for umask 022)."""
    return 0o777 & ~_umask()


def atomic_write(path: Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def atomic_torch_save(obj: Any, path: Path) -> Path:
    import torch

    return atomic_write(path, lambda p: torch.save(obj, p))


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; rename it to ``final`` when the block ends.

    On an exception the temporary folder is removed (and the parent folder, if this call
    made it and nothing else is in it). If ``final`` appeared meanwhile
    (another process finished first), its copy is kept and ours dropped.
    """
    final = Path(final)
    parent_existed = final.parent.is_dir()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, dir_mode())
        if final.exists():
            shutil.rmtree(tmp)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if not parent_existed:  # leave no empty folder; rmdir keeps one another process filled
            with contextlib.suppress(OSError):
                final.parent.rmdir()
        raise


def file_hash(path: str | Path, length: int = 12) -> str:
    """sha256 of a file's bytes, truncated."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]


def text_hash(text: str, length: int = 12) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


# ----------------------------------------------------------------------------- code


def _module_path(name: str) -> Path | None:
    """File of an fsstools module or package, without importing it."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = _PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(name: str) -> set[str]:
    """fsstools modules named by the import statements of module ``name`` (anywhere in it:
    top level, inside functions, under TYPE_CHECKING). ``from a import b`` counts ``a.b``
    when that is a module, else ``a``."""
    path = _module_path(name)
    if path is None:
        raise ValueError(f"{name!r} is not a module of the {PACKAGE} package")
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if _module_path(a.name))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if _module_path(node.module) is None:
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if _module_path(sub) else node.module)
    found.discard(name)
    return found


@functools.cache
def modules_feeding(name: str) -> tuple[str, ...]:
    """``name`` and every fsstools module it imports, transitively, sorted.

    A package's ``__init__`` counts where a module imports from it (``from fsstools.models
    import PSPNet``), not merely because one of its submodules is imported: the package
    files re-export, they compute nothing of their own.
    """
    seen: set[str] = set()
    todo = [name]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        todo.extend(m for m in imported_modules(mod) if m not in seen and m not in DISPLAY_ONLY)
    return tuple(sorted(seen))


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


@functools.cache
def _module_digest(name: str) -> str:
    path = _module_path(name)
    tree = _strip_docstrings(ast.parse(path.read_text(), filename=str(path)))
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()


def code_version(*modules: str) -> str:
    """Version of the code behind ``modules``: a hash of the syntax trees (docstrings and
    comments left out) of every module in their import closure."""
    names = sorted({m for name in modules for m in modules_feeding(name)})
    h = hashlib.sha256()
    for name in names:
        h.update(f"{name}:{_module_digest(name)}\n".encode())
    return h.hexdigest()[:KEY_LENGTH]


# ----------------------------------------------------------------------------- reuse, locks


def made_when(path: Path) -> str:
    """Local modification time of ``path`` as 'YYYY-MM-DD HH:MM'."""
    stamp = datetime.datetime.fromtimestamp(Path(path).stat().st_mtime)
    return stamp.strftime("%Y-%m-%d %H:%M")


def announce_reuse(what: str, path: Path) -> None:
    """The one line a stage prints when it serves a cached result instead of computing it."""
    print(f"reusing {what} from {path} (made {made_when(path)}; force=True to rebuild)",
          flush=True)


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """Hold an exclusive lock named ``name`` (a file under ``paths.locks_dir()``), so that
    two processes asking for the same artifact build it once. A no-op without ``fcntl``.

    The lock file is removed on release (and its folders, when empty), so a finished or
    failed command leaves nothing behind. Removal happens while the lock is held, and a
    process that wakes up holding a file no longer at the path tries again on a fresh one:
    two processes never hold "the" lock at once.
    """
    if fcntl is None:
        yield
        return
    folder = paths.locks_dir()
    path = folder / f"{name}.lock"
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            handle = open(path, "a")  # noqa: SIM115 (closed below, after the unlock)
        except FileNotFoundError:  # the folder was removed between mkdir and open
            continue
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            current = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        handle.close()  # the holder before us removed this file: lock the new one
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
        for empty in (folder, folder.parent):  # the locks folder, then the cache folder
            with contextlib.suppress(OSError):  # not empty: in use, stop there
                empty.rmdir()
