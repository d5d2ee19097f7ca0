"""What a generated benchmark folder says about itself: its manifest and generator version.

Readers check a folder against this module without importing the generator: the version is
the code version of :mod:`.generate` (see :func:`fsstools.cache.code_version`), computed from
the source files by name.
"""

from __future__ import annotations

import json
from pathlib import Path

from fsstools import cache
from fsstools.errors import ConflictError

MANIFEST = "synth.json"
CONTACT_SHEET = "contact_sheet.png"
GENERATOR = "fsstools.data.synth.generate"
UNFLAGGED = ("jpeg_quality",)
"""Generator settings without an ``fsstools synth`` option."""


def generator_version() -> str:
    """Code version of the generator (every module it imports); cached data made by other
    code is regenerated."""
    return cache.code_version(GENERATOR)


def read(path: Path) -> dict:
    """The manifest at ``path``, or {} when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def check_version(root: str | Path) -> None:
    """Refuse an embedded benchmark that this code would not generate.

    ``root`` is a data root; when it (or its parent, for a style folder) holds the manifest
    ``fsstools synth`` writes, the manifest's generator version must be this code's. A
    folder without a manifest is somebody's own data and passes.

    Raises:
        ConflictError: the benchmark was made by other generator code, so its images are not
            today's benchmark (the notebooks regenerate such data by themselves).
    """
    root = Path(root)
    for folder in (root, root.parent):
        manifest = read(folder / MANIFEST)
        if not manifest:
            continue
        version = manifest.get("version")
        if version == generator_version():
            return
        raise ConflictError(
            f"{folder} holds the synthetic benchmark of another generator version ({version}; "
            f"this code makes {generator_version()}), so its images are not today's "
            f"benchmark. Regenerate it: fsstools synth --out {folder}"
            f"{_flags(manifest.get('config', {}))}"
        )


def _flags(settings: dict) -> str:
    """``fsstools synth`` options that reproduce ``settings`` (a manifest's config)."""
    flags = ""
    for key, value in settings.items():
        if key not in UNFLAGGED:
            words = value if isinstance(value, list | tuple) else [value]
            flags += f" --{key.replace('_', '-')} {' '.join(map(str, words))}"
    return flags
