"""Class splits: which classes each fold trains on (base) and tests on (novel).

PASCAL-5i fold i tests classes 5i+1 .. 5i+5. COCO-20i has two schemes: ``interleaved``
(fold i tests i+1, i+5, ..., i+77; the common default) and ``contiguous`` (20i+1 .. 20i+20).
The synthetic benchmark has 20 classes of its own and PASCAL's folds. A folder data set
(:mod:`~fsstools.data.folder`) has the classes of its ``classes.txt`` and PASCAL-like
contiguous folds; the functions here take its data root (``root=``). Class ids start at 1;
0 is background.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from fsstools.data import folder
from fsstools.data.synth import classes as synth_classes
from fsstools.errors import ConfigError

PASCAL_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle",
    "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person",
    "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
"""VOC class names; class id ``i + 1`` is ``PASCAL_CLASSES[i]`` (7 is car, 8 is cat)."""

COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck",
    "boat", "traffic light", "fire hydrant", "stop sign", "parking meter", "bench",
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
    "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis",
    "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard",
    "surfboard", "tennis racket", "bottle", "wine glass", "cup", "fork", "knife",
    "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot",
    "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
"""COCO names in increasing category-id order; class id ``i + 1`` is ``COCO_CLASSES[i]``."""

Dataset = Literal["pascal", "coco", "synth", "folder"]
"""Class tables (and test splits) this module knows; "folder" reads its own from the data
root (:mod:`fsstools.data.folder`)."""
DATASETS: tuple[str, ...] = get_args(Dataset)
Scheme = Literal["interleaved", "contiguous"]
"""COCO-20i split schemes (PASCAL-5i and synth have one)."""
SCHEMES: tuple[str, ...] = get_args(Scheme)
N_FOLDS = 4

# PASCAL names that COCO spells differently; every other PASCAL name is spelled the same.
_PASCAL_TO_COCO_NAME = {
    "aeroplane": "airplane",
    "diningtable": "dining table",
    "motorbike": "motorcycle",
    "pottedplant": "potted plant",
    "sofa": "couch",
    "tvmonitor": "tv",
}


def check_split(dataset: str, fold: int, scheme: str) -> None:
    """Raise a ConfigError naming an unknown dataset, fold or split scheme."""
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(DATASETS)}")
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown split scheme {scheme!r}; valid schemes: {', '.join(SCHEMES)}")
    check_fold(fold)


def check_fold(fold: Any, where: str = "fold", key: str = "fold") -> int:
    """The one fold check: ``fold`` (an integer, numpy's too) must be 0..3.

    Args:
        where: how the message names the value, e.g. "parameter folds: fold".
        key: the config key or parameter at fault.

    Returns:
        The fold as an int.
    """
    if isinstance(fold, bool) or not isinstance(fold, int | np.integer) or not 0 <= fold < N_FOLDS:
        shown = int(fold) if isinstance(fold, np.integer) else repr(fold)
        raise ConfigError(f"{where} {shown} does not exist; folds are "
                          f"{', '.join(map(str, range(N_FOLDS)))}", key=key)
    return int(fold)


def class_names(dataset: str, root: str | Path | None = None) -> tuple[str, ...]:
    """Names of the classes of ``dataset``; class id ``i + 1`` has name ``[i]``.

    ``root``: the data root, needed for "folder".
    """
    check_split(dataset, 0, SCHEMES[0])
    if dataset == "folder":
        return _folder_classes(root)
    if dataset == "synth":
        return tuple(synth_classes.class_names())
    return COCO_CLASSES if dataset == "coco" else PASCAL_CLASSES


def _folder_classes(root: str | Path | None) -> tuple[str, ...]:
    if root is None:
        raise ConfigError("dataset folder: its classes come from <data root>/classes.txt; "
                          "pass the data root")
    names = folder.class_names(root)
    if len(names) < N_FOLDS:
        raise ConfigError(f"dataset folder: {Path(root) / folder.CLASSES_FILE} names "
                          f"{len(names)} classes; the {N_FOLDS} folds need at least {N_FOLDS}")
    return names


def class_name(dataset: str, class_id: int, root: str | Path | None = None) -> str:
    """Display name of a class id of ``dataset`` (0: background; a folder's class without
    its root: "class <id>")."""
    if class_id == 0:
        return "background"
    if dataset == "folder" and root is None:
        return f"class {class_id}"
    return class_names(dataset, root)[class_id - 1]


def n_classes(dataset: str, root: str | Path | None = None) -> int:
    """Number of object classes (background excluded): 20 for pascal and synth, 80 for coco,
    the lines of ``classes.txt`` for a folder."""
    return len(class_names(dataset, root))


def test_classes(dataset: str, fold: int, scheme: str = "interleaved",
                 root: str | Path | None = None) -> list[int]:
    """Novel classes of ``fold``, sorted.

    Args:
        dataset: "pascal", "coco", "synth" or "folder".
        fold: 0..3.
        scheme: COCO-20i scheme, "interleaved" or "contiguous". PASCAL-5i (and synth) has a
            single split, so the scheme is checked but otherwise ignored there.
        root: the data root of a folder data set.
    """
    check_split(dataset, fold, scheme)
    total = n_classes(dataset, root)
    per_fold = total // N_FOLDS
    if dataset == "coco" and scheme == "interleaved":
        return list(range(fold + 1, total + 1, N_FOLDS))
    return list(range(per_fold * fold + 1, per_fold * (fold + 1) + 1))


test_classes.__test__ = False  # a library function, not a pytest test, when imported by tests


def base_classes(dataset: str, fold: int, scheme: str = "interleaved",
                 root: str | Path | None = None) -> list[int]:
    """Classes ``fold`` trains on, sorted; base training relabels them 1..n in this order."""
    novel = set(test_classes(dataset, fold, scheme, root))
    return [c for c in range(1, n_classes(dataset, root) + 1) if c not in novel]


def coco_to_pascal_classes(fold: int, scheme: str = "interleaved") -> list[int]:
    """PASCAL class ids tested after base training on COCO ``fold``.

    A PASCAL class is kept when its name (mapped to COCO spelling, e.g. sofa -> couch) is
    not among the COCO base classes of the fold, so no tested class was seen in training.
    """
    seen = {COCO_CLASSES[c - 1] for c in base_classes("coco", fold, scheme)}
    return [
        i + 1
        for i, name in enumerate(PASCAL_CLASSES)
        if _PASCAL_TO_COCO_NAME.get(name, name) not in seen
    ]
