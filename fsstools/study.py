"""Recipes the notebooks call: profiles, data and base models on demand, scored studies.

A *profile* says where the synthetic data lives and how base models are trained:

- ``"quick"``: a small set under ``data/synth_quick`` and a short run
  (``configs/synth/quick.yaml``); the notebooks' defaults, shared by all of them.
- ``"full"``: the default set under ``data/synth`` and ``configs/synth/foldN.yaml``; what
  ``fsstools reproduce`` injects.

Every step is cached under a content key (data, class index, episodes, checkpoints,
features, per-episode scores; see :mod:`fsstools.cache`), so a notebook run twice, or a
later notebook asking for the same method on the same episodes, reads results instead of
recomputing them, and says so.

Example:
    >>> prof, out = setup("quick", "", "demo")  # doctest: +SKIP
    >>> scores = evaluate_synth(prof, folds=[0], shots=[1], methods=["repri"],
    ...                         n_episodes=100)  # doctest: +SKIP
    >>> stats.fold_mean(scores.rows)[["method", "shots", "miou"]]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fsstools import config as config_lib
from fsstools import evaluate, paths
from fsstools.data import splits, voc
from fsstools.data.synthetic import SynthConfig, ensure_synth
from fsstools.evaluate import EvalConfig, MethodSpecs, Scores, Study
from fsstools.features import ensure_features
from fsstools.inference import METHODS, MethodConfig
from fsstools.inspect import EpisodeView, display_image, episode_view, feature_pca
from fsstools.models.checkpoints import checkpoint_meta
from fsstools.training import TrainConfig, ensure_trained, run_directory


@dataclass(frozen=True)
class Profile:
    """Where a notebook's synthetic data lives and how its base models are trained.

    Attributes:
        name: "quick" or "full".
        synth_root: folder of the synthetic set (one sub-folder per style), absolute.
        synth: the generating config.
        train_config: training YAML (absolute); ``{fold}`` is replaced by the fold.
    """

    name: str
    synth_root: Path
    synth: SynthConfig
    train_config: str

    def style_root(self, style: str) -> Path:
        """Data root of one visual style ("A": base training and in-domain tests, "B")."""
        return self.synth_root / style


def get_profile(name: str) -> Profile:
    """The "quick" or the "full" profile."""
    profiles = {
        "quick": Profile("quick", paths.data_dir() / "synth_quick",
                         SynthConfig(n_train=1200, n_val=400),
                         str(paths.configs_dir() / "synth" / "quick.yaml")),
        "full": Profile("full", paths.data_dir() / "synth", SynthConfig(),
                        str(paths.configs_dir() / "synth" / "fold{fold}.yaml")),
    }
    if name not in profiles:
        raise ValueError(f"unknown profile {name!r}; use one of {sorted(profiles)}")
    return profiles[name]


def setup(profile: str, output_dir: str | Path, notebook: str) -> tuple[Profile, Path]:
    """Common first step of every notebook: the profile and the output folder.

    Args:
        profile: "quick" or "full".
        output_dir: where results go; relative to the working folder (where papermill
            runs); empty: ``<outputs>/<profile>/<notebook>``.
        notebook: the notebook's name, for the default output folder.

    Returns:
        The profile and the output folder (absolute, created).
    """
    prof = get_profile(profile)
    out = paths.resolve(output_dir) if output_dir else paths.outputs_dir() / profile / notebook
    out.mkdir(parents=True, exist_ok=True)
    print(f"profile {prof.name}: data {prof.synth_root}, base training "
          f"{prof.train_config}; outputs in {out}")
    return prof, out


# ----------------------------------------------------------------------------- data, models


def ensure_data(prof: Profile, progress: bool = True) -> Path:
    """The profile's synthetic set (both styles), generated on first use."""
    return ensure_synth(prof.synth_root, prof.synth, progress=progress)


