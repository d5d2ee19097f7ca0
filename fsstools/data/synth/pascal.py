"""What the benchmark imitates: PASCAL VOC 2012 scene statistics, and the draws made from
them.

Source of every number below: the per-image table of the PASCAL VOC 2012 segmentation
trainval set (2913 images, ``SegmentationClass`` masks; the val half is the PASCAL-5i test
set) published by Dataset Ninja, ``stats/classes_per_image.json`` of
github.com/dataset-ninja/pascal-voc-2012 (commit 92f4ee5, 2023-09-26): for every image and
class, the number of objects and the share of the image the class covers (void band
excluded). ``bench/synth_sizes.py --pascal FILE`` recomputes this table from that file.

Synthetic class ``i`` takes the statistics of PASCAL class ``i`` (same id, VOC order), so
each PASCAL-5i fold of five classes gets PASCAL's own mix of small and large classes.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

Z95 = 1.6448536269514722
"""Standard-normal 95% quantile: maps PASCAL's 5/50/95% quantiles to log-normal spreads."""

# Per PASCAL class (VOC order, ids 1..20), over the (image, class) pairs where the class is
# labelled: 5%, 50% and 95% quantile of the share of the image it covers (percent), and the
# share of those pairs holding a single object of the class.
PASCAL_CLASS_STATS: dict[str, tuple[float, float, float, float]] = {
    "aeroplane": (0.46, 9.76, 33.67, 0.87),
    "bicycle": (0.22, 3.96, 15.38, 0.75),
    "bird": (0.33, 6.72, 42.53, 0.81),
    "boat": (0.59, 7.35, 30.62, 0.71),
    "bottle": (0.15, 2.55, 43.56, 0.72),
    "bus": (1.29, 33.94, 61.86, 0.68),
    "car": (0.14, 7.92, 51.45, 0.66),
    "cat": (3.76, 24.36, 60.79, 0.90),
    "chair": (0.50, 4.95, 41.95, 0.54),
    "cow": (1.71, 15.75, 56.03, 0.50),
    "diningtable": (1.99, 15.38, 73.32, 0.94),
    "dog": (1.32, 16.47, 54.48, 0.84),
    "horse": (2.26, 14.41, 45.83, 0.73),
    "motorbike": (0.78, 15.58, 49.74, 0.81),
    "person": (0.21, 9.64, 49.78, 0.57),
    "pottedplant": (0.23, 3.75, 43.48, 0.60),
    "sheep": (0.80, 15.96, 52.63, 0.36),
    "sofa": (4.10, 15.70, 67.86, 0.87),
    "train": (4.86, 24.19, 61.32, 0.89),
    "tvmonitor": (0.99, 8.57, 42.66, 0.80),
}

PASCAL_HELD_MEDIANS = (
    11.36, 5.60, 7.92, 10.10, 6.54, 34.57, 16.70, 24.49, 6.52, 16.85,
    15.47, 16.65, 14.58, 16.32, 13.52, 5.74, 17.60, 15.70, 24.84, 9.20,
)  # fmt: skip
"""Per class (VOC order), median share in percent over the pairs where the class covers at
least 2048 px (those that can make an episode): for comparison only, not used to draw."""

PASCAL_CLASSES_PER_IMAGE = (0.64, 0.26, 0.085, 0.015)
"""Share of images with 1, 2, 3 and 4+ labelled classes (1860, 757, 246, 50 of 2913)."""

PASCAL_EXTRA_INSTANCE_P = 0.54
"""Of the (image, class) pairs with two or more objects, the share with exactly two (0.158 of
0.292); the tail beyond is close to geometric with this parameter (3: 0.22, 4: 0.11 seen)."""

PASCAL_SUMMARY = {
    "images": 2913,
    "objects_per_image": 2.38,
    "classes_per_image": 1.48,
    "classes_per_image_held": 1.32,
    "multi_class_share": 0.36,
    "multi_class_share_held": 0.29,
    "held_share_quantiles": {"0.05": 0.0187, "0.5": 0.1374, "0.95": 0.5448},
    "median_ratio_held": 6.2,
    "range_ratio_held": 29.2,
}
"""The same table summarised as ``stats.summarise`` measures ours ("held": the pairs
where the class covers >= 2048 px, i.e. the ones that can make a PASCAL-5i episode)."""

