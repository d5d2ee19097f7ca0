"""The one evaluation pipeline: checkpoint + saved episodes + methods -> per-episode scores.

The flow per study: sample (or reload) one episode list per (shots, seed), extract the
features of the union of their images once (:func:`prepare`), then run every method on
every list and keep one row per episode (:func:`score`, computed by :mod:`fsstools.evaluation.scoring`).
Every step is cached under a content key (see :mod:`fsstools.cache`): the scores of one
method on one list are keyed by the feature cache's key, the episodes' hash, the method's
settings, the device type and the code version of :mod:`fsstools.evaluation.scoring`, so the notebooks
and the CLI share them and never read stale ones.
Summaries are computed from the rows (:mod:`fsstools.evaluation.stats`), so a figure can always be
traced back to its episodes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from fsstools import config as config_lib
from fsstools import paths
from fsstools.cache import atomic_torch_save, atomic_write_text, file_hash
from fsstools.data import splits, voc
from fsstools.data.episodes import EpisodeList, EpisodeSettings, ensure_episodes, load_episode_files
from fsstools.errors import ConfigError, DataError, MissingError
from fsstools.evaluation import guard, scoring, stats
from fsstools.evaluation.config import (
    CONFIG_NAME,
    EvalConfig,
    check_out_dir,
    results_dir,
)
from fsstools.features import FeatureSettings, FeatureStore, ensure_features, episode_list_images
from fsstools.inference import MethodConfig, resolve_methods

if TYPE_CHECKING:
    from torch import nn

    from fsstools.training import TrainConfig

WHOLE_LIST_LIMIT = 5000
"""Test lists up to this many images get features for every image, so that every study on
the same checkpoint and data shares one feature cache; longer lists (COCO) only the images
their episodes use."""

CHECKPOINT_HASH_LENGTH = 16
"""Hex digits of a checkpoint's content hash in the key of scores that run its model."""

MethodSpecs = Sequence[str | MethodConfig | Mapping[str, Any]] | Mapping[str, MethodConfig]
TraceKey = tuple[str, int, int, int]
"""(method label, fold, shots, seed) of one scored episode list."""


@dataclass(frozen=True)
class Study:
    """Episodes and cached features of one evaluation, ready for any number of methods.

    ``models`` holds what :func:`peer_model` loaded from ``checkpoint`` (once per Study).
    """

    cfg: EvalConfig
    checkpoint: Path
    episode_lists: dict[tuple[int, int], EpisodeList]  # (shots, seed) -> episodes
    store: FeatureStore
    models: dict[str, tuple[nn.Module, str]] = field(default_factory=dict, compare=False,
                                                     repr=False)


@dataclass(frozen=True)
class Scores:
    """Per-episode rows of scored methods and, if asked for, their traces.

    Attributes:
        rows: one row per (method, fold, shots, seed, episode): class_id, foreground and
            background intersection and union, pi, true_share, pred_share. ``pi`` is the
            prior in force at the end (without KL term: the predicted share of the initial
            classifier); NaN for the peers' own inference ("panet", "pfenet"), which has
            no prior: their predicted share is ``pred_share``.
        traces: (method, fold, shots, seed) -> name -> (T, E) per-iteration values.
    """

    rows: pd.DataFrame
    traces: dict[TraceKey, dict[str, torch.Tensor]]


def checked_train_config(cfg: EvalConfig) -> TrainConfig | None:
    """The training config behind ``cfg``'s checkpoint, loaded and checked (None with an
    explicit checkpoint, which must exist); nothing is trained here.

    Raises:
        MissingError: the checkpoint or the training config does not exist.
        ConfigError: neither is named, or the training config trains another split than
            ``cfg`` tests (:func:`fsstools.evaluation.guard.check_train_split`).
    """
    if cfg.checkpoint:
        path = paths.resolve(cfg.checkpoint)
        if not path.is_file():
            raise MissingError(f"checkpoint {path} does not exist; fix the checkpoint key or "
                               "leave it empty to train train_config")
        return None
    if not cfg.train_config:
        raise ConfigError("the config names neither a checkpoint nor a train_config; set one "
                          "(e.g. --set checkpoint=RUN/best.pt)", key="checkpoint")
    from fsstools.training import TrainConfig

    try:
        trained = config_lib.load(TrainConfig, cfg.train_config, cfg.train_overrides,
                                  overrides_from="train_overrides")
    except MissingError as err:
        raise MissingError(f"train_config: {err}") from None
    guard.check_train_split(cfg.dataset, cfg.fold, cfg.scheme, cfg.coco_to_pascal,
                            cfg.train_config, cfg.train_overrides, trained.data)
    return trained


def resolve_checkpoint(cfg: EvalConfig, force: bool = False) -> Path:
    """The explicit checkpoint, or the (cached) result of training ``cfg.train_config``."""
    trained = checked_train_config(cfg)
    if trained is None:
        return paths.resolve(cfg.checkpoint)
    from fsstools.training import ensure_trained

    return ensure_trained(trained, force=force)


