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
method. When the queries' features would take more than ``feature_cache_gb`` on disk
(COCO-20i), only the supports' are cached and the queries' are extracted while scoring
(:mod:`fsstools.evaluation.generalized_stream`), with the same counts. Scores are cached per
(method, shots, run) under a key of the features (or of the streamed queries: checkpoint,
images, feature settings, with the supports' features), the support draw, the method's
settings, the device type and the scoring code.

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
from fsstools.evaluation.config import CONFIG_NAME
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
from fsstools.evaluation.generalized_stream import (
    FEATURE_CACHE_GB,
    QueryStream,
    StreamJob,
    cache_bytes,
    open_stream,
    richest_listed_query,
    score_streamed,
    support_images,
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
        store: unnormalised features of every image with an object; with ``stream``, of
            the supports only.
        dataset, fold, size, device: what is scored and where.
        stream: what extracts the queries' features while scoring (None: they are cached
            in ``store``).
    """

    checkpoint: Path
    classifier: BaseClassifier
    draws: dict[int, SupportDraw]
    store: FeatureStore
    dataset: str
    fold: int
    size: int
    device: str = "cpu"
    stream: QueryStream | None = None

    @property
    def features_key(self) -> str:
        """Key of the features the scores read: the store's, or the stream's."""
        return self.store.key if self.stream is None else self.stream.key


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
    feature_cache_gb: float = FEATURE_CACHE_GB,
    progress: bool = True,
    force: bool = False,
) -> GFSSStudy:
    """Support sets of every shot count and run, the fold guard, the base classifier and
    the unnormalised features of the list's images with an object (all cached), or of the
    supports only when the queries' would take more than ``feature_cache_gb``.

    Args:
        max_queries: queries per run, a seeded subset (None: all; see
            :class:`fsstools.data.generalized.SupportSettings`).
        feature_cache_gb: the most disk (GB) the queries' features may take (estimated by
            :func:`~fsstools.evaluation.generalized_stream.cache_bytes`); past it they are
            extracted a block at a time while scoring, never written, and the decision is
            printed.

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
    settings = FeatureSettings(size, feature_dtype, normalize=False)
    need = cache_bytes(len(first.images), classifier.weight.shape[1], size, feature_dtype)
    streamed = need > feature_cache_gb * 1e9
    pairs = support_images(list(draws.values())) if streamed else list(first.images)
    if progress and streamed:
        print(f"fold {fold}: the features of {len(first.images)} queries would take "
              f"{need / 1e9:.1f} GB, over feature_cache_gb={feature_cache_gb:g}: only the "
              f"{len(pairs)} supports' are cached, the queries' are extracted while scoring",
              flush=True)
    store = ensure_features(checkpoint, root, pairs, dataset, settings, device=device,
                            progress=progress, force=force)
    stream = (open_stream(Path(checkpoint), root, first.images, dataset, settings, store.key,
                          device) if streamed else None)
    if progress:
        print(f"fold {fold}: {n_runs} support set(s) per shot count {list(shots)}, features "
              f"of {len(store.index)} images ready ({time.perf_counter() - tic:.1f} s)",
              flush=True)
    return GFSSStudy(Path(checkpoint), classifier, draws, store, dataset, fold, size, device,
                     stream)


