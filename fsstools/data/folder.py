"""A labelled collection of your own as a data set (``dataset: folder``).

Layout (the root is what ``data_root`` / ``--root`` / ``data.root`` name)::

    mydata/
      classes.txt        one class name per line: line 1 is class id 1, ...; 0 is background
      images/a.jpg ...   JPEG or PNG, any sizes
      masks/a.png ...    class ids per pixel (0 background, 255 ignore), named as the image
      lists/train.txt    optional: image names (a.jpg, or a) or "image mask" pairs per line
      lists/val.txt      optional: the same for the test images

Images and masks are read as viewers show them: a photo's EXIF orientation is applied
(:mod:`fsstools.data.images`), so a mask drawn on the photo as shown fits it.

Without list files the images split by name order: every fifth image (the 5th, 10th, ...)
is a val image, the others train images (``lists/all.txt`` names them all). Classes split
into four folds as PASCAL's do: fold i tests classes ``k*i + 1 .. k*(i + 1)`` with
``k = n_classes // 4`` (classes past ``4k`` are base classes of every fold).
"""

from __future__ import annotations

from pathlib import Path

from fsstools.data.user_masks import IMAGE_SUFFIXES
from fsstools.errors import DataError, MissingError

CLASSES_FILE = "classes.txt"
IMAGES_DIR = "images"
MASKS_DIR = "masks"
VAL_EVERY = 5
"""Without list files, image k (1-based, by name) is a val image when k is a multiple of this."""
DERIVED_LISTS = ("train", "val", "all")

Pair = tuple[str, str]


def is_folder_dataset(root: str | Path) -> bool:
    """Whether ``root`` holds a ``classes.txt`` and an ``images/`` folder."""
    root = Path(root)
    return (root / CLASSES_FILE).is_file() and (root / IMAGES_DIR).is_dir()


def class_names(root: str | Path) -> tuple[str, ...]:
    """The class names of ``root/classes.txt`` (blank lines skipped); class id i is [i - 1]."""
    path = Path(root) / CLASSES_FILE
    if not path.is_file():
        raise MissingError(f"{path} does not exist; a folder data set names its classes there, "
                           "one per line (see docs/real-data.md)")
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if not names:
        raise DataError(f"{path} names no class; write one class name per line")
    return names


def _image_of(root: Path, name: str) -> str:
    if Path(name).suffix.lower() in IMAGE_SUFFIXES:
        return f"{IMAGES_DIR}/{name}"
    for suffix in IMAGE_SUFFIXES:
        for s in (suffix, suffix.upper()):
            if (root / IMAGES_DIR / f"{name}{s}").is_file():
                return f"{IMAGES_DIR}/{name}{s}"
    raise MissingError(f"no image {name}.* in {root / IMAGES_DIR} ({', '.join(IMAGE_SUFFIXES)})")


def _pair(root: Path, image: str) -> Pair:
    return image, f"{MASKS_DIR}/{Path(image).stem}.png"


def derived_pairs(root: str | Path, split: str) -> list[Pair]:
    """The images of ``split`` ("train", "val" or "all") without list files (module doc)."""
    root = Path(root)
    images = sorted(p.name for p in (root / IMAGES_DIR).iterdir()
                    if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"{root / IMAGES_DIR} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    chosen = [name for k, name in enumerate(images, start=1)
              if split == "all" or (k % VAL_EVERY == 0) == (split == "val")]
    if not chosen:
        raise DataError(f"{root} has {len(images)} images, too few for a {split} split (every "
                        f"{VAL_EVERY}th is a val image); add images or write lists/{split}.txt")
    return [_pair(root, f"{IMAGES_DIR}/{name}") for name in chosen]


def read_pairs(root: str | Path, list_file: str | Path) -> list[Pair]:
    """Image/mask paths (relative to ``root``) of a list file of a folder data set, or of
    the derived split its name says ("lists/train.txt" -> train) when the file is absent.

    Raises:
        MissingError: no such list file and no derived split of that name, or an image
            the list names is missing.
    """
    root, list_file = Path(root), Path(list_file)
    class_names(root)  # a folder without classes fails here, before any mask is read
    path = list_file if list_file.is_absolute() else root / list_file
    if not path.is_file():
        if list_file.stem in DERIVED_LISTS:
            return derived_pairs(root, list_file.stem)
        raise MissingError(f"list file {path} not found; write it, or name lists/train.txt, "
                           "lists/val.txt or lists/all.txt for the split by name order")
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) > 2:
            raise DataError(f"{path}, line {number}: expected an image name or 'image mask', "
                            f"got {line!r}")
        pairs.append((fields[0], fields[1]) if len(fields) == 2
                     else _pair(root, _image_of(root, fields[0])))
    if not pairs:
        raise DataError(f"list file {path} lists no images; point to a non-empty list")
    return pairs
