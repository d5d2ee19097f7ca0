"""Class splits: which classes each fold trains on (base) and tests on (novel).

PASCAL-5i fold i tests classes 5i+1 .. 5i+5. COCO-20i has two schemes: ``interleaved``
(fold i tests i+1, i+5, ..., i+77; the common default) and ``contiguous`` (20i+1 .. 20i+20).
The synthetic benchmark has 20 classes of its own and PASCAL's folds. Class ids start at 1;
0 is background.
"""

from __future__ import annotations

from typing import Literal, get_args

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

Dataset = Literal["pascal", "coco", "synth"]
"""Class tables (and test splits) this module knows."""
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
    if not isinstance(fold, int) or isinstance(fold, bool) or not 0 <= fold < N_FOLDS:
        raise ConfigError(f"unknown fold {fold!r}; valid folds: 0, 1, 2, 3")


def class_names(dataset: str) -> tuple[str, ...]:
    """Names of the classes of ``dataset``; class id ``i + 1`` has name ``[i]``."""
    check_split(dataset, 0, SCHEMES[0])
    if dataset == "synth":
        return tuple(synth_classes.class_names())
    return COCO_CLASSES if dataset == "coco" else PASCAL_CLASSES


def class_name(dataset: str, class_id: int) -> str:
    """Display name of a class id of ``dataset`` (0: background)."""
    return "background" if class_id == 0 else class_names(dataset)[class_id - 1]


def n_classes(dataset: str) -> int:
    """Number of object classes (background excluded): 20 for pascal and synth, 80 for coco."""
    return len(class_names(dataset))


def test_classes(dataset: str, fold: int, scheme: str = "interleaved") -> list[int]:
    """Novel classes of ``fold``, sorted.

    Args:
        dataset: "pascal", "coco" or "synth".
        fold: 0..3.
        scheme: COCO-20i scheme, "interleaved" or "contiguous". PASCAL-5i (and synth) has a
            single split, so the scheme is checked but otherwise ignored there.
    """
    check_split(dataset, fold, scheme)
    total = n_classes(dataset)
    per_fold = total // N_FOLDS
    if dataset == "coco" and scheme == "interleaved":
        return list(range(fold + 1, total + 1, N_FOLDS))
    return list(range(per_fold * fold + 1, per_fold * (fold + 1) + 1))


test_classes.__test__ = False  # a library function, not a pytest test, when imported by tests


def base_classes(dataset: str, fold: int, scheme: str = "interleaved") -> list[int]:
    """Classes ``fold`` trains on, sorted; base training relabels them 1..n in this order."""
    novel = set(test_classes(dataset, fold, scheme))
    return [c for c in range(1, n_classes(dataset) + 1) if c not in novel]


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