def episode_classes(cfg: EvalConfig) -> list[int] | None:
    """Classes to sample episodes from (None: the fold's novel classes)."""
    if cfg.coco_to_pascal:
        return splits.coco_to_pascal_classes(cfg.fold, cfg.scheme)
    return None



def prepare(
    cfg: EvalConfig, progress: bool = True, force: bool = False, accept_edited: bool = False
) -> Study:
    """Checkpoint, episode lists and features for ``cfg`` (all cached on disk).

    Cheap checks come first (episode files, data root and list, training config), then the
    episodes, the base model (trained if needed), the fold guard (a checkpoint trained on
    classes the episodes test is refused, :func:`fsstools.evaluation.guard.check_disjoint`) and the
    features. Features cover the whole test list when it holds at most
    :data:`WHOLE_LIST_LIMIT` images (then later studies with other shots or episode counts
    on the same checkpoint reuse one feature cache), else the images of the episodes; with
    episode files, the images of the files.

    Args:
        accept_edited: take episode files edited by hand (see ``load_episodes``).

    Raises:
        ConfigError: a training config of another split than ``cfg`` tests.
        ConflictError: a checkpoint trained on classes the episodes test.
    """
    tic = time.perf_counter()
    given = load_episode_files(cfg.episodes, cfg.dataset, cfg.fold, cfg.scheme, accept_edited)
    if given:
        root = next(iter(given.values())).root
        pairs = episode_list_images(list(given.values()))
    else:
        root = cfg.root
        pairs = voc.read_pairs(cfg.root, cfg.list_file)
    checked_train_config(cfg)  # before sampling: a bad training config stops here
    lists = given or {
        (k, s): ensure_episodes(cfg.root, cfg.list_file, EpisodeSettings(
            cfg.dataset, cfg.fold, k, cfg.n_episodes, s, scheme=cfg.scheme,
            classes=episode_classes(cfg), skip_small=cfg.skip_small), force=force)
        for k in cfg.shots
        for s in cfg.seeds
    }
    if not given and len(pairs) > WHOLE_LIST_LIMIT:
        pairs = episode_list_images(list(lists.values()))
    checkpoint = resolve_checkpoint(cfg, force)
    guard.check_disjoint(checkpoint, cfg.dataset, guard.tested_classes(lists.values()), cfg.fold)
    store = ensure_features(checkpoint, root, pairs, cfg.dataset,
                            FeatureSettings(cfg.size, cfg.feature_dtype), device=cfg.device,
                            progress=progress, force=force)
    if given:
        check_supports(store, lists)
    if progress:
        print(f"fold {cfg.fold}: {len(lists)} episode list(s), features of {len(store.index)} "
              f"images of {root} ready ({time.perf_counter() - tic:.1f} s)", flush=True)
    return Study(cfg, checkpoint, lists, store)


def check_supports(store: FeatureStore, lists: Mapping[tuple[int, int], EpisodeList]) -> None:
    """Every support shows its episode's class somewhere in its mask.

    Sampled lists hold by construction; a hand-edited file, or a mask edited after the file
    was drawn, may not, and a support without foreground leaves no prototype.

    Raises:
        DataError: naming the episode, the support image and the class.
    """
    present: dict[int, np.ndarray] = {}
    for (shots, seed), el in lists.items():
        for i, ep in enumerate(el.episodes):
            for img, mask in ep.supports:
                row = store.index[img]
                if row not in present:  # which class ids the padded mask holds
                    ids = np.asarray(store.masks_full[row]).ravel()
                    present[row] = np.bincount(ids, minlength=256) > 0
                if not present[row][ep.class_id]:
                    name = splits.class_name(el.dataset, ep.class_id, el.root)
                    raise DataError(
                        f"episode {i} of the {shots}-shot list (seed {seed}): support {img} "
                        f"holds no pixel of class {ep.class_id} ({name}) in {mask}; a support "
                        "must show its class: fix that episode or the mask, or draw the "
                        "episodes again with `fsstools episodes`"
                    )


def peer_model(study: Study) -> tuple[nn.Module, str]:
    """The PFENet-style peer of ``study.checkpoint`` and the checkpoint's content hash,
    loaded on ``study.cfg.device`` once per Study.

    Raises:
        ConfigError: the checkpoint holds another model (a base PSPNet, a PANet-style
            peer): ``pfenet`` is that peer's own head and exists only with it.
    """
    if "pfenet" not in study.models:
        from fsstools.models.checkpoints import load_model
        from fsstools.models.pfenet import PFENet

        model = load_model(study.checkpoint, study.cfg.device)
        if not isinstance(model, PFENet):
            raise ConfigError(
                f"method pfenet is the PFENet-style peer's own head, but checkpoint "
                f"{study.checkpoint} holds a {type(model).__name__} model; score pfenet on the "
                "best.pt of a PFENet-style run (`fsstools train --config "
                "configs/synth/episodic_pfenet.yaml --set episodic.trunk=<the fold's base "
                "best.pt>`), or score panet (PANet's prototype classifier, any features) or "
                "repri on this checkpoint",
                key="methods",
            )
        study.models["pfenet"] = (model, file_hash(study.checkpoint, CHECKPOINT_HASH_LENGTH))
    return study.models["pfenet"]


