"""Reading VOC-layout data: image lists, images, class-id masks, and a per-class image index.

One reader serves the synthetic benchmark, PASCAL and the COCO masks written by
``fsstools coco-masks``. A list file holds either one ``image_path mask_path`` pair per line
(relative to the data root, the reference code's format) or one VOC image id per line
(``ImageSets/Segmentation/train.txt``), which maps to ``JPEGImages/<id>.jpg`` and
``SegmentationClassAug/<id>.png`` (or ``SegmentationClass/<id>.png`` without SBD masks).
Images and masks are read as viewers show them (EXIF orientation applied,
:mod:`fsstools.data.images`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from fsstools import cache, paths
from fsstools.cache import atomic_write_text
from fsstools.constants import IGNORE_INDEX, min_fg_pixels
from fsstools.data.images import open_image
from fsstools.data.synth import manifest as synth_manifest
from fsstools.errors import DataError, MissingError
from fsstools.progress import bar as progress_bar

Pair = tuple[str, str]

_VOC_MASK_DIRS = ("SegmentationClassAug", "SegmentationClass")
_MAX_SHOWN = 10  # values or lines quoted in an error message
_INTEGER_MODES = ("1", "L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N")
"""PIL modes of single-channel integer images: what a class-id mask can be stored as."""


def resolve_list_file(root: str | Path, list_file: str | Path) -> Path:
    """Find a list file: absolute, else relative to ``root``, else relative to the cwd."""
    root, list_file = Path(root), Path(list_file)
    if not root.is_dir():
        raise MissingError(
            f"data root {root} does not exist or is not a folder; pass the folder that holds "
            "JPEGImages/ and the mask folder (for synthetic data run `fsstools synth` first)"
        )
    candidates = [list_file] if list_file.is_absolute() else [root / list_file, list_file]
    for path in candidates:
        if path.is_file():
            return path
    raise MissingError(
        f"list file {candidates[0]} not found; pass a path relative to the data root {root} "
        "(e.g. lists/train.txt or ImageSets/Segmentation/train.txt) or an absolute path"
    )


def read_pairs(root: str | Path, list_file: str | Path) -> list[Pair]:
    """Image/mask paths, relative to ``root``, listed in ``list_file`` (either format; a
    folder data set's lists are read by :func:`fsstools.data.folder.read_pairs`).

    Raises:
        ConflictError: ``root`` is an embedded benchmark of another generator version.
    """
    from fsstools.data import folder
    root = Path(root)
    if folder.is_folder_dataset(root):
        return folder.read_pairs(root, list_file)
    path = resolve_list_file(root, list_file)
    synth_manifest.check_version(root)
    mask_dir = next((d for d in _VOC_MASK_DIRS if (root / d).is_dir()), _VOC_MASK_DIRS[-1])
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) == 1:
            pairs.append((f"JPEGImages/{fields[0]}.jpg", f"{mask_dir}/{fields[0]}.png"))
        elif len(fields) == 2:
            # Some published lists start paths with "/" although they are root-relative.
            pairs.append((fields[0].lstrip("/"), fields[1].lstrip("/")))
        else:
            raise DataError(
                f"{path}, line {number}: expected 'image_path mask_path' or a VOC image id, "
                f"got {line!r}; fix or remove that line"
            )
    if not pairs:
        raise DataError(f"list file {path} lists no images; point to a non-empty list")
    return pairs


def _open(path: Path, what: str) -> Image.Image:
    if not path.is_file():
        raise MissingError(
            f"{what} {path} not found; check the data root and the list file that names it"
        )
    try:
        img = open_image(path)  # decoded now, so a truncated file fails here, not later
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(
            f"cannot read {what} {path} ({err}); the file is corrupt or not an image: "
            "replace it or remove it from the list file"
        ) from err
    return img


def load_image(path: str | Path) -> np.ndarray:
    """An RGB image as uint8 (H, W, 3); grey or palette images are converted."""
    return np.array(_open(Path(path), "image").convert("RGB"))  # a writable copy


def load_mask(path: str | Path, n_classes: int) -> np.ndarray:
    """A class-id mask as uint8 (H, W), checked to hold only 0..n_classes and 255.

    Any single-channel integer PNG is read (8-bit grey or palette, 16-bit, bilevel), so a
    mask saved with more bits than needed still works when its values are class ids.

    Raises:
        DataError: a colour (multi-channel) image, or values outside the allowed set (the
            message lists the values found).
    """
    path = Path(path)
    img = _open(path, "mask")
    if img.mode not in _INTEGER_MODES:
        raise DataError(
            f"mask {path} is a {len(img.getbands())}-channel {img.mode} image; masks must be "
            "single-channel class-id PNGs (one class id per pixel: 0 background, 255 ignore), "
            "so convert colour-coded masks to class ids first"
        )
    values = np.array(img)
    bad = (values > n_classes) & (values != IGNORE_INDEX)
    if bad.any():
        found = np.unique(values[bad]).tolist()
        shown = ", ".join(map(str, found[:_MAX_SHOWN]))
        shown += ", ..." if len(found) > _MAX_SHOWN else ""
        raise DataError(
            f"mask {path} ({img.mode}) holds the value(s) {shown}; a mask of this dataset may "
            f"only hold 0 (background), 1..{n_classes} (class ids) and {IGNORE_INDEX} (ignore): "
            "check that the dataset name matches the masks (e.g. COCO masks read as PASCAL) "
            "and that the mask folder holds class ids"
        )
    return values.astype(np.uint8)


def load_pair(
    root: str | Path, img_rel: str, mask_rel: str, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """An image (H, W, 3) uint8 and its mask (H, W) uint8, checked to have the same size."""
    root = Path(root)
    image = load_image(root / img_rel)
    mask = load_mask(root / mask_rel, n_classes)
    if image.shape[:2] != mask.shape:
        raise DataError(
            f"image {root / img_rel} is {image.shape[0]}x{image.shape[1]} but its mask "
            f"{root / mask_rel} is {mask.shape[0]}x{mask.shape[1]}; the list pairs the wrong "
            "files or the mask was resized: regenerate the mask or fix the list"
        )
    return image, mask


def _compute_index(
    root: Path, pairs: Sequence[Pair], n_classes: int, min_fg: int | None, desc: str
) -> dict[int, list[int]]:
    index: dict[int, list[int]] = {c: [] for c in range(1, n_classes + 1)}
    # A context, so the bar is closed on an error too and the error starts its own line.
    with progress_bar(pairs, desc=desc, unit="mask") as bar:
        for i, (_, mask_rel) in enumerate(bar):
            mask = load_mask(root / mask_rel, n_classes)
            threshold = min_fg_pixels(mask.size) if min_fg is None else min_fg
            counts = np.bincount(mask.ravel(), minlength=IGNORE_INDEX + 1)
            for c in np.flatnonzero(counts[1 : n_classes + 1] >= threshold) + 1:
                index[int(c)].append(i)
    return index


_ANNOUNCED: set[Path] = set()
"""Class indexes whose reuse this process has announced."""


def class_index(
    root: str | Path,
    pairs: Sequence[Pair],
    n_classes: int,
    min_fg: int | None = None,
    force: bool = False,
) -> dict[int, list[int]]:
    """For each class 1..n_classes, the indices into ``pairs`` of images that hold it.

    An image holds a class when the class covers at least ``min_fg`` mask pixels; with
    ``min_fg=None`` the PASCAL 2048-pixel rule is scaled to each image's area
    (``constants.min_fg_pixels``). Reading every mask is slow on large lists, so the result
    is cached in the cache folder (never beside the data, which may be read-only), keyed by
    the masks' fingerprints, ``n_classes``, ``min_fg`` and the code version.
    """
    root = Path(root)
    key = class_index_key(root, pairs, n_classes, min_fg)
    path = paths.cache_dir("class_index") / f"{key}.json"
    if path.is_file() and not force:
        try:
            stored = json.loads(path.read_text())
            index = {int(c): images for c, images in stored["index"].items()}
            if path not in _ANNOUNCED:  # once per process: a study reads it per episode list
                cache.announce_reuse(f"class index of {len(pairs)} masks", path)
                _ANNOUNCED.add(path)
            return index
        except (json.JSONDecodeError, KeyError, ValueError):
            pass  # an unreadable cache entry is rebuilt below
    index = _compute_index(root, pairs, n_classes, min_fg, f"indexing classes of {root}")
    record = {"root": str(root.resolve()), "n_images": len(pairs), "n_classes": n_classes,
              "min_fg": min_fg}
    atomic_write_text(path, json.dumps({**record, "index": index}))
    return index


def class_index_key(
    root: str | Path, pairs: Sequence[Pair], n_classes: int, min_fg: int | None
) -> str:
    """Cache key of ``class_index``: the list of masks, their fingerprints, the settings and
    the code version."""
    return cache.cache_key(
        stage="class_index",
        masks=[mask for _, mask in pairs],
        files=cache.fingerprint_files(root, (mask for _, mask in pairs)),
        n_classes=n_classes,
        min_fg=min_fg,
        code=cache.code_version(__name__),
    )
