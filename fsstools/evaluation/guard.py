"""The fold guard: a checkpoint is never scored on classes it saw in training.

A few-shot score means something only when the tested (novel) classes were never seen in
base training. Our checkpoints, base models and episodic peers alike, record the classes
they were trained on (``classes``, ids of the training data set) and their training config
(``config``); :func:`check_disjoint` compares them with the classes of the tasks about to
be scored: by id on the same data set, by name across data sets (a COCO-trained model
tested on PASCAL: PASCAL's sofa is COCO's couch, as in
:func:`fsstools.data.splits.coco_to_pascal_classes`). A reference RePRI/PFENet state dict
records neither, so it goes through with a warning.

Example:
    >>> seen_classes("coco", [1, 2, 3], "pascal", [2, 15, 18])  # bicycle, person, sofa
    [2, 15]
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from fsstools.data import splits
from fsstools.errors import ConfigError, ConflictError
from fsstools.models.checkpoints import authors_split, read_checkpoint

if TYPE_CHECKING:
    from fsstools.data.episodes import EpisodeList


class Trained(NamedTuple):
    """What a checkpoint was trained on.

    Attributes:
        dataset: the training data set's class table ("synth", "pascal" or "coco").
        classes: the base class ids, in that data set's ids.
        fold: the training fold, None when the config does not say.
    """

    dataset: str
    classes: list[int]
    fold: int | None


def trained_classes(checkpoint: str | Path) -> Trained | None:
    """The classes ``checkpoint`` was trained on, or None when it records none (a reference
    RePRI/PFENet state dict, or a hand-made checkpoint).

    A file of the authors' archive records none, but its path names its split
    (:func:`fsstools.models.checkpoints.authors_split`): the base classes of that split.

    Raises:
        MissingError, DataError: the file is missing or cannot be read.
    """
    ckpt = read_checkpoint(checkpoint, mmap=True)
    if not isinstance(ckpt, dict) or "classes" not in ckpt:
        split = authors_split(checkpoint)
        if split is None:
            return None
        dataset, fold = split
        return Trained(dataset, splits.base_classes(dataset, fold), fold)
    config = ckpt.get("config")
    data = config.get("data") if isinstance(config, dict) else None
    if not isinstance(data, dict) or "dataset" not in data:
        return None
    fold = data.get("fold")
    return Trained(str(data["dataset"]), [int(c) for c in ckpt["classes"]],
                   None if fold is None else int(fold))


def tested_classes(lists: Iterable[EpisodeList]) -> list[int]:
    """The classes the episodes of ``lists`` test, sorted (from the episodes themselves, so
    sampled lists, episode files and COCO -> PASCAL lists alike)."""
    return sorted({ep.class_id for el in lists for ep in el.episodes})


def seen_classes(train_dataset: str, train_classes: Iterable[int], test_dataset: str,
                 test_classes: Iterable[int]) -> list[int]:
    """The test classes (ids of ``test_dataset``) that training saw, sorted.

    The same data set compares ids; two data sets compare class names in COCO's spelling.
    """
    if train_dataset == test_dataset:
        return sorted(set(test_classes) & set(train_classes))
    seen = {_common_name(train_dataset, c) for c in train_classes}
    return sorted(c for c in set(test_classes) if _common_name(test_dataset, c) in seen)


def _common_name(dataset: str, class_id: int) -> str:
    name = splits.class_name(dataset, class_id)
    if dataset != "pascal":
        return name
    # splits' own PASCAL -> COCO spelling (sofa -> couch), the rule of coco_to_pascal_classes;
    # read, not copied, and not made public there: an edit of splits.py would change the
    # code version of training and so the key of every cached base model.
    return splits._PASCAL_TO_COCO_NAME.get(name, name)


def check_disjoint(
    checkpoint: str | Path,
    test_dataset: str,
    test_classes: Iterable[int],
    fold: int,
    what: Literal["evaluate", "extract"] = "evaluate",
) -> None:
    """Refuse to score ``checkpoint`` on classes it was trained on.

    A checkpoint that records no training classes is let through with a warning.

    Args:
        checkpoint: the model whose features would be scored.
        test_dataset: class table of ``test_classes``.
        test_classes: the classes of the tasks to score.
        fold: the fold those tasks come from (named in the message and the fix).
        what: the command whose options the fix names.

    Raises:
        ConflictError: naming the fold, the checkpoint, the classes both hold and the fix.
    """
    trained = trained_classes(checkpoint)
    if trained is None:
        warnings.warn(f"checkpoint {checkpoint} records no training classes (a reference "
                      f"state dict?): fold {fold}'s test classes cannot be checked against "
                      "them", stacklevel=2)
        return
    seen = seen_classes(trained.dataset, trained.classes, test_dataset, test_classes)
    if not seen:
        return
    names = ", ".join(f"{c} ({splits.class_name(test_dataset, c)})" for c in seen)
    origin = "" if trained.fold is None else f" {trained.dataset} fold {trained.fold}'s"
    raise ConflictError(
        f"fold {fold}: checkpoint {checkpoint} was trained on{origin} base classes, which "
        f"include {len(seen)} of the {test_dataset} classes fold {fold} tests: {names}; a "
        f"score on classes seen in training is no few-shot score. Score fold {fold} with a "
        f"checkpoint trained on fold {fold}'s base classes: {_fix(trained.dataset, fold, what)}"
    )


def _fix(train_dataset: str, fold: int, what: str) -> str:
    config = f"configs/{train_dataset}/fold{fold}.yaml"
    run = f"<best.pt of a {train_dataset} fold {fold} run>"
    if what == "extract":
        return f"--checkpoint {run} (train one with `fsstools train --config {config}`)"
    return f"--set checkpoint={run}, or --set checkpoint=null --set train_config={config}"


def check_train_split(dataset: str, fold: int, scheme: str, coco_to_pascal: bool,
                      train_config: str, train_overrides: Sequence[str], trained: Any) -> None:
    """The training config trains the split an evaluation tests: the fold is given once, by
    the eval config's ``fold``, and the base model must not see that fold's novel classes.

    Args:
        dataset, fold, scheme, coco_to_pascal: what the evaluation tests.
        train_config, train_overrides: the training config behind its checkpoint.
        trained: that config's ``data`` (dataset, fold, scheme).

    Raises:
        ConfigError: naming both folds (or data sets, or COCO schemes), the training config
            and the fix.
    """
    train_set = "coco" if coco_to_pascal else dataset
    want = scheme if train_set == "coco" else trained.scheme  # the scheme splits COCO only
    if (trained.dataset, trained.fold, trained.scheme) == (train_set, fold, want):
        return
    way = f"--set train_config=configs/{train_set}/fold{fold}.yaml"
    if trained.dataset == train_set:  # the same data set: overrides can fix it too
        fix = [o for o in train_overrides if not o.startswith(("data.fold=", "data.scheme="))]
        fix.append(f"data.fold={fold}")
        if trained.scheme != want:
            fix.append(f"data.scheme={want}")
        way += f", or --set train_overrides=[{', '.join(fix)}]"
    raise ConfigError(
        f"{dataset} fold {fold} is evaluated but train_config {train_config} trains "
        f"{_split_name(trained.dataset, trained.fold, trained.scheme)}: the fold is given once "
        f"(fold={fold}) and the training config must train {_split_name(train_set, fold, want)}"
        f", else the base model may see classes fold {fold} tests; {way}",
        key="train_config",
    )


def _split_name(dataset: str, fold: int, scheme: str) -> str:
    return f"{dataset} fold {fold}" + (f" ({scheme} scheme)" if dataset == "coco" else "")