def _score_path(study: Study, shots: int, seed: int, method: MethodConfig) -> Path:
    # A method that runs the checkpoint's model keys on its bytes too: the features' key
    # holds them when the features come from that checkpoint, which a hand-built Study
    # need not guarantee.
    model = {"checkpoint": peer_model(study)[1]} if method.classifier == "pfenet" else {}
    key = scoring.scores_key(study.store.key, study.episode_lists[shots, seed].hash, method,
                             study.cfg.device, **model)
    return paths.cache_dir("scores") / f"{key}.csv"


def score(
    study: Study,
    methods: MethodSpecs | None = None,
    trace: bool = False,
    progress: bool = True,
    force: bool = False,
) -> Scores:
    """Score methods on every episode list of ``study``, reading cached scores if any.

    Args:
        study: from :func:`prepare`.
        methods: names, configs or YAML-style mappings (labelled by their names), or a
            mapping label -> config; default ``study.cfg.methods``. Labels become the
            ``method`` column.
        trace: also return per-iteration traces.
        progress: one line per (method, shots, seed) with its time, or where it was read.
        force: score again even if cached.
    """
    cfg = study.cfg
    chosen = resolve_methods(cfg.methods if methods is None else methods, cfg.reference)
    if any(m.classifier == "pfenet" for m in chosen.values()):
        peer_model(study)  # a checkpoint of another kind stops here, before any scoring
    frames, traces = [], {}
    for (shots, seed), episodes in study.episode_lists.items():
        for label, m in chosen.items():
            path = _score_path(study, shots, seed, m)
            trace_path = path.with_suffix(".traces.pt")
            tic = time.perf_counter()
            cached = not force and path.is_file() and (trace_path.is_file() or not trace)
            if cached:
                rows = pd.read_csv(path)
                tr = torch.load(trace_path, weights_only=True) if trace else None
            else:
                model = peer_model(study)[0] if m.classifier == "pfenet" else None
                rows, tr = scoring.score_episodes(study.store, episodes, m, cfg.device, cfg.batch_tasks,
                                          trace, model)
                if tr is not None:
                    atomic_torch_save({k: v.float() for k, v in tr.items()}, trace_path)
                atomic_write_text(path, rows.to_csv(index=False))
                rows = pd.read_csv(path)  # the same dtypes and values as a cached read
            if progress:
                where = f"reused from {path}" if cached else f"{time.perf_counter() - tic:.1f} s"
                print(f"  fold {cfg.fold} {label} {shots}-shot seed {seed}: {len(rows)} "
                      f"episodes ({where})", flush=True)
            rows.insert(0, "seed", seed)
            rows.insert(0, "shots", shots)
            rows.insert(0, "fold", cfg.fold)
            rows.insert(0, "method", label)
            frames.append(rows)
            if trace:
                traces[(label, cfg.fold, shots, seed)] = tr
    return Scores(pd.concat(frames, ignore_index=True), traces)


def save_results(
    cfg: EvalConfig,
    episodes: pd.DataFrame,
    summary: pd.DataFrame,
    out_dir: str | Path,
    extra: dict | None = None,
) -> Path:
    """Write episodes.csv, summary.csv, classes.csv and the resolved config into ``out_dir``."""
    out = paths.resolve(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "episodes.csv", episodes.to_csv(index=False))
    atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    atomic_write_text(out / "classes.csv", stats.class_table(episodes).to_csv(index=False))
    config_lib.save_yaml(cfg, out / CONFIG_NAME)
    if extra:
        atomic_write_text(out / "meta.json", json.dumps(extra, indent=2, default=str))
    return out


@dataclass(frozen=True)
class Results:
    """What :func:`run_evaluation` computed and where it saved it."""

    rows: pd.DataFrame
    summary: pd.DataFrame
    out_dir: Path


def run_evaluation(
    cfg: EvalConfig, progress: bool = True, force: bool = False, accept_edited: bool = False
) -> Results:
    """Run ``cfg`` end to end and save it into :func:`results_dir` (the resolved config,
    every method's full settings and the episode hashes go with the results)."""
    check_out_dir(cfg)
    study = prepare(cfg, progress, force, accept_edited)
    rows = score(study, progress=progress, force=force).rows
    summary = stats.summarize(rows, n_boot=cfg.n_boot)
    meta = {
        "checkpoint": str(study.checkpoint),
        "features": study.store.key,
        "episode_hashes": {
            f"{k}shot-seed{s}": el.hash for (k, s), el in study.episode_lists.items()
        },
        "episode_files": [str(paths.resolve(f)) for f in cfg.episodes],
        "methods": {label: config_lib.to_dict(m)
                    for label, m in resolve_methods(cfg.methods, cfg.reference).items()},
    }
    out = save_results(cfg, rows, summary, results_dir(cfg, study.episode_lists), meta)
    return Results(rows, summary, out)