MAX_INSTANCES = 6
"""Objects of one class in one image; PASCAL has more (up to 34 bottles) but 128 px cannot."""
MIN_SHARE, MAX_SHARE = 0.001, 0.75
"""Drawn class shares are clipped here: smaller would not rasterise, larger leaves no scene."""
MAX_TOTAL_SHARE = 0.85
"""Shares of all classes in one image are scaled down together to fit this (PASCAL's median
image is 74% background)."""


def class_stats(class_id: int) -> tuple[float, float, float, float]:
    """(q05, median, q95 as fractions of the image, P(single object)) of class ``class_id``."""
    q05, med, q95, single = list(PASCAL_CLASS_STATS.values())[class_id - 1]
    return q05 / 100.0, med / 100.0, q95 / 100.0, single


def draw_share(rng: np.random.Generator, class_id: int) -> float:
    """Share of the image one class covers: a two-piece log-normal through PASCAL's quantiles.

    PASCAL's shares are skewed in log space (long tail of tiny objects, a ceiling at the
    frame), so the spread below the median and the one above are fitted separately: each
    half reproduces the class's 5% or 95% quantile exactly.
    """
    q05, med, q95, _ = class_stats(class_id)
    z = rng.standard_normal()
    spread = math.log(med / q05) if z < 0 else math.log(q95 / med)
    return float(np.clip(med * math.exp(z * spread / Z95), MIN_SHARE, MAX_SHARE))


def draw_instances(rng: np.random.Generator, class_id: int) -> int:
    """Objects of one class in one image: one with PASCAL's class-wise chance, else 2 + tail."""
    if rng.random() < class_stats(class_id)[3]:
        return 1
    return min(MAX_INSTANCES, 1 + int(rng.geometric(PASCAL_EXTRA_INSTANCE_P)))


def plan_images(rng: np.random.Generator, n: int, n_classes: int) -> list[tuple[int, ...]]:
    """Object classes of ``n`` images: PASCAL's classes per image and objects per class.

    Classes are dealt from a stream of shuffled permutations, so every class is (almost
    exactly) equally frequent, unlike PASCAL where person dominates; an image never gets
    one class twice from the stream, its repeats are objects of the same class.

    Returns:
        One tuple per image, a class id per object (same-class objects next to each other).
    """
    counts = rng.choice(
        np.arange(1, len(PASCAL_CLASSES_PER_IMAGE) + 1), size=n, p=PASCAL_CLASSES_PER_IMAGE
    )
    pending: list[int] = []
    plan = []
    for k in counts.tolist():
        chosen: list[int] = []
        while len(chosen) < k:
            if not any(c not in chosen for c in pending):
                pending += (rng.permutation(n_classes) + 1).tolist()
            c = next(c for c in pending if c not in chosen)
            pending.remove(c)
            chosen.append(c)
        plan.append(tuple(c for c in chosen for _ in range(draw_instances(rng, c))))
    return plan


def scene_objects(rng: np.random.Generator, classes: tuple[int, ...]) -> list[tuple[int, float]]:
    """(class id, target share of the image) of every object, largest first.

    One share is drawn per class (PASCAL's statistics are per class and image, all its
    objects together) and split among its objects at random (flat Dirichlet), which is
    where most small objects come from. Larger objects are drawn first, so that the small
    ones land on top and stay visible.
    """
    per_class = Counter(classes)
    shares = {c: draw_share(rng, c) for c in per_class}
    total = sum(shares.values())
    fit = min(1.0, MAX_TOTAL_SHARE / total)
    objects = []
    for c, n in per_class.items():
        parts = rng.dirichlet(np.ones(n)) if n > 1 else np.ones(1)
        objects += [(c, max(MIN_SHARE, float(p) * shares[c] * fit)) for p in parts]
    return sorted(objects, key=lambda o: -o[1])
