"""Geometry of the synthetic benchmark: object outlines, distractor blobs, placement, borders.

Outlines are polygons in unit coordinates (radius about 1), rasterised with PIL.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("ellipse", "rectangle", "triangle", "star", "cross")
MAX_OCCLUSION = 0.3
"""A new object may hide at most this share of an earlier object's visible pixels."""
PLACEMENT_TRIES = 10


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
    best, best_hidden = None, math.inf
    for _ in range(PLACEMENT_TRIES):
        centre = rng.uniform(lo, hi, size=2) if hi > lo else np.full(2, size / 2)
        mask = rasterize(pts + centre, size)
        hidden = max(
            (np.count_nonzero(mask & v) / max(1, np.count_nonzero(v)) for v in visible), default=0.0
        )
        if hidden < best_hidden:
            best, best_hidden = mask, hidden
        if hidden <= MAX_OCCLUSION:
            break
    return best


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
