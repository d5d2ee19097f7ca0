"""COCO 2014 instances -> per-image class-id PNG masks and an image list (reference format).

Category ids (1..90 with gaps) become class ids 1..80 in increasing category-id order, the
order of ``splits.COCO_CLASSES``. Crowd regions are painted 255 (ignored) first; then the
instances are painted from the largest to the smallest, so where instances overlap the
smaller one wins: small objects lying on large ones (a cup on a dining table) stay visible,
and an individually annotated instance inside a crowd region keeps its class.

Output under ``out`` (default: the COCO root): ``masks/<split>/<image stem>.png`` and
``lists/<split>.txt`` with lines ``<image path> masks/<split>/<stem>.png`` relative to
``out``, ready for ``voc.read_pairs(out, "lists/<split>.txt")``.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fsstools.cache import atomic_write, atomic_write_text
from fsstools.constants import IGNORE_INDEX
from fsstools.data.splits import COCO_CLASSES
from fsstools.errors import ConfigError, DataError
from fsstools.progress import bar as progress_bar

SPLITS = ("train2014", "val2014")


def _mask_api() -> Any:
    try:
        from pycocotools import mask as mask_api
    except ImportError as err:
        raise ImportError(
            "COCO masks need pycocotools: pip install fsstools[coco] (or pip install pycocotools)"
        ) from err
    return mask_api


def category_map(categories: list[dict[str, Any]]) -> dict[int, int]:
    """COCO category id -> class id 1..80, checked against ``splits.COCO_CLASSES``."""
    ordered = sorted(categories, key=lambda cat: cat["id"])
    names = tuple(cat["name"] for cat in ordered)
    if names != COCO_CLASSES:
        raise DataError(
            f"the annotation file's {len(names)} categories do not match the 80 COCO classes "
            "in category-id order; use the COCO 2014 instances_<split>.json annotations"
        )
    return {cat["id"]: i for i, cat in enumerate(ordered, start=1)}


def _decode(mask_api: Any, segmentation: Any, h: int, w: int) -> np.ndarray:
    """A binary (h, w) mask from a polygon list, an uncompressed RLE or a compressed RLE."""
    if isinstance(segmentation, list):  # polygons: one RLE per part, merged
        rle = mask_api.merge(mask_api.frPyObjects(segmentation, h, w))
    elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE (crowds)
        rle = mask_api.frPyObjects(segmentation, h, w)
    else:
        rle = segmentation
    return mask_api.decode(rle).astype(bool)


def class_mask(
    annotations: list[dict[str, Any]], h: int, w: int, cat_to_class: dict[int, int]
) -> np.ndarray:
    """The uint8 (h, w) class-id mask of one image (rule in the module docstring)."""
    mask_api = _mask_api()
    mask = np.zeros((h, w), dtype=np.uint8)
    crowds = [a for a in annotations if a.get("iscrowd", 0)]
    instances = [a for a in annotations if not a.get("iscrowd", 0)]
    for ann in crowds:
        mask[_decode(mask_api, ann["segmentation"], h, w)] = IGNORE_INDEX
    shapes = [(_decode(mask_api, a["segmentation"], h, w), a) for a in instances]
    # Stable sort: equal areas keep annotation order, so the output is deterministic.
    for region, ann in sorted(shapes, key=lambda s: -int(s[0].sum())):
        mask[region] = cat_to_class[ann["category_id"]]
    return mask


def write_masks(
    coco_root: str | Path, split: str, out: str | Path | None = None, overwrite: bool = False
) -> Path:
    """Write the class-id masks and the image list of one COCO 2014 split.

    Args:
        coco_root: folder holding ``annotations/instances_<split>.json`` and ``<split>/``.
        split: "train2014" or "val2014".
        out: where masks and list go (default ``coco_root``).
        overwrite: rewrite masks that already exist (otherwise an interrupted run resumes).

    Returns:
        The list file, ``out/lists/<split>.txt``.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown COCO split {split!r}; valid splits: {', '.join(SPLITS)}")
    _mask_api()  # fail before the slow JSON load
    coco_root = Path(coco_root)
    out = Path(out) if out is not None else coco_root
    ann_file = coco_root / "annotations" / f"instances_{split}.json"
    image_dir = coco_root / split
    if not ann_file.is_file():
        raise FileNotFoundError(
            f"annotation file {ann_file} not found; download the COCO 2014 annotations and "
            "unpack them so that annotations/ sits under --coco-root"
        )
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder {image_dir} not found; unpack {split}.zip there")
    data = json.loads(ann_file.read_text())
    cat_to_class = category_map(data["categories"])
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in data["annotations"]:
        by_image[ann["image_id"]].append(ann)
    images = sorted(data["images"], key=lambda im: im["file_name"])
    missing = [im["file_name"] for im in images if not (image_dir / im["file_name"]).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) of {ann_file} are missing from {image_dir}, e.g. "
            f"{missing[0]}; unpack the full {split} image archive"
        )

    lines = []
    for im in progress_bar(images, desc=f"COCO {split} masks", unit="img"):
        mask_rel = Path("masks") / split / (Path(im["file_name"]).stem + ".png")
        if overwrite or not (out / mask_rel).is_file():
            mask = class_mask(by_image[im["id"]], im["height"], im["width"], cat_to_class)
            atomic_write(out / mask_rel, lambda p, m=mask: Image.fromarray(m).save(p, "PNG"))
        image_rel = os.path.relpath(image_dir / im["file_name"], out)
        lines.append(f"{Path(image_rel).as_posix()} {mask_rel.as_posix()}")
    return atomic_write_text(out / "lists" / f"{split}.txt", "\n".join(lines) + "\n")
