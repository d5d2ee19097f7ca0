"""The generalized few-shot protocol (DIaM's): support sets, features, scores per run.

Per fold, shot count and run, one support set (``shots`` images per novel class, each
holding that novel class only; :mod:`fsstools.data.generalized`) serves every other image of
the test list that holds an object: the queries, labelled with all their classes. The
classifier is the fold's CE base model's own (background + base classes in its order) with
one weight per novel class appended; DIaM fits it per query (:mod:`fsstools.inference.
generalized`). Every class's intersection and union is summed over the run's queries
(:mod:`fsstools.evaluation.generalized_scoring`); base mIoU, novel mIoU, their mean and
harmonic mean, and intervals over runs and base seeds, come from
:mod:`fsstools.evaluation.generalized_stats`.

DIaM reads the features as the model gives them (the authors' code does not normalise
them), so they are cached apart from the unit-length features of the binary protocol
(``FeatureSettings(normalize=False)``), once per checkpoint for every shot count, run and
method. Scores are cached per (method, shots, run) under a key of the features, the support
draw, the method's settings, the device type and the scoring code.

Example:
    >>> study = prepare(checkpoint, "data/synth/A", "lists/val.txt", "synth", fold=0,
    ...                 shots=[1, 5], size=128)  # doctest: +SKIP
    >>> rows = score(study, {"diam": GFSS_METHODS["diam"]})  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from fsstools import config as config_lib
from fsstools import paths
from fsstools.cache import atomic_write_text
from fsstools.data import splits
from fsstools.data.generalized import SupportDraw, SupportSettings, draw_supports
from fsstools.errors import ConfigError, ConflictError
from fsstools.evaluation import generalized_stats as gstats
from fsstools.evaluation import guard
from fsstools.evaluation.config import CONFIG_NAME, EvalConfig
from fsstools.evaluation.generalized_config import GFSSEvalConfig, results_dir
from fsstools.evaluation.generalized_scoring import (
    BASE_MODEL as BASE_MODEL,
)
from fsstools.evaluation.generalized_scoring import (
    BaseClassifier,
    predict_queries,
    run_inputs,
    score_run,
    scores_key,
)
from fsstools.evaluation.pipeline import resolve_checkpoint
from fsstools.evaluation.views import QueryView, display_image
from fsstools.features import FeatureSettings, FeatureStore, ensure_features
from fsstools.inference.generalized import GFSSConfig
from fsstools.models.checkpoints import load_model, read_checkpoint
from fsstools.models.pspnet import PSPNet

Methods = Mapping[str, GFSSConfig | None]
"""Label -> method; None is the base model alone (:data:`BASE_MODEL`)."""


@dataclass(frozen=True)
class GFSSStudy:
    """Support draws and cached features of one fold's generalized evaluation.

    Attributes:
        checkpoint: the fold's base model; classifier: its 1x1 classifier.
        draws: shots -> the support sets of every run.
        store: unnormalised features of every image with an object.
        dataset, fold, size, device: what is scored and where.
    """

    checkpoint: Path
    classifier: BaseClassifier
    draws: dict[int, SupportDraw]
    store: FeatureStore
    dataset: str
    fold: int
    size: int
    device: str = "cpu"


def base_classifier(checkpoint: str | Path, dataset: str, fold: int,
                    scheme: str = "interleaved", root: str | Path | None = None
                    ) -> BaseClassifier:
    """The 1x1 classifier of a base PSPNet and the base classes of its outputs (recorded in
    our checkpoints; a reference state dict records none: the fold's base classes in id
    order, the order of the reference's relabelling).

    Raises:
        ConfigError: the checkpoint holds another model (an episodic peer), or a classifier
            whose size is not 1 + the fold's base classes.
    """
    model = load_model(checkpoint)
    if not isinstance(model, PSPNet):
        raise ConfigError(f"checkpoint {checkpoint} holds a {type(model).__name__}; the "
                          "generalized protocol extends a base PSPNet's classifier: give the "
                          "best.pt of a base training run", key="checkpoint")
    ckpt = read_checkpoint(checkpoint)
    recorded = ckpt.get("classes") if isinstance(ckpt, dict) else None
    classes = ([int(c) for c in recorded] if recorded is not None
               else splits.base_classes(dataset, fold, scheme, root))
    weight = model.classifier.weight.detach()[:, :, 0, 0].float().cpu()  # (K_b, C)
    if weight.shape[0] != len(classes) + 1:
        raise ConfigError(f"checkpoint {checkpoint} has {weight.shape[0]} outputs but fold "
                          f"{fold} has {len(classes)} base classes (+ background); give the "
                          f"base model of fold {fold}", key="checkpoint")
    return BaseClassifier(weight, model.classifier.bias.detach().float().cpu(), tuple(classes))


def prepare(
    checkpoint: str | Path,
    root: str | Path,
    list_file: str,
    dataset: str,
    fold: int,
    shots: Sequence[int],
    size: int,
    n_runs: int = 5,
    seed: int = 0,
    scheme: str = "interleaved",
    min_fg: int | None = None,
    max_queries: int | None = None,
    device: str = "cpu",
    feature_dtype: str = "float32",
    progress: bool = True,
    force: bool = False,
) -> GFSSStudy:
    """Support sets of every shot count and run, the fold guard, the base classifier and
    the unnormalised features of the list's images with an object (all cached).

    Args:
        max_queries: queries per run, a seeded subset (None: all; see
            :class:`fsstools.data.generalized.SupportSettings`).

    Raises:
        ConflictError: a checkpoint trained on classes the fold tests.
        DataError: too few support candidates (:func:`fsstools.data.generalized.draw_supports`).
    """
    tic = time.perf_counter()
    draws = {k: draw_supports(root, list_file, SupportSettings(
        dataset, fold, k, n_runs, seed, scheme, min_fg, max_queries), force=force) for k in shots}
    first = next(iter(draws.values()))
    guard.check_disjoint(checkpoint, dataset, first.novel, fold)
    classifier = base_classifier(checkpoint, dataset, fold, scheme, root)
    store = ensure_features(checkpoint, root, list(first.images), dataset,
                            FeatureSettings(size, feature_dtype, normalize=False),
                            device=device, progress=progress, force=force)
    if progress:
        print(f"fold {fold}: {n_runs} support set(s) per shot count {list(shots)}, features "
              f"of {len(store.index)} images ready ({time.perf_counter() - tic:.1f} s)",
              flush=True)
    return GFSSStudy(Path(checkpoint), classifier, draws, store, dataset, fold, size, device)


def score(study: GFSSStudy, methods: Methods, batch_queries: int | None = None,
          progress: bool = True, force: bool = False) -> pd.DataFrame:
    """Score every method on every run of every shot count, reading cached scores if any.

    Returns:
        Per (method, shots, run) one row per class: method, fold, shots, run, class_index,
        class_id, kind ("background", "base", "novel"), inter, union, target.
    """
    frames = []
    for shots, draw in study.draws.items():
        for label, method in methods.items():
            tic, reused = time.perf_counter(), 0
            for run in range(len(draw.runs)):
                key = scores_key(study.store.key, draw.hash, run, method, study.device)
                path = paths.cache_dir("gfss_scores") / f"{key}.csv"
                if path.is_file() and not force:
                    reused += 1
                else:
                    rows = score_run(study.store, draw, run, study.classifier, method,
                                     study.device, batch_queries)
                    atomic_write_text(path, rows.to_csv(index=False))
                rows = pd.read_csv(path)  # the same dtypes and values as a cached read
                frames.append(rows.assign(method=label, fold=study.fold, shots=shots, run=run))
            if progress:
                where = (f"reused from {paths.cache_dir('gfss_scores')}" if reused == len(draw.runs)
                         else f"{time.perf_counter() - tic:.1f} s")
                print(f"  fold {study.fold} {label} {shots}-shot: {len(draw.runs)} runs ({where})",
                      flush=True)
    rows = pd.concat(frames, ignore_index=True)
    first = ["method", "fold", "shots", "run"]
    return rows[first + [c for c in rows.columns if c not in first]]


def richest_query(store: FeatureStore, draw: SupportDraw, run: int) -> int:
    """Store row of the run's query holding the most classes (then the most novel ones)."""
    best, best_row = (-1, -1), -1
    novel = set(draw.novel)
    for img, _ in draw.queries(run):
        row = store.index[img]
        ids = set(np.unique(store.masks_full[row]).tolist()) - {0, 255}
        rank = (len(ids), len(ids & novel))
        if rank > best:
            best, best_row = rank, row
    return best_row


def query_view(study: GFSSStudy, shots: int, methods: Methods, run: int = 0,
               row: int | None = None) -> QueryView:
    """Each method's prediction on one query (default :func:`richest_query`) of a run. DIaM
    fits each query on its own, so these are the very predictions the scores counted."""
    draw = study.draws[shots]
    row = richest_query(study.store, draw, run) if row is None else row
    inputs = run_inputs(study.store, draw, run, study.classifier, study.device)
    to_ids = torch.tensor([*inputs.classes, 255], device=study.device)
    predictions, target = {}, None
    for label, method in methods.items():
        pred, target = predict_queries(study.store, inputs, np.array([row]), method,
                                       study.device)
        valid = torch.tensor(np.asarray(study.store.valid_full[row]), device=study.device)
        predictions[label] = to_ids[torch.where(valid, pred[0], -1)].cpu().numpy()
    img = next(name for name, r in study.store.index.items() if r == row)
    mask = dict(draw.images)[img]
    image = display_image(draw.root, img, mask, study.dataset, study.size)
    ids = to_ids[torch.where(target[0] == 255, -1, target[0])].cpu().numpy()
    names = {c: splits.class_name(study.dataset, c, draw.root) for c in inputs.classes}
    return QueryView(image, ids, predictions, names, draw.base, draw.novel, img, shots, run)


@dataclass(frozen=True)
class GFSSResults:
    """What :func:`run_generalized` computed and where it saved it."""

    rows: pd.DataFrame
    summary: pd.DataFrame
    out_dir: Path


def run_generalized(cfg: GFSSEvalConfig, progress: bool = True, force: bool = False
                    ) -> GFSSResults:
    """Run ``cfg`` end to end (``fsstools evaluate`` with ``protocol: generalized``): the
    base model (trained if needed, the fold guard), support sets, features, every method on
    every run, then per-class rows (classes_per_run.csv), per-run scores (runs.csv), the
    summary with intervals (summary.csv) and the resolved config, into
    :func:`~fsstools.evaluation.generalized_config.results_dir`.

    Raises:
        ConflictError: an explicit ``out_dir`` holding another configuration's results.
    """
    out = results_dir(cfg)
    saved = out / CONFIG_NAME
    if cfg.out_dir and saved.is_file():
        before = yaml.safe_load(saved.read_text()) or {}
        differ = sorted(k for k, v in config_lib.to_dict(cfg).items() if before.get(k) != v)
        if differ:
            raise ConflictError(f"out_dir {out} holds the results of another configuration (it "
                                f"differs in {', '.join(differ)}); choose another out_dir, or "
                                "leave it unset to get a folder per configuration")
    checkpoint = resolve_checkpoint(EvalConfig(
        dataset=cfg.dataset, root=cfg.root, list_file=cfg.list_file, fold=cfg.fold,
        scheme=cfg.scheme, size=cfg.size, checkpoint=cfg.checkpoint,
        train_config=cfg.train_config, train_overrides=cfg.train_overrides, device=cfg.device),
        force)
    study = prepare(checkpoint, cfg.root, cfg.list_file, cfg.dataset, cfg.fold, cfg.shots,
                    cfg.size, cfg.n_runs, cfg.seed, cfg.scheme, max_queries=cfg.n_queries or None,
                    device=cfg.device, feature_dtype=cfg.feature_dtype, progress=progress,
                    force=force)
    rows = score(study, cfg.method_configs(), progress=progress, force=force)
    summary = gstats.summarize(rows, n_boot=cfg.n_boot)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "classes_per_run.csv", rows.to_csv(index=False))
    atomic_write_text(out / "runs.csv", gstats.run_scores(rows).to_csv(index=False))
    atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    config_lib.save_yaml(cfg, saved)
    meta = {"checkpoint": str(checkpoint), "features": study.store.key,
            "support_draws": {f"{k}shot": d.hash for k, d in study.draws.items()}}
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2))
    return GFSSResults(rows, summary, out)
