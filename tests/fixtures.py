"""Helpers that build tiny VOC-layout data folders for tests (import, don't collect)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fsstools.constants import IGNORE_INDEX

SIZE = (24, 32)  # (H, W) of the default images
BIG = (12, 16)  # block of the image's main class: 192 px
SMALL = (4, 4)  # block of the secondary class: 16 px, below MIN_FG_TEST
MIN_FG_TEST = 50  # min_fg that counts the main class of an image but not the secondary one


def main_class(j: int) -> int:
    """Class covering the big block of default image ``j``."""
    return j % 20 + 1


def second_class(j: int) -> int:
    """Class covering the small block of default image ``j``."""
    return (j + 7) % 20 + 1


def default_masks(n_images: int = 60, size: tuple[int, int] = SIZE) -> dict[str, np.ndarray]:
    """Masks of ``n_images`` images: a big block of ``main_class(j)``, a small block of
    ``second_class(j)``, a 255 top row; so each class is the main class of n_images/20 images."""
    masks = {}
    for j in range(n_images):
        mask = np.zeros(size, dtype=np.uint8)
        mask[2 : 2 + BIG[0], 2 : 2 + BIG[1]] = main_class(j)
        mask[-1 - SMALL[0] : -1, -1 - SMALL[1] : -1] = second_class(j)
        mask[0, :] = IGNORE_INDEX
        masks[f"img{j:03d}"] = mask
    return masks


def write_image(path: Path, h: int, w: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=90)


def write_mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8)).save(path)  # uint8 (H, W) -> mode L


def make_voc_folder(
    root: Path,
    masks: dict[str, np.ndarray] | None = None,
    layout: str = "list",
    list_name: str = "train",
    mask_dir: str = "SegmentationClass",
) -> Path:
    """Write JPEGImages/<name>.jpg, <mask_dir>/<name>.png and a list of them under ``root``.

    Args:
        root: folder to fill (created).
        masks: name -> uint8 (H, W) class-id mask; ``default_masks()`` when None.
        layout: "list" writes lists/<list_name>.txt ("img mask" lines, the reference
            format); "voc" writes ImageSets/Segmentation/<list_name>.txt (ids).
        list_name: list file stem.
        mask_dir: mask folder name (SegmentationClass or SegmentationClassAug).

    Returns:
        ``root``.
    """
    masks = default_masks() if masks is None else masks
    lines = []
    for seed, (name, mask) in enumerate(masks.items()):
        write_image(root / "JPEGImages" / f"{name}.jpg", *mask.shape, seed=seed)
        write_mask(root / mask_dir / f"{name}.png", mask)
        lines.append(name if layout == "voc" else f"JPEGImages/{name}.jpg {mask_dir}/{name}.png")
    list_dir = root / ("ImageSets/Segmentation" if layout == "voc" else "lists")
    list_dir.mkdir(parents=True, exist_ok=True)
    (list_dir / f"{list_name}.txt").write_text("\n".join(lines) + "\n")
    return root


def list_path(layout: str = "list", list_name: str = "train") -> str:
    """The list file ``make_voc_folder`` writes, relative to the root."""
    folder = "ImageSets/Segmentation" if layout == "voc" else "lists"
    return f"{folder}/{list_name}.txt"
