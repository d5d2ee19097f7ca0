"""What this machine's hardware is, as the operating system describes it.

Example:
    >>> from fsstools import hardware
    >>> cache = hardware.last_level_cache()  # (bytes, CPUs sharing it), or None
"""

from __future__ import annotations

import os
from pathlib import Path

CPU_CACHES = Path("/sys/devices/system/cpu/cpu0/cache")
"""Where Linux describes the first CPU's caches (one ``index*`` folder per cache)."""


def last_level_cache(caches: Path = CPU_CACHES) -> tuple[int, int] | None:
    """Bytes of the highest-level data cache of the first CPU and how many CPUs share it,
    from ``caches`` (Linux's ``/sys/devices/system/cpu/cpu0/cache``; all of this machine's
    CPUs where the sharing is not described); None where the cache is not described."""
    best: tuple[int, int, int] | None = None
    for index in sorted(caches.glob("index*")) if caches.is_dir() else []:
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            size = _bytes((index / "size").read_text().strip())
        except (OSError, ValueError):
            continue
        if kind != "Instruction" and (best is None or level > best[0]):
            best = (level, size, _cpus(index / "shared_cpu_list"))
    return None if best is None else best[1:]


def _cpus(path: Path) -> int:
    """CPUs in a list such as ``"0-7,64-71"``; all of this machine's where unreadable."""
    try:
        ranges = [r.split("-") for r in path.read_text().strip().split(",")]
        return max(1, sum(int(r[-1]) - int(r[0]) + 1 for r in ranges))
    except (OSError, ValueError):
        return max(1, os.cpu_count() or 1)


def _bytes(text: str) -> int:
    """``"491520K"``, ``"32M"`` or ``"1024"`` as bytes."""
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    if text and text[-1].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)
