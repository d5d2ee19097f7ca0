"""Recipes the notebooks call: parameters, data and base models on demand, scored studies.

A notebook starts with :func:`start` (see :mod:`fsstools.studies.profiles`), which checks its
parameters, picks its data (a profile of the embedded benchmark, "quick" or "full", or a
real data set) and makes its output folder; the recipes below then train or reuse base
models, sample episodes, extract features and score methods.

Every step is cached under a content key (data, class index, episodes, checkpoints,
features, per-episode scores; see :mod:`fsstools.cache`), so a notebook run twice, or a
later notebook asking for the same method on the same episodes, reads results instead of
recomputing them, and says so.

Example:
    >>> prof, out = start("03_shot_scaling", globals())  # doctest: +SKIP
    >>> scores = evaluate_folds(prof, folds=[0], shots=[1], methods=["repri"],
    ...                         n_episodes=100)  # doctest: +SKIP
    >>> stats.fold_mean(scores.rows)[["method", "shots", "miou"]]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from fsstools import config as config_lib
from fsstools import paths
from fsstools.constants import IGNORE_INDEX
from fsstools.data import voc
from fsstools.errors import MissingError
from fsstools.evaluation import pipeline as evaluate
from fsstools.evaluation.pipeline import EvalConfig, MethodSpecs, Scores, Study
from fsstools.evaluation.views import EpisodeView, display_image, episode_view, feature_pca
from fsstools.features import FeatureSettings, ensure_features, task_batch
from fsstools.inference import METHODS, MethodConfig, query_valid_mask
from fsstools.inference.classifier import normalize
from fsstools.inference.losses import pixel_weights
from fsstools.own_images.segmentation import load_backbone as load_backbone
from fsstools.own_images.segmentation import segment as segment
from fsstools.plots.style import label
from fsstools.studies import given_models
from fsstools.studies.base_models import base_class_scores as base_class_scores
from fsstools.studies.base_models import base_model_table as base_model_table
from fsstools.studies.base_models import training_history as training_history
from fsstools.studies.profiles import DATASETS as DATASETS
from fsstools.studies.profiles import Profile as Profile
from fsstools.studies.profiles import ensure_base_model as ensure_base_model
from fsstools.studies.profiles import ensure_data as ensure_data
from fsstools.studies.profiles import fold_eval_config as fold_eval_config
from fsstools.studies.profiles import get_profile as get_profile
from fsstools.studies.profiles import notebook_profile as notebook_profile
from fsstools.studies.profiles import real_profile as real_profile
from fsstools.studies.profiles import run_dir as run_dir
from fsstools.studies.profiles import setup as setup
from fsstools.studies.profiles import start as start
from fsstools.studies.profiles import train_config as train_config
from fsstools.studies.uploads import UploadPanel as UploadPanel
from fsstools.studies.widgets import EpisodeExplorer
from fsstools.studies.your_images import OwnTask as OwnTask
from fsstools.studies.your_images import own_task as own_task
from fsstools.studies.your_images import save_segmentation as save_segmentation
from fsstools.training import TrainConfig

# ----------------------------------------------------------------------------- studies


def fold_study(
    prof: Profile,
    fold: int,
    shots: Sequence[int],
    n_episodes: int,
    style: str = "A",
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    base_seed: int = 0,
) -> Study:
    """Episodes and features for the fold's base model (trained with ``base_seed``) tested
    on the profile's test data (for the embedded benchmark: the validation images of
    ``style``; the model is always trained on style A). ``seed`` draws the episodes, which
    are the same for every base seed."""
    checkpoint = ensure_base_model(prof, fold, progress, base_seed)
    cfg = fold_eval_config(prof, fold, checkpoint, shots, n_episodes, style, seed, device)
    return evaluate.prepare(cfg, progress)


def evaluate_folds(
    prof: Profile,
    folds: Sequence[int],
    shots: Sequence[int],
    methods: MethodSpecs,
    n_episodes: int,
    style: str = "A",
    seed: int = 0,
    device: str = "cpu",
    trace: bool = False,
    base_seeds: Sequence[int] = (0,),
) -> Scores:
    """:func:`fsstools.evaluation.pipeline.score` over folds and base seeds: the base model of each
    fold and seed, tested on the profile's test data (``style`` of the embedded
    benchmark), every base seed on the same episodes.

    Returns:
        Rows with a ``base_seed`` column (with given checkpoints, only the first base
        seed's: one model per fold); traces keyed (method, fold, shots, seed) pool the base
        seeds' episodes.
    """
    frames, traces = [], {}
    for fold in folds:
        for base_seed in prof.model_seeds(base_seeds):
            study = fold_study(prof, fold, shots, n_episodes, style, seed, device,
                               base_seed=base_seed)
            scores = evaluate.score(study, methods, trace)
            frames.append(scores.rows.assign(base_seed=base_seed))
            for key, tr in scores.traces.items():
                traces[key] = ({k: torch.cat([traces[key][k], v], dim=1) for k, v in tr.items()}
                               if key in traces else tr)
    return Scores(pd.concat(frames, ignore_index=True), traces)


def domain_shift(
    prof: Profile,
    folds: Sequence[int],
    shots: Sequence[int],
    methods: MethodSpecs,
    n_episodes: int,
    device: str = "cpu",
    base_seeds: Sequence[int] = (0,),
) -> pd.DataFrame:
    """Base models trained on style A, tested on A (in-domain) and on B (shifted).

    Returns:
        Per-episode rows with a ``domain`` column ("A -> A" or "A -> B").
    """
    frames = []
    for style in ("A", "B"):
        print(f"test style {style}:")
        scores = evaluate_folds(prof, folds, shots, methods, n_episodes, style, device=device,
                                base_seeds=base_seeds)
        frames.append(scores.rows.assign(domain=f"A -> {style}"))
    return pd.concat(frames, ignore_index=True)


def coco_to_pascal(
    pascal_root: str,
    coco_train_config: str,
    folds: Sequence[int],
    shots: Sequence[int],
    methods: MethodSpecs,
    n_episodes: int,
    list_file: str = "lists/val.txt",
    coco_checkpoint: str = "",
    size: int = 417,
    device: str = "cpu",
) -> pd.DataFrame | None:
    """COCO-trained base models tested on the PASCAL classes they never saw.

    Args:
        pascal_root: PASCAL VOC root holding ``list_file``; empty: skipped (returns None).
        coco_train_config: training YAML with ``{fold}``, trained (or reused) unless
            ``coco_checkpoint`` is given; empty: the shipped configs/coco/fold{fold}.yaml.
        coco_checkpoint: explicit checkpoint with ``{fold}``, or the folder holding the
            authors' archive (``model_ckpt/``: their COCO model of each fold), or empty.
    """
    if not pascal_root:
        print("COCO -> PASCAL skipped: set pascal_root (and a COCO training config or "
              "checkpoint) to run it")
        return None
    root = paths.resolve(pascal_root)
    if not root.is_dir():
        raise MissingError(f"parameter pascal_root: {root} is not a folder; pass the PASCAL "
                           "VOC root (relative paths start where papermill runs)")
    coco_train_config = coco_train_config or str(paths.configs_dir() / "coco" / "fold{fold}.yaml")
    given = {}
    if coco_checkpoint:
        arch = config_lib.load(TrainConfig, coco_train_config.format(fold=folds[0])).model.arch
        given = given_models.resolve(coco_checkpoint, "coco", arch, folds, "coco_checkpoint")
        print(given_models.given_line(given, "COCO base models"))
    frames = []
    for fold in folds:
        cfg = EvalConfig(
            dataset="pascal",
            root=str(root),
            list_file=list_file,
            fold=fold,
            coco_to_pascal=True,
            size=size,
            shots=tuple(shots),
            n_episodes=n_episodes,
            checkpoint=str(given[fold]) if given else None,
            train_config=str(paths.resolve(coco_train_config.format(fold=fold))),
            device=device,
        )
        rows = evaluate.score(evaluate.prepare(cfg), methods).rows
        frames.append(rows.assign(domain="COCO -> PASCAL"))
    return pd.concat(frames, ignore_index=True)


ORACLE_CONFIGS = {name: label(name) for name in ("oracle_repri", "oracle_repri_weights")}
"""The oracle configurations whose sensitivity to an error in the prior notebook 05 sweeps,
with their labels (their steps and weights: docs/methods.md)."""


def delta_methods(deltas: Sequence[float], bases: Sequence[str] = ("oracle_repri",)
                  ) -> dict[str, MethodConfig]:
    """Each oracle of ``bases`` with the prior perturbed by each relative error ``delta``
    (labels ``<base> delta=<delta>``; the method's ``name`` stays its base's)."""
    return {
        f"{base} delta={d:+.2f}": dataclasses.replace(METHODS[base], prior_delta=float(d))
        for base in bases
        for d in deltas
    }


def t_pi_methods(t_pi_values: Sequence[Sequence[int]]) -> dict[str, MethodConfig]:
    """RePRI with the prior re-estimated before each listed iteration (empty: never)."""
    return {
        f"t_pi={'+'.join(map(str, t)) or 'none'}": dataclasses.replace(
            METHODS["repri"], t_pi=tuple(int(x) for x in t)
        )
        for t in t_pi_values
    }


def with_setting(
    rows: pd.DataFrame, methods: Mapping[str, MethodConfig], name: str
) -> pd.DataFrame:
    """Add a column ``name`` holding each row's method field ``name`` (e.g. prior_delta)."""
    values = {label: getattr(m, name) for label, m in methods.items()}
    col = rows["method"].map(values)
    if name == "t_pi":
        col = col.map(lambda t: "+".join(map(str, t)) or "none")
    return rows.assign(**{name: col})


# ----------------------------------------------------------------------------- one episode


def study_episode(
    study: Study,
    shots: int,
    index: int,
    method: MethodConfig | None = None,
    seed: int = 0,
    images: bool = True,
) -> EpisodeView:
    """:func:`fsstools.evaluation.views.episode_view` of task ``index`` of the (shots, seed) list."""
    return episode_view(study.store, study.episode_lists[shots, seed], index, method, images)


@dataclass(frozen=True)
class Task:
    """One task's pixels as columns, for a hand-written loop over the inference primitives
    (notebook 00). Features are L2-normalised over channels; weights are 1/n on the n
    pixels a loss term averages over and 0 elsewhere.

    Attributes:
        support_feats: (1, C, S*h*w) support features.
        support_fg: (1, S*h*w) bool, True on foreground support pixels.
        support_weights: (1, S*h*w) support CE weights (0 on pixels labelled 255).
        query_feats: (1, C, h*w) query features.
        query_valid: (1, h*w) bool, the query pixels that are not padding.
        query_weights: (1, h*w) query weights (entropy, p_hat and the prior).
        grid: (h, w), to reshape a (1, h*w) map.
    """

    support_feats: torch.Tensor
    support_fg: torch.Tensor
    support_weights: torch.Tensor
    query_feats: torch.Tensor
    query_valid: torch.Tensor
    query_weights: torch.Tensor
    grid: tuple[int, int]


def task_tensors(study: Study, shots: int, index: int, seed: int = 0) -> Task:
    """Task ``index`` of the (shots, seed) list as a :class:`Task` (the same pixels, masks
    and weights RePRI's library loop uses, clean validity: padding only)."""
    tb = task_batch(study.store, study.episode_lists[shots, seed], [index])
    _, s, c, h, w = tb.support_feats.shape
    support = normalize(tb.support_feats.permute(0, 2, 1, 3, 4).reshape(1, c, s * h * w))
    labels = tb.support_masks.reshape(1, s * h * w)  # (1, S*h*w) in {0, 1, 255}
    valid_q = query_valid_mask(tb.query_mask_small, tb.query_valid_small).reshape(1, h * w)
    return Task(
        support_feats=support,
        support_fg=labels == 1,
        support_weights=pixel_weights(labels != IGNORE_INDEX),
        query_feats=normalize(tb.query_feats.reshape(1, c, h * w)),
        query_valid=valid_q,
        query_weights=pixel_weights(valid_q),
        grid=(h, w),
    )


def explorer(prof: Profile, fold: int, shots: Sequence[int], n_episodes: int,
             device: str = "cpu") -> EpisodeExplorer:
    """The episode explorer over every test style of the profile (A and B for the embedded
    benchmark: studies already prepared are read from the cache)."""
    studies = {style: fold_study(prof, fold, shots, n_episodes, style, device=device,
                                 progress=False) for style in prof.styles}
    return EpisodeExplorer(studies)


def pca_examples(
    prof: Profile, fold: int, n_images: int = 6, style: str = "A"
) -> dict[str, np.ndarray]:
    """Validation images, their class masks and the PCA of their features (fold's model).

    Returns:
        images (N, H, W, 3) uint8, masks (N, H, W) class ids, pca (N, h, w, 3) in [0, 1].
    """
    checkpoint = ensure_base_model(prof, fold, progress=False)
    root = prof.style_root(style)
    size = prof.synth.size if prof.synth is not None else train_config(prof, fold).data.val_size
    pairs = voc.read_pairs(root, prof.list_file)[:n_images]
    store = ensure_features(checkpoint, root, pairs, prof.test_dataset, FeatureSettings(size),
                            progress=False)
    rows = [store.index[img] for img, _ in pairs]
    return {
        "images": np.stack([display_image(root, *pair, prof.test_dataset, size)
                            for pair in pairs]),
        "masks": np.asarray(store.masks_full[rows]),
        "pca": feature_pca(np.asarray(store.feats[rows])),
    }
