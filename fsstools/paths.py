"""Where fsstools reads and writes: the checkout, the outputs folder and the caches.

Every path returned here is absolute, and nothing in fsstools changes the working directory.
A relative path given by a user (``--out``, ``output_dir``, ``data.root``) means relative to
where the command runs, as with any other tool: :func:`resolve`. Library defaults that live
in the checkout (configs, the embedded benchmark's data, outputs) are anchored at the repo.

``FSSTOOLS_OUTPUTS`` moves the outputs folder (runs, evaluation results, caches); it is read
at each call, so a test or a notebook can set it at any time.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
"""The checkout holding this package (``configs/``, ``notebooks/``, ``data/``)."""

OUTPUTS_ENV = "FSSTOOLS_OUTPUTS"


def resolve(path: str | Path) -> Path:
    """``path`` made absolute against the current working directory (``~`` expanded)."""
    return Path(path).expanduser().resolve()


def configs_dir() -> Path:
    """The shipped configs; an error names the fix when the package runs outside a checkout."""
    folder = REPO / "configs"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} does not exist: fsstools runs its recipes from a checkout of the "
            "repository; clone it and install with `pip install -e .`"
        )
    return folder


def notebooks_dir() -> Path:
    return REPO / "notebooks"


def data_dir() -> Path:
    """Where the embedded benchmark is generated (``<repo>/data``)."""
    return REPO / "data"


def lists_dir() -> Path:
    """Image lists shipped with the checkout (``<repo>/data/lists``, e.g. ``pascal/train.txt``)."""
    return REPO / "data" / "lists"


def outputs_dir() -> Path:
    """``$FSSTOOLS_OUTPUTS`` (relative to the working directory) or ``<repo>/outputs``."""
    env = os.environ.get(OUTPUTS_ENV)
    return resolve(env) if env else REPO / "outputs"


def cache_dir(stage: str) -> Path:
    """Cache folder of one stage, e.g. ``cache_dir("features")``."""
    return outputs_dir() / "cache" / stage


def runs_dir() -> Path:
    """Parent of base-model training runs."""
    return outputs_dir() / "runs"


def locks_dir() -> Path:
    """Lock files of runs and generated data (kept out of the folders they guard)."""
    return outputs_dir() / "cache" / "locks"