def score(study: GFSSStudy, methods: Methods, batch_queries: int | None = None,
          progress: bool = True, force: bool = False) -> pd.DataFrame:
    """Score every method on every run of every shot count, reading cached scores if any.

    With a :attr:`GFSSStudy.stream`, every score not cached comes from one pass over the
    queries (:func:`~fsstools.evaluation.generalized_stream.score_streamed`).

    Returns:
        Per (method, shots, run) one row per class: method, fold, shots, run, class_index,
        class_id, kind ("background", "base", "novel"), inter, union, target.
    """
    folder = paths.cache_dir("gfss_scores")
    where = {(shots, label, run): folder / (scores_key(study.features_key, draw.hash, run,
                                                       method, study.device) + ".csv")
             for shots, draw in study.draws.items() for label, method in methods.items()
             for run in range(len(draw.runs))}
    todo = {job for job, path in where.items() if force or not path.is_file()}
    if study.stream is not None and todo:
        tic = time.perf_counter()
        _score_streamed(study, methods, sorted(todo, key=list(where).index), batch_queries,
                        where, progress)
        if progress:
            print(f"  fold {study.fold}: {len(todo)} (method, shots, run) scored in one pass "
                  f"over the queries ({time.perf_counter() - tic:.1f} s)", flush=True)
    frames = []
    for shots, draw in study.draws.items():
        for label, method in methods.items():
            tic = time.perf_counter()
            for run in range(len(draw.runs)):
                path = where[shots, label, run]
                if (shots, label, run) in todo and study.stream is None:
                    rows = score_run(study.store, draw, run, study.classifier, method,
                                     study.device, batch_queries)
                    atomic_write_text(path, rows.to_csv(index=False))
                rows = pd.read_csv(path)  # the same dtypes and values as a cached read
                frames.append(rows.assign(method=label, fold=study.fold, shots=shots, run=run))
            if progress:
                fresh = any((shots, label, run) in todo for run in range(len(draw.runs)))
                took = ("streamed" if study.stream is not None
                        else f"{time.perf_counter() - tic:.1f} s")
                print(f"  fold {study.fold} {label} {shots}-shot: {len(draw.runs)} runs "
                      f"({took if fresh else f'reused from {folder}'})", flush=True)
    rows = pd.concat(frames, ignore_index=True)
    first = ["method", "fold", "shots", "run"]
    return rows[first + [c for c in rows.columns if c not in first]]


def _score_streamed(study: GFSSStudy, methods: Methods, todo: list[tuple[int, str, int]],
                    batch_queries: int | None, where: dict[tuple[int, str, int], Path],
                    progress: bool) -> None:
    """Write the scores of the (shots, label, run) ``todo`` from one pass over the queries."""
    assert study.stream is not None
    inputs = {(shots, run): run_inputs(study.store, study.draws[shots], run, study.classifier,
                                       study.device)
              for shots, _, run in todo}
    jobs = [StreamJob(inputs[shots, run],
                      frozenset(img for img, _ in study.draws[shots].queries(run)),
                      methods[label]) for shots, label, run in todo]
    order = next(iter(study.draws.values())).images
    results = score_streamed(study.stream, jobs, order, batch_queries, progress)
    for job, rows in zip(todo, results, strict=True):
        atomic_write_text(where[job], rows.to_csv(index=False))


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
    """Each method's prediction on one query of a run: the one at ``row`` of the draw's
    images (their store rows), by default the one holding the most classes
    (:func:`richest_query`; with a stream, from the list's class index). DIaM fits each query
    on its own, so these are the very predictions the scores counted."""
    draw = study.draws[shots]
    if study.stream is None:
        store = study.store
        row = richest_query(store, draw, run) if row is None else row
    else:
        n_classes = study.stream.n_classes
        pair = draw.images[richest_listed_query(draw, run, n_classes) if row is None else row]
        store, row = next(study.stream.stores([pair], 1)), 0
    inputs = run_inputs(study.store, draw, run, study.classifier, study.device)
    to_ids = torch.tensor([*inputs.classes, 255], device=study.device)
    predictions, target = {}, None
    for label, method in methods.items():
        pred, target = predict_queries(store, inputs, np.array([row]), method, study.device)
        valid = torch.tensor(np.asarray(store.valid_full[row]), device=study.device)
        predictions[label] = to_ids[torch.where(valid, pred[0], -1)].cpu().numpy()
    img = next(name for name, r in store.index.items() if r == row)
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
    checkpoint = resolve_checkpoint(cfg.base_model_config(), force)
    study = prepare(checkpoint, cfg.root, cfg.list_file, cfg.dataset, cfg.fold, cfg.shots,
                    cfg.size, cfg.n_runs, cfg.seed, cfg.scheme, max_queries=cfg.n_queries or None,
                    device=cfg.device, feature_dtype=cfg.feature_dtype,
                    feature_cache_gb=cfg.feature_cache_gb, progress=progress, force=force)
    rows = score(study, cfg.method_configs(), progress=progress, force=force)
    summary = gstats.summarize(rows, n_boot=cfg.n_boot)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "classes_per_run.csv", rows.to_csv(index=False))
    atomic_write_text(out / "runs.csv", gstats.run_scores(rows).to_csv(index=False))
    atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    config_lib.save_yaml(cfg, saved)
    meta = {"checkpoint": str(checkpoint), "features": study.features_key,
            "queries": "cached" if study.stream is None else "streamed",
            "support_draws": {f"{k}shot": d.hash for k, d in study.draws.items()}}
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2))
    return GFSSResults(rows, summary, out)
