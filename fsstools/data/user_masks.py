"""A user's own images and masks: read from a file, a PIL image or an array, and checked.

Masks come as people have them, and are turned into the task mask (``uint8`` (H, W) in
{0 background, 1 foreground, 255 ignore}):

- a binary mask in any 8-bit PNG: 0/1 (1 foreground) or 0/255 (255 foreground); a mask
  holding 0, 1 and 255 reads 255 as "ignore";
- a class-id mask (grey or palette PNG) with ``class_id``: that id is foreground, 255 is
  ignore, every other id background;
- a grey mask saved as RGB(A) whose three channels are equal reads as grey.

Images and masks are read as viewers show them (a photo's EXIF orientation applied,
:mod:`fsstools.data.images`). A mask of another size than its image is refused (never
resized), and so is a support mask without foreground pixel; each error names the file and
the fix.

Example:
    >>> import numpy as np
    >>> task_mask(np.array([[0, 255], [255, 0]], np.uint8), (2, 2), "m.png").tolist()
    [[0, 1], [1, 0]]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fsstools.constants import IGNORE_INDEX
from fsstools.data.images import displayed, open_image
from fsstools.errors import DataError, MissingError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
"""What a query folder is searched for (case-insensitive)."""
BINARY_FG = 1
"""Foreground value of a 0/1 mask (a 0/255 mask uses 255)."""
_MAX_SHOWN = 8  # values quoted in an error message

ImageLike = Any
"""A path (str or Path), a PIL image or a numpy array."""


def describe(source: ImageLike, default: str = "array") -> str:
    """How an error names ``source``: its path, else ``default`` (e.g. "query 2")."""
    return str(source) if isinstance(source, str | Path) else default


def _open(path: Path, what: str) -> Image.Image:
    if not path.is_file():
        raise MissingError(f"{what} {path} does not exist; check the path")
    try:
        img = open_image(path)
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{what} {path} cannot be read as an image ({err}); pass a JPEG or "
                        "PNG file") from err
    return img


def read_image(source: ImageLike, name: str = "image") -> np.ndarray:
    """An RGB image as uint8 (H, W, 3) from a path, a PIL image or a uint8 array
    ((H, W) grey, (H, W, 3) or (H, W, 4))."""
    if isinstance(source, str | Path):
        return np.array(_open(Path(source), "image").convert("RGB"))
    if isinstance(source, Image.Image):
        return np.array(displayed(source).convert("RGB"))
    arr = np.asarray(source)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3
                                                           and arr.shape[2] not in (3, 4)):
        raise DataError(f"{name}: expected a uint8 (H, W), (H, W, 3) or (H, W, 4) array, got "
                        f"{arr.dtype} {arr.shape}; convert it with np.asarray(img, np.uint8)")
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2)
    return np.ascontiguousarray(arr[..., :3])


def _mask_values(source: ImageLike, name: str) -> np.ndarray:
    """The raw values of a mask, (H, W) integers."""
    if isinstance(source, str | Path):
        img = _open(Path(source), "mask")
    elif isinstance(source, Image.Image):
        img = displayed(source)
    else:
        arr = np.asarray(source)
        if arr.dtype == bool:
            return arr.astype(np.uint8)
        img = None
    if img is not None:
        if img.mode == "1":
            return np.array(img).astype(np.uint8)
        if img.mode in ("RGB", "RGBA"):
            arr = np.array(img)
        else:
            return np.array(img)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        rgb = arr[..., :3]
        if not (rgb == rgb[..., :1]).all():
            raise DataError(f"mask {name} is a colour image; pass a single-channel mask "
                            "(binary 0/1 or 0/255, or class ids with --class-id)")
        arr = rgb[..., 0]
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"mask {name}: expected (H, W) integers, got {arr.dtype} {arr.shape}")
    return arr


def _values_text(values: np.ndarray) -> str:
    found = np.unique(values).tolist()
    return ", ".join(map(str, found[:_MAX_SHOWN])) + (", ..." if len(found) > _MAX_SHOWN else "")


def task_mask(values: np.ndarray, image_hw: tuple[int, int], name: str,
              class_id: int | None = None) -> np.ndarray:
    """Raw mask values -> the task mask (H, W) uint8 in {0, 1, 255} (see the module doc).

    Raises:
        DataError: another size than the image, or values that are no binary mask
            without ``class_id``.
    """
    if tuple(values.shape) != tuple(image_hw):
        raise DataError(f"mask {name} is {values.shape[0]}x{values.shape[1]} but its image is "
                        f"{image_hw[0]}x{image_hw[1]}; masks are never resized: pass the "
                        "mask drawn on that image")
    values = values.astype(np.int64)
    ignore = values == IGNORE_INDEX
    if class_id is not None:
        fg = values == class_id
        return np.where(ignore & ~fg, IGNORE_INDEX, fg).astype(np.uint8)
    other = ~np.isin(values, (0, BINARY_FG, IGNORE_INDEX))
    if other.any():
        raise DataError(f"mask {name} holds the value(s) {_values_text(values[other])}: not a "
                        "binary mask (0/1 or 0/255, 255 ignore beside 1); for a class-id mask "
                        "pass the class to segment with --class-id (class_id=)")
    if not (values == BINARY_FG).any():  # 0/255: 255 is the foreground
        return (values == IGNORE_INDEX).astype(np.uint8)
    return np.where(ignore, IGNORE_INDEX, values == BINARY_FG).astype(np.uint8)


def read_support(image: ImageLike, mask: ImageLike, index: int = 0,
                 class_id: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A support image (H, W, 3) uint8 and its task mask (H, W) in {0, 1, 255}.

    Raises:
        MissingError, DataError: a missing or unreadable file, a size mismatch, values
            that are no binary mask, or a mask without foreground (named in the message).
    """
    img = read_image(image, describe(image, f"support {index} image"))
    name = describe(mask, f"support {index} mask")
    out = task_mask(_mask_values(mask, name), img.shape[:2], name, class_id)
    if not (out == 1).any():
        what = f"class {class_id}" if class_id is not None else "foreground"
        raise DataError(f"mask {name} has no {what} pixel, so support {index} shows nothing "
                        "to segment; pass a mask that marks the object"
                        + (" or the class id it holds" if class_id is not None else ""))
    return img, out


def query_files(folder: str | Path) -> list[Path]:
    """The images of ``folder`` (by suffix, sorted by name)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingError(f"query folder {folder} does not exist or is not a folder")
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise DataError(f"query folder {folder} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    return found
