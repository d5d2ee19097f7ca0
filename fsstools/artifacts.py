"""Atomic writes and content hashes for everything fsstools puts on disk.

A write goes to a temporary file in the target folder and is renamed into place, so an
interrupted run never leaves a half-written checkpoint, feature cache or result. Files and
folders get the permissions any other tool would give them under the process umask
(0644 / 0755 by default), not the private 0600 / 0700 of temporary files.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


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
