"""Geometry of the synthetic benchmark: object outlines, distractor blobs, placement, borders.

Outlines are polygons in unit coordinates (radius about 1), rasterised with PIL.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

MAX_OCCLUSION = 0.3
"""A new object may hide at most this share of an earlier object's visible pixels."""
PLACEMENT_TRIES = 10
FRAME_INSET = 0.1
"""Cut-by-the-border placement draws object centres this share of the side from the edges."""
MAX_GROW = 2.0
"""A cut object grows by at most this area factor to win back the part outside the frame."""
GROW_STEPS = 3


def shape_polygon(shape: str, rng: np.random.Generator) -> np.ndarray:
    """Vertices (N, 2) of a centred, unscaled shape with its within-class variation."""
    if shape == "ellipse":
        t = np.linspace(0.0, 2.0 * math.pi, 40, endpoint=False)
        pts = np.stack([np.cos(t), rng.uniform(0.6, 1.0) * np.sin(t)], axis=1)
    elif shape == "rectangle":
        b = rng.uniform(0.55, 1.0)
        pts = np.array([[-1, -b], [1, -b], [1, b], [-1, b]], dtype=np.float64)
    elif shape == "triangle":
        t = math.pi / 2 + np.arange(3) * 2.0 * math.pi / 3
        pts = np.stack([np.cos(t), rng.uniform(0.85, 1.2) * np.sin(t)], axis=1)
    elif shape == "star":
        t = math.pi / 2 + np.arange(10) * math.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.42, 0.55))
        pts = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    elif shape == "cross":
        w = rng.uniform(0.28, 0.38)
        corner = np.array([[w, 1.0], [w, w], [1.0, w]])
        arms = []
        for _ in range(4):
            arms.append(corner)
            corner = corner[:, ::-1] * [1.0, -1.0]  # quarter turn: (x, y) -> (y, -x)
        pts = np.concatenate(arms)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    pts = pts + rng.normal(0.0, 0.015 if shape == "ellipse" else 0.025, size=pts.shape)
    a = rng.uniform(0.0, 2.0 * math.pi)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return pts @ rot.T


def blob_polygon(rng: np.random.Generator) -> np.ndarray:
    """Irregular closed outline (N, 2) of radius about 1: a distractor, no object shape."""
    t = np.linspace(0.0, 2.0 * math.pi, 32, endpoint=False)
    r = np.ones_like(t)
    for k in (2, 3, 4):
        r += rng.uniform(0.0, 0.25) * np.cos(k * t + rng.uniform(0.0, 2.0 * math.pi))
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def polygon_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def rasterize(pts: np.ndarray, size: int) -> np.ndarray:
    """Boolean mask (H, W) of a polygon given in pixel coordinates (x, y)."""
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in pts.tolist()], fill=1)
    return np.asarray(canvas, dtype=bool)


def place(
    rng: np.random.Generator, pts: np.ndarray, size: int, visible: list[np.ndarray]
) -> np.ndarray:
    """Mask (H, W) of the shape at the candidate position hiding least of earlier objects."""
    extent = float(np.abs(pts).max())
    lo, hi = 0.8 * extent, size - 0.8 * extent

    def draw() -> np.ndarray:
        centre = rng.uniform(lo, hi, size=2) if hi > lo else np.full(2, size / 2)
        return rasterize(pts + centre, size)

    return least_hidden(draw, visible)


def place_cut(
    rng: np.random.Generator,
    pts: np.ndarray,
    size: int,
    visible: list[np.ndarray],
    target_px: float,
    band: int,
) -> np.ndarray:
    """Like ``place``, but the shape may reach beyond the frame and be cut by its border.

    Centres are drawn over most of the frame whatever the shape's extent, so large shapes are
    usually cut (as large objects are in photos) and small ones seldom. A shape labelling
    fewer pixels than asked (cut by the border, or eaten by its boundary band) is grown
    about its centre, in up to ``GROW_STEPS`` steps, so that its part inside the frame and
    outside the band covers about ``target_px``: the drawn size is the labelled size, as in
    statistics measured from masks.

    Args:
        pts: centred outline (N, 2) in pixels, (x, y).
        visible: (H, W) masks of the visible parts of earlier objects.
        target_px: pixels the shape should label inside the frame.
        band: half-width of the ignore band that ``boundary_band`` will draw on its outline.

    Returns:
        (H, W) mask of the chosen placement, inside the frame.
    """
    lo, hi = FRAME_INSET * size, (1.0 - FRAME_INSET) * size
    return least_hidden(
        lambda: _grown(pts, rng.uniform(lo, hi, size=2), size, target_px, band), visible
    )


def least_hidden(draw: Callable[[], np.ndarray], visible: list[np.ndarray]) -> np.ndarray:
    """The first of up to ``PLACEMENT_TRIES`` placements from ``draw`` that hides at most
    ``MAX_OCCLUSION`` of every earlier object, else the one hiding the least.

    Args:
        draw: a new random placement, (H, W) bool mask, each call.
        visible: (H, W) masks of the visible parts of earlier objects.
    """
    best, best_hidden = None, math.inf
    for _ in range(PLACEMENT_TRIES):
        mask = draw()
        hidden = max(
            (np.count_nonzero(mask & v) / max(1, np.count_nonzero(v)) for v in visible), default=0.0
        )
        if hidden < best_hidden:
            best, best_hidden = mask, hidden
        if hidden <= MAX_OCCLUSION:
            break
    return best


def _grown(
    pts: np.ndarray, centre: np.ndarray, size: int, target_px: float, band: int
) -> np.ndarray:
    """Mask (H, W) of the shape at ``centre``, grown until it labels about ``target_px``."""
    grow = 1.0
    mask = rasterize(pts + centre, size)
    for _ in range(GROW_STEPS):
        labelled = np.count_nonzero(mask & ~boundary_band(mask.view(np.uint8), band))
        if labelled == 0 or labelled >= target_px or grow >= MAX_GROW:
            break
        # grow is an area factor (lengths scale by its root); the part beyond the frame grows
        # with the rest, so one step falls short: take a few.
        grow = min(MAX_GROW, grow * target_px / labelled)
        mask = rasterize(pts * math.sqrt(grow) + centre, size)
    return mask


def boundary_band(instances: np.ndarray, half_width: int) -> np.ndarray:
    """Pixels within ``half_width`` of an instance boundary, on both sides; (H, W) bool.

    Args:
        instances: (H, W) integer instance map, 0 for background.
    """
    band = np.zeros(instances.shape, dtype=bool)
    for d in range(1, half_width + 1):
        dy = instances[d:, :] != instances[:-d, :]
        dx = instances[:, d:] != instances[:, :-d]
        band[d:, :] |= dy
        band[:-d, :] |= dy
        band[:, d:] |= dx
        band[:, :-d] |= dx
    return band