def train_config(prof: Profile, fold: int, overrides: Sequence[str] = ()) -> TrainConfig:
    """The resolved base-training config of ``fold`` (style A of the profile's data)."""
    path = prof.train_config.format(fold=fold)
    extra = [f"data.fold={fold}", f"data.root={prof.style_root('A')}"]
    if "{fold}" not in prof.train_config:  # one file for all folds: name the run per fold
        extra.append(f"run.name=synth-{prof.name}-fold{fold}")
    return config_lib.load(TrainConfig, path, [*extra, *overrides])


def ensure_base_model(prof: Profile, fold: int, progress: bool = True) -> Path:
    """Best checkpoint of the fold's base model: reused if trained, else trained now."""
    ensure_data(prof, progress=False)
    cfg = train_config(prof, fold)
    run_dir = run_directory(cfg)
    if (run_dir / "done").is_file():
        return ensure_trained(cfg)  # announces the reuse
    print(f"fold {fold}: training the base model ({cfg.run.epochs} epochs) into {run_dir}",
          flush=True)
    tic = time.perf_counter()
    checkpoint = ensure_trained(cfg)
    if progress:
        print(f"fold {fold}: trained in {time.perf_counter() - tic:.0f} s", flush=True)
    return checkpoint


def _run_dir(prof: Profile, fold: int) -> Path:
    run_dir = run_directory(train_config(prof, fold))
    if not (run_dir / "done").is_file():
        raise FileNotFoundError(f"{run_dir} holds no finished run; call "
                                f"study.ensure_base_model(prof, {fold}) first")
    return run_dir


def training_history(prof: Profile, folds: Sequence[int]) -> pd.DataFrame:
    """metrics.csv of the folds' base-training runs, with a ``fold`` column."""
    return pd.concat([pd.read_csv(_run_dir(prof, f) / "metrics.csv").assign(fold=f)
                      for f in folds], ignore_index=True)


def base_class_scores(prof: Profile, folds: Sequence[int]) -> pd.DataFrame:
    """Base-class validation IoU of each fold's selected checkpoint.

    Returns:
        One row per fold and class (background included, class_id 0): fold, epoch,
        class_id, name, iou.
    """
    rows = []
    for fold in folds:
        meta = checkpoint_meta(_run_dir(prof, fold) / "best.pt")
        classes = [0, *meta["classes"]]  # position k of the IoU list is relabelled class k
        for cls, iou in zip(classes, meta["metrics"]["val_class_iou"], strict=True):
            rows.append({"fold": fold, "epoch": meta["epoch"], "class_id": cls,
                         "name": splits.class_name("synth", cls), "iou": float(iou)})
    return pd.DataFrame(rows)


def base_model_table(prof: Profile, folds: Sequence[int]) -> pd.DataFrame:
    """Per fold: epochs run, selected epoch, its base-class validation mIoU (with and without
    background), the gain of the last epoch and the training time."""
    history = training_history(prof, folds)
    rows = []
    for fold in folds:
        meta = checkpoint_meta(_run_dir(prof, fold) / "best.pt")
        hist = history[history["fold"] == fold].sort_values("epoch")
        val = hist["val_miou"].dropna().to_numpy()
        rows.append({
            "fold": fold,
            "epochs": int(hist["epoch"].max()),
            "selected_epoch": meta["epoch"],
            "val_miou": meta["metrics"]["val_miou"],
            "val_miou_base_classes": meta["metrics"]["val_miou_fg"],
            "last_epoch_gain_points": 100 * (val[-1] - val[-2]) if len(val) > 1 else np.nan,
            "train_minutes": float(hist["time_s"].sum()) / 60,
        })  # fmt: skip
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- studies


