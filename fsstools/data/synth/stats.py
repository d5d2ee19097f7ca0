"""Size statistics of a synthetic benchmark, measured from its label masks.

The same numbers are recorded in ``synth.json`` at generation (from the rendered labels)
and can be measured again from the masks on disk (``measure``), e.g. by
``bench/synth_sizes.py``. A class counts in an image ("held") only where it covers at least
``min_fg_pixels`` (2048 px at PASCAL's image size, scaled), as episodes require; tiny
objects are labelled but count for nothing, as on PASCAL-5i.

    >>> from pathlib import Path
    >>> stats = measure(Path("data/synth"))  # doctest: +SKIP
    >>> stats["A/val"]["median_ratio"], stats["A/val"]["range_ratio"]  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fsstools.constants import IGNORE_INDEX, min_fg_pixels
from fsstools.data.synth.classes import N_CLASSES

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
DIGITS = 4


def label_counts(label: np.ndarray) -> np.ndarray:
    """Pixels of each label value, over the image and over its outer one-pixel frame.

    Args:
        label: (H, W) uint8 label map.

    Returns:
        (2, N_CLASSES + 1) int64: row 0 pixels per value 0..N_CLASSES in the image, row 1
        those on the frame (a class there was cut by the image border).
    """
    frame = np.concatenate([label[0], label[-1], label[1:-1, 0], label[1:-1, -1]])
    return np.stack(
        [
            np.bincount(label.ravel(), minlength=IGNORE_INDEX + 1)[: N_CLASSES + 1],
            np.bincount(frame, minlength=IGNORE_INDEX + 1)[: N_CLASSES + 1],
        ]
    )


def _round(x: float) -> float:
    return round(float(x), DIGITS)


def _quantiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    return {str(q): _round(np.quantile(values, q)) for q in QUANTILES}


def summarise(counts: np.ndarray, size: int, objects: list[int] | None = None) -> dict:
    """Per-class and overall foreground-share statistics of one split.

    Args:
        counts: (N, 2, N_CLASSES + 1) ``label_counts`` of the split's images.
        size: image side in pixels (square images).
        objects: objects drawn per image, where known (the generator's plan).

    Returns:
        A JSON-ready dict. ``images_per_class``: images holding each class;
        ``class_share``: per class, 5/50/95% quantiles of its share over the images holding
        it (null where none); ``held_share_quantiles`` over all held (image, class) pairs;
        ``median_ratio``: largest over smallest class median; ``range_ratio``: 95% over 5%
        quantile of the held shares; ``fg_share_quantiles`` over every labelled pair, tiny
        ones included; classes per image, the share of images with two or more, the share
        of held pairs cut by the image border, and the share of 255 pixels.
    """
    area = float(size * size)
    pixels = counts[:, 0, 1:]  # (N, 20), boundary band excluded
    held = pixels >= min_fg_pixels(size * size)  # (N, 20)
    share = pixels / area
    class_share: dict[str, list[float | None]] = {"0.05": [], "0.5": [], "0.95": []}
    medians = []  # unrounded, for the ratio
    for c in range(N_CLASSES):
        s = share[held[:, c], c]
        for q in class_share:
            class_share[q].append(_round(np.quantile(s, float(q))) if s.size else None)
        if s.size:
            medians.append(float(np.median(s)))
    held_shares = share[held]
    per_image = held.sum(axis=1)
    out = {
        "images_per_class": held.sum(axis=0).tolist(),
        "class_share": class_share,
        "held_share_quantiles": _quantiles(held_shares),
        "median_ratio": _round(max(medians) / min(medians)) if medians else None,
        "range_ratio": (
            _round(np.quantile(held_shares, 0.95) / np.quantile(held_shares, 0.05))
            if held_shares.size
            else None
        ),
        "fg_share_quantiles": _quantiles(share[pixels > 0]),
        "classes_per_image": _round(per_image.mean()),
        "multi_class_share": _round((per_image >= 2).mean()),
        "border_cut_share": _round((counts[:, 1, 1:][held] > 0).mean()) if held.any() else None,
        "border_share": _round(1.0 - counts[:, 0].sum() / (len(counts) * area)),
    }
    if objects is not None:
        out["objects_per_image"] = _round(np.mean(objects))
    return out


def read_counts(root: Path, list_file: Path) -> tuple[np.ndarray, int]:
    """``label_counts`` of every mask named in an image list ("image mask" per line).

    Returns:
        (N, 2, N_CLASSES + 1) counts and the image side in pixels.
    """
    counts, size = [], 0
    for line in Path(list_file).read_text().splitlines():
        if not line.strip():
            continue
        label = np.asarray(Image.open(Path(root) / line.split()[1]))
        size = label.shape[0]
        counts.append(label_counts(label))
    return np.stack(counts), size


def measure(root: Path, splits: tuple[str, ...] = ("train", "val")) -> dict[str, dict]:
    """``summarise`` every style and split of a generated benchmark, from its masks on disk.

    Returns:
        {"<style>/<split>": summary} for every style folder under ``root``.
    """
    out = {}
    for style_dir in sorted(p for p in Path(root).iterdir() if (p / "lists").is_dir()):
        for split in splits:
            counts, size = read_counts(style_dir, style_dir / "lists" / f"{split}.txt")
            out[f"{style_dir.name}/{split}"] = summarise(counts, size)
    return out
