"""fsstools: few-shot semantic segmentation with transductive inference (RePRI).

``fsstools.segment(supports=[(image, mask), ...], queries=[...], checkpoint=...)`` segments
your own images (see :mod:`fsstools.own_images.segmentation`); it is imported on first use, so
``import fsstools`` stays light (no torch).
"""

import importlib

__version__ = "0.1.0"

_LAZY = {"segment": "fsstools.own_images.segmentation"}
"""Attributes loaded from a heavier module when first asked for."""


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fsstools' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
