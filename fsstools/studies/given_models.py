"""Base models given instead of trained: the notebooks' ``checkpoints`` parameter.

A notebook given ``checkpoints`` scores those models and trains none. The value is either
the folder where the RePRI authors' archive was unpacked (it holds ``model_ckpt/``; their
PASCAL-5i or COCO-20i model of each fold, :func:`fsstools.models.checkpoints.authors_checkpoints`)
or a path with ``{fold}``, one checkpoint per fold (``runs/pascal-fold{fold}/best.pt``). The
fold guard applies to them as to trained ones: our checkpoints record their classes, and the
authors' files lie under a path that names their split.

Notebook 01 shows the base-class validation scores of its models; for a given model there is
no training history, so :func:`base_validation` computes them on the training config's
validation list at its validation size.

Example:
    >>> resolve("runs/fold{fold}/best.pt", "synth", "small", [0])  # doctest: +SKIP
    {0: PosixPath('/work/runs/fold0/best.pt')}
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fsstools import paths
from fsstools.errors import ConfigError, MissingError
from fsstools.models.checkpoints import AUTHORS_LAYOUT, authors_checkpoints, read_checkpoint

FOLD_FIELD = "{fold}"
AUTHORS_DATASETS = ("pascal", "coco")
"""The data sets the authors' archive holds models of."""


def resolve(spec: str, dataset: str, arch: str, folds: Sequence[int],
            parameter: str = "checkpoints") -> dict[int, Path]:
    """The checkpoint of each fold of ``folds`` that ``spec`` names.

    Args:
        spec: a path with ``{fold}``, or the folder holding the authors' ``model_ckpt/``,
            or one checkpoint file for every fold (relative: to the working folder).
        dataset: the data set the models were trained on ("pascal", "coco", ...).
        arch: the trunk to take from the authors' archive (``pspnet_<arch>``).
        folds: the folds that need a model.
        parameter: the notebook parameter named in messages.

    Returns:
        fold -> absolute checkpoint path, for every fold of ``folds``.

    Raises:
        MissingError: a fold's file, or the folder, does not exist.
        ConfigError: a folder for a data set the authors' archive does not cover.
        DataError: a file of the archive that is not the model its folder names.
    """
    if FOLD_FIELD in spec:
        found = {f: paths.resolve(spec.format(fold=f)) for f in folds}
        for fold, path in found.items():
            if not path.is_file():
                raise MissingError(f"parameter {parameter}: {path} (fold {fold}) does not exist; "
                                   "give one checkpoint per fold, {fold} standing for the fold")
        return found
    folder = paths.resolve(spec)
    if folder.is_file():  # one checkpoint for every fold: the fold guard judges each use
        return {f: folder for f in folds}
    if not folder.is_dir():
        raise MissingError(f"parameter {parameter}: {folder} is not a folder; give the folder "
                           "where the authors' archive was unpacked (it holds model_ckpt/), or "
                           "a checkpoint path with {fold}")
    if dataset not in AUTHORS_DATASETS:
        raise ConfigError(f"parameter {parameter}: {folder} is read as the authors' archive, "
                          f"which holds PASCAL and COCO models, not {dataset} ones; give one "
                          "checkpoint per fold with {fold} in the path", key=parameter)
    archive = authors_checkpoints(folder, dataset, arch)
    missing = [f for f in folds if f not in archive]
    if missing:
        where = AUTHORS_LAYOUT.format(dataset=dataset, fold=missing[0], arch=arch)
        raise MissingError(f"parameter {parameter}: the authors' archive under {folder} has no "
                           f"model of fold(s) {', '.join(map(str, missing))} (no {where}); "
                           "unpack the whole archive or leave those folds out")
    return {f: archive[f] for f in folds}


def attach(prof: Any, spec: str, train: Any, folds: Sequence[int],
           base_seeds: Sequence[int] = (0,)) -> Any:
    """``prof`` (a :class:`fsstools.studies.profiles.Profile`) with the models ``spec`` gives
    for ``folds``, said in one line, which also says when several base seeds collapse to the
    one model of each fold.

    Args:
        train: the fold's training config (its ``model.arch`` picks the authors' models).

    Raises:
        MissingError, ConfigError, DataError: see :func:`resolve`.
    """
    found = resolve(spec, prof.train_dataset, train.model.arch, folds)
    line = given_line(found)
    if len(base_seeds) > 1:
        line += (f"; base seeds {list(base_seeds)} collapse to one model per fold, scored as "
                 f"base seed {base_seeds[0]}")
    print(line)
    return dataclasses.replace(prof, checkpoints=found)


def given_line(folds: Sequence[int], what: str = "base models") -> str:
    """The line that says which folds' models are given, so that none is trained."""
    return f"{what} given for fold(s) {', '.join(map(str, folds))} (nothing is trained)"


def checkpoint_epoch(path: Path) -> float:
    """The epoch a checkpoint file records (ours and the authors' both keep one), else NaN."""
    ckpt = read_checkpoint(path, mmap=True)
    epoch = ckpt.get("epoch") if isinstance(ckpt, dict) else None
    return float(epoch) if isinstance(epoch, int | float) else float("nan")


@functools.lru_cache(maxsize=16)
def base_validation(checkpoint: Path, data: Any, device: str = "cpu",
                    batch_size: int = 8) -> dict[str, Any]:
    """Base-class segmentation IoU of a given model on ``data``'s validation list.

    Computed once per checkpoint and data config in a session (notebook 01 reads it for its
    table and its per-class scores).

    Args:
        checkpoint: a base model whose classifier has the base classes of ``data.fold`` + 1
            outputs, in the order of :func:`fsstools.data.datasets.base_label_map`.
        data: the :class:`fsstools.training.DataConfig` of the fold's training config (its
            root, val_list, val_size, dataset, fold and scheme are read).
        device: where the model runs.

    Returns:
        ``miou`` (background included), ``miou_fg`` (base classes), ``class_iou`` (label
        order, background first), as :func:`fsstools.training.validate` gives them.
    """
    import torch
    from torch.utils.data import DataLoader

    from fsstools.data.datasets import BaseTrainDataset
    from fsstools.data.transforms import TestTransform
    from fsstools.models.checkpoints import load_model
    from fsstools.training import validate

    val = BaseTrainDataset(data.root, data.val_list, data.dataset, data.fold, data.scheme,
                           transform=TestTransform(data.val_size), min_fg=data.min_fg)
    model = load_model(checkpoint, device)
    if getattr(model, "n_classes", None) != val.n_base + 1:
        raise ConfigError(f"checkpoint {checkpoint} has {getattr(model, 'n_classes', '?')} "
                          f"outputs, but {data.dataset} fold {data.fold} has {val.n_base} base "
                          "classes + background: give that fold's base model")
    loader = DataLoader(val, batch_size=batch_size, shuffle=False)
    return validate(model, loader, val.n_base + 1, torch.device(device))
