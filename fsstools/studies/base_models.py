"""The base models of a profile as tables (notebook 01): training histories, the selected
checkpoint of each fold and base seed, and its base-class validation IoU per class.

A trained model's numbers come from its run (``metrics.csv`` and the checkpoint's record). A
given model (the notebooks' ``checkpoints``) has no training history; its base-class
validation scores are computed on the fold's validation list
(:func:`fsstools.studies.given_models.base_validation`), and the columns only training knows
(epochs run, last-epoch gain, training time) are empty.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fsstools.data import splits
from fsstools.models.checkpoints import checkpoint_meta
from fsstools.studies import given_models
from fsstools.studies.profiles import Profile, run_dir, train_config

HISTORY_COLUMNS = ("epoch", "train_loss", "val_miou", "val_miou_fg", "time_s", "fold",
                   "base_seed")
"""The columns of an empty history (given models: nothing was trained)."""


def _runs(prof: Profile, folds: Sequence[int], base_seeds: Sequence[int]
          ) -> Iterator[tuple[int, int, Path]]:
    for fold in folds:
        for seed in prof.model_seeds(base_seeds):
            yield fold, seed, run_dir(prof, fold, seed)


def training_history(prof: Profile, folds: Sequence[int],
                     base_seeds: Sequence[int] = (0,)) -> pd.DataFrame:
    """metrics.csv of the folds' base-training runs, with ``fold`` and ``base_seed``
    columns; empty (:data:`HISTORY_COLUMNS`) with given models."""
    if prof.checkpoints is not None:
        return pd.DataFrame(columns=list(HISTORY_COLUMNS))
    return pd.concat([pd.read_csv(run / "metrics.csv").assign(fold=f, base_seed=s)
                      for f, s, run in _runs(prof, folds, base_seeds)], ignore_index=True)


def _given(prof: Profile, fold: int) -> dict[str, Any]:
    """What the table needs of a given model: its epoch, validation metrics, classes."""
    path = prof.checkpoints[fold]
    data = train_config(prof, fold).data
    metrics = given_models.base_validation(path, data)
    return {"epoch": given_models.checkpoint_epoch(path), "val_miou": metrics["miou"],
            "val_miou_fg": metrics["miou_fg"], "val_class_iou": metrics["class_iou"],
            "classes": splits.base_classes(data.dataset, fold, data.scheme, data.root)}


def _selected(prof: Profile, folds: Sequence[int], base_seeds: Sequence[int]
              ) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """(fold, base seed, record of the selected checkpoint) of every model of the profile."""
    if prof.checkpoints is not None:
        for fold in folds:
            yield fold, prof.model_seeds(base_seeds)[0], _given(prof, fold)
        return
    for fold, seed, run in _runs(prof, folds, base_seeds):
        meta = checkpoint_meta(run / "best.pt")
        yield fold, seed, {"epoch": meta["epoch"], "classes": meta["classes"],
                           "precision": meta["config"]["run"]["amp"],
                           **{k: meta["metrics"][k]
                              for k in ("val_miou", "val_miou_fg", "val_class_iou")}}


def base_class_scores(prof: Profile, folds: Sequence[int],
                      base_seeds: Sequence[int] = (0,)) -> pd.DataFrame:
    """Base-class validation IoU of each fold's (and base seed's) selected checkpoint.

    Returns:
        One row per fold, base seed and class (background included, class_id 0): fold,
        base_seed, epoch, class_id, name, iou.
    """
    rows = []
    for fold, seed, rec in _selected(prof, folds, base_seeds):
        classes = [0, *rec["classes"]]  # position k of the IoU list is relabelled class k
        for cls, iou in zip(classes, rec["val_class_iou"], strict=True):
            rows.append({"fold": fold, "base_seed": seed, "epoch": rec["epoch"],
                         "class_id": cls, "name": splits.class_name(prof.train_dataset, cls,
                                                               prof.data_root),
                         "iou": float(iou)})
    return pd.DataFrame(rows)


def base_model_table(prof: Profile, folds: Sequence[int],
                     base_seeds: Sequence[int] = (0,)) -> pd.DataFrame:
    """Per fold and base seed: epochs run, selected epoch, its base-class validation mIoU
    (with and without background), the gain of the last epoch, the training precision and
    time (NaN where a given model has no training record)."""
    history = training_history(prof, folds, base_seeds)
    rows = []
    for fold, seed, rec in _selected(prof, folds, base_seeds):
        hist = history[(history["fold"] == fold) & (history["base_seed"] == seed)]
        hist = hist.sort_values("epoch")
        val = hist["val_miou"].dropna().to_numpy(dtype=float)
        rows.append({
            "fold": fold,
            "base_seed": seed,
            "epochs": int(hist["epoch"].max()) if len(hist) else np.nan,
            "selected_epoch": rec["epoch"],
            "val_miou": rec["val_miou"],
            "val_miou_base_classes": rec["val_miou_fg"],
            "last_epoch_gain_points": 100 * (val[-1] - val[-2]) if len(val) > 1 else np.nan,
            "precision": rec.get("precision", "fp32"),
            "train_minutes": float(hist["time_s"].sum()) / 60 if len(hist) else np.nan,
        })  # fmt: skip
    return pd.DataFrame(rows)
