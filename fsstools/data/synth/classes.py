"""Classes of the synthetic benchmark: a shape family combined with a texture family.

Class ids follow a Latin-square assignment: class ``5 f + j + 1`` (fold ``f``, slot ``j``)
has shape ``j`` and texture ``(j + f) % 4``. Every shape therefore appears with all four
textures and every texture with all five shapes, so neither cue alone names a class; and
each fold's five novel classes cover all five shapes.
"""

from __future__ import annotations

SHAPES = ("ellipse", "rectangle", "triangle", "star", "cross")
TEXTURES = ("stripes", "checker", "dots", "camo")
N_CLASSES = len(SHAPES) * len(TEXTURES)
CLASSES_PER_FOLD = 5


def class_parts(class_id: int) -> tuple[int, int]:
    """(shape index, texture index) of class ``class_id`` in 1..20 (Latin-square rule)."""
    if not 1 <= class_id <= N_CLASSES:
        raise ValueError(f"class id {class_id} outside 1..{N_CLASSES}")
    fold, slot = divmod(class_id - 1, CLASSES_PER_FOLD)
    return slot, (slot + fold) % len(TEXTURES)


def class_names() -> list[str]:
    """Names "shape-texture" of classes 1..20 (index i -> class id i+1)."""
    names = []
    for c in range(1, N_CLASSES + 1):
        s, t = class_parts(c)
        names.append(f"{SHAPES[s]}-{TEXTURES[t]}")
    return names