def synth_study(
    prof: Profile,
    fold: int,
    shots: Sequence[int],
    n_episodes: int,
    style: str = "A",
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> Study:
    """Episodes and features for the fold's base model (trained on style A) tested on
    the validation images of ``style``."""
    checkpoint = ensure_base_model(prof, fold, progress)
    cfg = EvalConfig(
        dataset="synth",
        root=str(prof.style_root(style)),
        fold=fold,
        size=prof.synth.size,
        shots=tuple(shots),
        seeds=(seed,),
        n_episodes=n_episodes,
        checkpoint=str(checkpoint),
        train_config=None,
        device=device,
    )
    return evaluate.prepare(cfg, progress)


def evaluate_synth(
    prof: Profile,
    folds: Sequence[int],
    shots: Sequence[int],
    methods: MethodSpecs,
    n_episodes: int,
    style: str = "A",
    seed: int = 0,
    device: str = "cpu",
    trace: bool = False,
) -> Scores:
    """:func:`fsstools.evaluate.score` over folds: base model of each fold, tested on
    ``style``."""
    frames, traces = [], {}
    for fold in folds:
        study = synth_study(prof, fold, shots, n_episodes, style, seed, device)
        scores = evaluate.score(study, methods, trace)
        frames.append(scores.rows)
        traces.update(scores.traces)
    return Scores(pd.concat(frames, ignore_index=True), traces)


def domain_shift(
    prof: Profile,
    folds: Sequence[int],
    shots: Sequence[int],
    methods: MethodSpecs,
    n_episodes: int,
    device: str = "cpu",
) -> pd.DataFrame:
    """Base models trained on style A, tested on A (in-domain) and on B (shifted).

    Returns:
        Per-episode rows with a ``domain`` column ("A -> A" or "A -> B").
    """
    frames = []
    for style in ("A", "B"):
        print(f"test style {style}:")
        scores = evaluate_synth(prof, folds, shots, methods, n_episodes, style, device=device)
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
        coco_train_config: training YAML with ``{fold}`` (e.g. configs/coco/fold{fold}.yaml),
            trained (or reused) unless ``coco_checkpoint`` is given.
        coco_checkpoint: explicit checkpoint with ``{fold}``, or empty.
    """
    if not pascal_root:
        print("COCO -> PASCAL skipped: set pascal_root (and a COCO training config or "
              "checkpoint) to run it")
        return None
    frames = []
    for fold in folds:
        cfg = EvalConfig(
            dataset="pascal",
            root=pascal_root,
            list_file=list_file,
            fold=fold,
            coco_to_pascal=True,
            size=size,
            shots=tuple(shots),
            n_episodes=n_episodes,
            checkpoint=coco_checkpoint.format(fold=fold) or None,
            train_config=coco_train_config.format(fold=fold),
            device=device,
        )
        rows = evaluate.score(evaluate.prepare(cfg), methods).rows
        frames.append(rows.assign(domain="COCO -> PASCAL"))
    return pd.concat(frames, ignore_index=True)


def delta_methods(deltas: Sequence[float]) -> dict[str, MethodConfig]:
    """Oracle-RePRI with the prior perturbed by each relative error ``delta``."""
    return {
        f"oracle delta={d:+.2f}": dataclasses.replace(METHODS["oracle_repri"], prior_delta=float(d))
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
    """:func:`fsstools.inspect.episode_view` of task ``index`` of the (shots, seed) list."""
    return episode_view(study.store, study.episode_lists[shots, seed], index, method, images)


def pca_examples(
    prof: Profile, fold: int, n_images: int = 6, style: str = "A"
) -> dict[str, np.ndarray]:
    """Validation images, their class masks and the PCA of their features (fold's model).

    Returns:
        images (N, H, W, 3) uint8, masks (N, H, W) class ids, pca (N, h, w, 3) in [0, 1].
    """
    checkpoint = ensure_base_model(prof, fold, progress=False)
    root = prof.style_root(style)
    pairs = voc.read_pairs(root, "lists/val.txt")
    store = ensure_features(checkpoint, root, pairs, "synth", prof.synth.size, progress=False)
    rows = [store.index[img] for img, _ in pairs[:n_images]]
    return {
        "images": np.stack(
            [display_image(root, *pairs[i], "synth", prof.synth.size) for i in range(n_images)]
        ),
        "masks": np.asarray(store.masks_full[rows]),
        "pca": feature_pca(np.asarray(store.feats[rows])),
    }
