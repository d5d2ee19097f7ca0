"""Recipes the notebooks call: profiles, data, base models, cached evaluations, summaries.

A *profile* says where the synthetic data lives and how base models are trained:

- ``"quick"``: a small set under ``data/synth_quick`` and a short run
  (``configs/synth/quick.yaml``); the notebooks' defaults, shared by all of them.
- ``"full"``: the default set under ``data/synth`` and ``configs/synth/foldN.yaml``; what
  ``fsstools reproduce`` injects.

Every step is cached on disk (data, checkpoints, features, per-episode scores), so a
notebook run twice, or a later notebook asking for the same method on the same episodes,
reads results instead of recomputing them.

Example:
    >>> prof, out = setup("quick", "outputs/quick/demo")  # doctest: +SKIP
    >>> rows, _ = evaluate_synth(prof, folds=[0], shots=[1], methods=["repri"],
    ...                          n_episodes=100)  # doctest: +SKIP
    >>> headline(rows)[["method", "shots", "miou"]]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from fsstools import config as config_lib
from fsstools import evaluate, metrics
from fsstools.artifacts import OUTPUTS, atomic_torch_save, atomic_write_text, text_hash
from fsstools.constants import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from fsstools.data import splits, voc
from fsstools.data.episodes import episode_mask
from fsstools.data.synthetic import SYNTH_CLASSES, SynthConfig, ensure_synth
from fsstools.data.transforms import test_transform
from fsstools.evaluate import EvalConfig, Study
from fsstools.features import ensure_features, gather
from fsstools.inference import (
    METHODS,
    MethodConfig,
    fg_probs,
    oracle_prior,
    query_valid_mask,
    run_method,
)

if TYPE_CHECKING:
    from fsstools.train import TrainConfig

SUMMARY_NAME = "summary.md"
WHOLE_LIST_LIMIT = 5000
"""Test lists up to this many images get features for every image, so that every study
on the same checkpoint and data shares one feature cache; longer lists (COCO) only the
images their episodes use."""

METHOD_LABELS = {
    "inductive": "Inductive (prototype)",
    "ce": "CE",
    "ce_h": "CE + H",
    "ce_kl": "CE + KL",
    "repri": "RePRI (CE + H + KL)",
    "oracle_repri": "Oracle-RePRI",
}

ScoreKey = tuple[str, int, int]
"""(method label, fold, shots) of one scored episode list."""


@dataclass(frozen=True)
class Profile:
    """Where a notebook's synthetic data lives and how its base models are trained.

    Attributes:
        name: "quick" or "full".
        synth_root: folder of the synthetic set (one sub-folder per style).
        synth: the generating config.
        train_config: training YAML; ``{fold}`` is replaced by the fold.
    """

    name: str
    synth_root: str
    synth: SynthConfig
    train_config: str

    def style_root(self, style: str) -> Path:
        """Data root of one visual style ("A": base training and in-domain tests, "B")."""
        return Path(self.synth_root) / style


PROFILES = {
    "quick": Profile(
        "quick",
        "data/synth_quick",
        SynthConfig(n_train=1200, n_val=400),
        "configs/synth/quick.yaml",
    ),
    "full": Profile("full", "data/synth", SynthConfig(), "configs/synth/fold{fold}.yaml"),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; use one of {sorted(PROFILES)}")
    return PROFILES[name]


def project_root(start: Path | None = None) -> Path:
    """The fsstools checkout: the first folder holding ``configs/synth/base.yaml`` at or above
    ``start`` (default: the working directory), else the one above this package."""
    start = Path(start or Path.cwd()).resolve()
    for folder in (start, *start.parents, Path(__file__).resolve().parent.parent):
        if (folder / "configs" / "synth" / "base.yaml").is_file():
            return folder
    raise FileNotFoundError(
        f"no configs/synth/base.yaml at or above {start}; run the notebooks inside the "
        "fsstools checkout"
    )


def setup(profile: str, output_dir: str | Path) -> tuple[Profile, Path]:
    """Common first step of every notebook.

    Works from the project root (nbval starts kernels in ``notebooks/``; data, configs and
    ``outputs/`` are relative to the root), creates ``output_dir`` and says what will run.

    Returns:
        The profile and the output folder.
    """
    os.chdir(project_root())
    prof = get_profile(profile)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"profile {prof.name}: data {prof.synth_root}, base training "
        f"{prof.train_config}; outputs in {out}"
    )
    return prof, out


# ----------------------------------------------------------------------------- data, models


def ensure_data(prof: Profile, progress: bool = True) -> Path:
    """The profile's synthetic set (both styles), generated on first use."""
    return ensure_synth(Path(prof.synth_root), prof.synth, progress=progress)


def train_config(prof: Profile, fold: int, overrides: Sequence[str] = ()) -> TrainConfig:
    """The resolved base-training config of ``fold`` (style A of the profile's data)."""
    from fsstools.train import TrainConfig

    path = prof.train_config.format(fold=fold)
    extra = [f"data.fold={fold}"]
    if "{fold}" not in prof.train_config:  # one file for all folds: name the run per fold
        extra.append(f"run.name=synth-{prof.name}-fold{fold}")
    return config_lib.load(TrainConfig, path, [*extra, *overrides])


def ensure_base_model(prof: Profile, fold: int, progress: bool = True) -> Path:
    """Best checkpoint of the fold's base model: reused if trained, else trained now."""
    from fsstools.train import ensure_trained, run_directory

    ensure_data(prof, progress=False)
    cfg = train_config(prof, fold)
    run_dir = run_directory(cfg)
    if (run_dir / "done").is_file():
        if progress:
            print(f"fold {fold}: base model reused from {run_dir}")
        return run_dir / "best.pt"
    print(
        f"fold {fold}: training the base model ({cfg.run.epochs} epochs) into {run_dir}", flush=True
    )
    tic = time.perf_counter()
    checkpoint = ensure_trained(cfg)
    print(f"fold {fold}: trained in {time.perf_counter() - tic:.0f} s", flush=True)
    return checkpoint


def training_history(prof: Profile, folds: Sequence[int]) -> pd.DataFrame:
    """metrics.csv of the folds' base-training runs, with a ``fold`` column."""
    from fsstools.train import run_directory

    frames = []
    for fold in folds:
        path = run_directory(train_config(prof, fold)) / "metrics.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; call ensure_base_model(prof, {fold})")
        frames.append(pd.read_csv(path).assign(fold=fold))
    return pd.concat(frames, ignore_index=True)


def base_class_scores(prof: Profile, folds: Sequence[int]) -> pd.DataFrame:
    """Base-class validation IoU of each fold's selected checkpoint.

    Returns:
        One row per fold and class (background included, class_id 0): fold, epoch,
        class_id, name, iou.
    """
    from fsstools.models.checkpoints import checkpoint_meta
    from fsstools.train import run_directory

    rows = []
    for fold in folds:
        meta = checkpoint_meta(run_directory(train_config(prof, fold)) / "best.pt")
        ious = meta["metrics"]["val_class_iou"]
        classes = [0, *meta["classes"]]  # position k of the IoU list is relabelled class k
        for cls, iou in zip(classes, ious, strict=True):
            rows.append(
                {
                    "fold": fold,
                    "epoch": meta["epoch"],
                    "class_id": cls,
                    "name": class_name("synth", cls),
                    "iou": float(iou),
                }
            )
    return pd.DataFrame(rows)


def base_model_table(prof: Profile, folds: Sequence[int]) -> pd.DataFrame:
    """Per fold: epochs run, selected epoch, its base-class validation mIoU (with and without
    background) and the training time."""
    from fsstools.models.checkpoints import checkpoint_meta
    from fsstools.train import run_directory

    history = training_history(prof, folds)
    rows = []
    for fold in folds:
        meta = checkpoint_meta(run_directory(train_config(prof, fold)) / "best.pt")
        hist = history[history["fold"] == fold]
        rows.append(
            {
                "fold": fold,
                "epochs": int(hist["epoch"].max()),
                "selected_epoch": meta["epoch"],
                "val_miou": meta["metrics"]["val_miou"],
                "val_miou_base_classes": meta["metrics"]["val_miou_fg"],
                "train_minutes": float(hist["time_s"].sum()) / 60,
            }
        )
    return pd.DataFrame(rows)


def class_name(dataset: str, class_id: int) -> str:
    """Display name of a class id (0: background)."""
    if class_id == 0:
        return "background"
    if dataset == "synth":
        return SYNTH_CLASSES[class_id - 1]
    return splits.class_names(dataset)[class_id - 1]


# ----------------------------------------------------------------------------- studies


def prepare_study(cfg: EvalConfig, progress: bool = True) -> Study:
    """:func:`fsstools.evaluate.prepare` with features of the whole test list when it is
    short (see ``WHOLE_LIST_LIMIT``), so studies on the same checkpoint share one cache."""
    tic = time.perf_counter()
    study = evaluate.prepare(cfg, progress, whole_list_limit=WHOLE_LIST_LIMIT)
    print(
        f"fold {cfg.fold}: {len(study.episode_lists)} episode list(s), features of "
        f"{len(study.store.index)} images of {cfg.root} ready ({time.perf_counter() - tic:.1f} s)",
        flush=True,
    )
    return study


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
    return prepare_study(cfg, progress=False)


def method_configs(
    methods: Sequence[str | MethodConfig] | Mapping[str, MethodConfig],
) -> dict[str, MethodConfig]:
    """Label -> method: names of ``METHODS``, configs (labelled by their name) or a mapping."""
    if isinstance(methods, Mapping):
        return {label: dataclasses.replace(m, name=label) for label, m in methods.items()}
    out = {}
    for m in methods:
        cfg = METHODS[m] if isinstance(m, str) else m
        out[cfg.name] = cfg
    return out


def _code_version() -> str:
    """Hash of the code that turns features into scores, so cached scores follow its edits."""
    import fsstools.inference as inference_pkg

    files = sorted(Path(inference_pkg.__file__).parent.glob("*.py"))
    files += [Path(metrics.__file__), Path(evaluate.__file__)]
    return text_hash("".join(f.read_text() for f in files))


def _score_path(study: Study, shots: int, seed: int, method: MethodConfig) -> Path:
    spec = config_lib.to_dict(dataclasses.replace(method, name=""))
    blob = json.dumps(
        {
            "store": study.store.key,
            "episodes": study.episode_lists[shots, seed].hash,
            "method": spec,
            "code": _code_version(),
        },
        sort_keys=True,
    )
    return OUTPUTS / "cache" / "scores" / f"{text_hash(blob, 16)}.csv"


def score(
    study: Study,
    methods: Sequence[str | MethodConfig] | Mapping[str, MethodConfig],
    trace: bool = False,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict[ScoreKey, dict[str, torch.Tensor]]]:
    """Score methods on every episode list of ``study``, reading cached scores if any.

    Args:
        study: from :func:`synth_study` or :func:`prepare_study`.
        methods: see :func:`method_configs`; labels become the ``method`` column.
        trace: also return per-iteration traces.
        progress: print one line per (method, shots) with its time.

    Returns:
        Per-episode rows (method, fold, shots, seed, episode, class_id, fg/bg intersection
        and union, pi, true_share, pred_share) and, with ``trace``, (method, fold, shots) ->
        {name: (T, E) tensor}.
    """
    cfg = study.cfg
    frames, traces = [], {}
    for (shots, seed), episodes in study.episode_lists.items():
        for label, m in method_configs(methods).items():
            m = evaluate.resolve_method(m, cfg.reference)
            path = _score_path(study, shots, seed, m)
            trace_path = path.with_suffix(".traces.pt")
            tic = time.perf_counter()
            cached = path.is_file() and (trace_path.is_file() or not trace)
            if cached:
                rows = pd.read_csv(path)
                tr = torch.load(trace_path, weights_only=True) if trace else None
            else:
                rows, tr = evaluate.score_episodes(
                    study.store, episodes, m, cfg.device, cfg.batch_tasks, trace
                )
                if tr is not None:
                    atomic_torch_save({k: v.float() for k, v in tr.items()}, trace_path)
                atomic_write_text(path, rows.to_csv(index=False))
                rows = pd.read_csv(path)  # the same dtypes and values as a cached read
            if progress:
                how = "cached" if cached else f"{time.perf_counter() - tic:.1f} s"
                print(
                    f"  fold {cfg.fold} {label} {shots}-shot: {len(rows)} episodes ({how})",
                    flush=True,
                )
            rows.insert(0, "seed", seed)
            rows.insert(0, "shots", shots)
            rows.insert(0, "fold", cfg.fold)
            rows.insert(0, "method", label)
            frames.append(rows)
            if trace:
                traces[(label, cfg.fold, shots)] = tr
    return pd.concat(frames, ignore_index=True), traces


def evaluate_synth(
    prof: Profile,
    folds: Sequence[int],
    shots: Sequence[int],
    methods: Sequence[str | MethodConfig] | Mapping[str, MethodConfig],
    n_episodes: int,
    style: str = "A",
    seed: int = 0,
    device: str = "cpu",
    trace: bool = False,
) -> tuple[pd.DataFrame, dict[ScoreKey, dict[str, torch.Tensor]]]:
    """:func:`score` over folds: base model of each fold, tested on ``style``."""
    frames, traces = [], {}
    for fold in folds:
        study = synth_study(prof, fold, shots, n_episodes, style, seed, device)
        rows, tr = score(study, methods, trace)
        frames.append(rows)
        traces.update(tr)
    return pd.concat(frames, ignore_index=True), traces


def domain_shift(
    prof: Profile,
    folds: Sequence[int],
    shots: Sequence[int],
    methods: Sequence[str | MethodConfig],
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
        rows, _ = evaluate_synth(prof, folds, shots, methods, n_episodes, style, device=device)
        frames.append(rows.assign(domain=f"A -> {style}"))
    return pd.concat(frames, ignore_index=True)


def coco_to_pascal(
    pascal_root: str,
    coco_train_config: str,
    folds: Sequence[int],
    shots: Sequence[int],
    methods: Sequence[str | MethodConfig],
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
        print(
            "COCO -> PASCAL skipped: set pascal_root (and a COCO training config or "
            "checkpoint) to run it"
        )
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
        rows, _ = score(prepare_study(cfg), methods)
        frames.append(rows.assign(domain="COCO -> PASCAL"))
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------- summaries


def headline(
    episodes: pd.DataFrame, by: Sequence[str] = ("method", "shots"), n_boot: int = 1000
) -> pd.DataFrame:
    """Mean over folds of mIoU and FB-IoU with 95% intervals (the paper's headline)."""
    return evaluate.fold_mean(episodes, by=by, n_boot=n_boot)


def per_fold(
    episodes: pd.DataFrame, by: Sequence[str] = ("method", "fold", "shots"), n_boot: int = 1000
) -> pd.DataFrame:
    """mIoU and FB-IoU per fold with 95% bootstrap intervals over episodes."""
    return evaluate.summarize(episodes, by=by, n_boot=n_boot)


def _meter(rows: pd.DataFrame) -> metrics.IoUMeter:
    ordered = rows.sort_values(["seed", "episode"])
    records = ordered[evaluate.RECORD_COLUMNS].to_numpy(dtype=np.int64, copy=True)
    return metrics.IoUMeter.from_records(torch.from_numpy(records))


def differences(
    episodes: pd.DataFrame,
    reference: str,
    key: str = "method",
    by: Sequence[str] = ("shots",),
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Score of each ``key`` value minus that of ``reference`` on the very same episodes.

    Per fold, both are resampled with the same draws (a paired bootstrap: the interval
    reflects the difference, not each score's spread); the fold means of the resampled
    differences give the 95% interval of the mean difference over folds.

    Returns:
        Rows: ``key``, ``by``..., n_folds, and for miou and fbiou the difference (points
        as fractions) with ``_low``/``_high``.
    """
    out = []
    for group, grp in episodes.groupby(list(by), sort=False):
        group = group if isinstance(group, tuple) else (group,)
        ref = grp[grp[key] == reference]
        if ref.empty:
            raise ValueError(f"no rows of the reference {key}={reference!r} for {group}")
        for name, sub in grp.groupby(key, sort=False):
            if name == reference:
                continue
            points: dict[str, list[float]] = {"miou": [], "fbiou": []}
            samples: dict[str, list[torch.Tensor]] = {"miou": [], "fbiou": []}
            for fold, fold_rows in sub.groupby("fold"):
                a, b = _meter(fold_rows), _meter(ref[ref["fold"] == fold])
                if not torch.equal(a.records[:, 0], b.records[:, 0]):
                    raise ValueError(
                        f"{key}={name!r} and {reference!r} were not scored on the "
                        f"same episodes in fold {fold}"
                    )
                # equal seeds and episode counts give equal draws: the resamples are paired
                sa, sb = (metrics.bootstrap_samples(m, n_boot, seed) for m in (a, b))
                ca, cb = a.compute(), b.compute()
                for v in points:
                    points[v].append(ca[v] - cb[v])
                    samples[v].append(sa[v] - sb[v])
            row = {key: name, **dict(zip(by, group, strict=True)), "n_folds": len(points["miou"])}
            for v in points:
                mean = torch.stack(samples[v]).double().mean(0)
                lo, hi = torch.nanquantile(mean, torch.tensor([0.025, 0.975], dtype=mean.dtype))
                row.update(
                    {v: float(np.mean(points[v])), f"{v}_low": float(lo), f"{v}_high": float(hi)}
                )
            out.append(row)
    return pd.DataFrame(out)


def interval_table(
    summary: pd.DataFrame, index: str = "method", columns: str = "shots", value: str = "miou"
) -> pd.DataFrame:
    """``index`` x ``columns`` table of ``value`` in percent with its 95% interval."""
    cells = summary.assign(
        cell=[
            f"{100 * r[value]:.1f} [{100 * r[f'{value}_low']:.1f}, {100 * r[f'{value}_high']:.1f}]"
            for _, r in summary.iterrows()
        ]
    )
    return _wide_table(cells, "cell", index, columns)


def _wide_table(df: pd.DataFrame, value: str, index: str, columns: str) -> pd.DataFrame:
    """Pivot ``value`` to ``index`` x ``columns`` in first-seen row order, readable labels."""
    rows = list(dict.fromkeys(df[index]))
    table = df.pivot(index=index, columns=columns, values=value).loc[rows]
    table.columns = [f"{columns}={c}" for c in table.columns]
    if index == "method":
        table.index = [METHOD_LABELS.get(m, m) for m in table.index]
    table.index.name = index
    return table


def domain_drop(
    summary: pd.DataFrame, source: str = "A -> A", target: str = "A -> B"
) -> pd.DataFrame:
    """mIoU on ``source`` and on ``target`` and the drop between them per method and shots.

    Returns:
        Rows: method, shots, source and target mIoU (fractions), drop_points (percentage
        points, positive when the shift hurts).
    """
    wide = summary.pivot_table(
        index=["method", "shots"], columns="domain", values="miou", sort=False
    )
    out = wide[[source, target]].reset_index()
    out.columns.name = None
    out["drop_points"] = 100 * (out[source] - out[target])
    return out


def points_table(
    df: pd.DataFrame, value: str, index: str = "method", columns: str = "shots"
) -> pd.DataFrame:
    """``index`` x ``columns`` table of a value already in points, one decimal."""
    return _wide_table(df.assign(cell=df[value].map(lambda v: f"{v:.1f}")), "cell", index, columns)


def trace_table(
    traces: Mapping[ScoreKey, Mapping[str, torch.Tensor]],
    terms: Sequence[str] = ("loss", "ce", "entropy", "kl", "pi", "iou"),
) -> pd.DataFrame:
    """Per-iteration means of traces over episodes and folds.

    Returns:
        Tidy rows: method, shots, term, iteration, mean, low, high (mean +- 1.96 standard
        errors over episodes; NaN values, e.g. IoU with an empty union, are skipped).
    """
    pooled: dict[tuple[str, int, str], list[torch.Tensor]] = {}
    for (method, _, shots), tr in traces.items():
        if next(iter(tr.values())).shape[0] < 2:  # no step (inductive): nothing to follow
            continue
        for term in terms:
            if term in tr:
                pooled.setdefault((method, shots, term), []).append(tr[term].double())
    rows = []
    for (method, shots, term), parts in pooled.items():
        x = torch.cat(parts, dim=1)  # (T, E) over all folds
        ok = ~torch.isnan(x)
        n = ok.sum(1).clamp_min(1)
        mean = torch.where(ok, x, 0).sum(1) / n
        var = torch.where(ok, (x - mean[:, None]) ** 2, 0).sum(1) / (n - 1).clamp_min(1)
        half = 1.96 * (var / n).sqrt()
        for t in range(x.shape[0]):
            rows.append(
                {
                    "method": method,
                    "shots": shots,
                    "term": term,
                    "iteration": t,
                    "mean": float(mean[t]),
                    "low": float(mean[t] - half[t]),
                    "high": float(mean[t] + half[t]),
                }
            )
    return pd.DataFrame(rows)


def prior_errors(
    episodes: pd.DataFrame,
    traces: Mapping[ScoreKey, Mapping[str, torch.Tensor]],
    method: str = "repri",
) -> pd.DataFrame:
    """Relative error ``pi / true - 1`` of the estimated prior before and after its update.

    ``traces[...]["pi"]`` row 0 is the prior set from the initial classifier, the last row
    the prior in force at the end (after the re-estimations at ``t_pi``). The true share is
    the query's foreground share on the feature grid (``true_share``); episodes whose
    share is 0 there are dropped.

    Returns:
        Rows: fold, shots, episode, stage ("initial (t=0)" / "final (t=T)"), pi, true_share,
        rel_error.
    """
    frames = []
    for (m, fold, shots), tr in traces.items():
        if m != method:
            continue
        sel = episodes[
            (episodes["method"] == m) & (episodes["fold"] == fold) & (episodes["shots"] == shots)
        ].sort_values("episode")
        true = sel["true_share"].to_numpy()
        pi = tr["pi"].double().numpy()  # (T, E)
        for stage, row in (("initial (t=0)", pi[0]), ("final (t=T)", pi[-1])):
            frames.append(
                pd.DataFrame(
                    {
                        "fold": fold,
                        "shots": shots,
                        "episode": sel["episode"].to_numpy(),
                        "stage": stage,
                        "pi": row,
                        "true_share": true,
                    }
                )
            )
    out = pd.concat(frames, ignore_index=True)
    out = out[out["true_share"] > 0].copy()
    out["rel_error"] = out["pi"] / out["true_share"] - 1
    return out.reset_index(drop=True)


def prior_error_summary(errors: pd.DataFrame) -> pd.DataFrame:
    """Per shots and stage: median and mean relative error, median |error|, share within
    +-10% and +-25%."""
    g = errors.groupby(["shots", "stage"], sort=False)["rel_error"]
    return pd.DataFrame(
        {
            "n": g.size(),
            "median_error": g.median(),
            "mean_error": g.mean(),
            "median_abs_error": g.apply(lambda e: e.abs().median()),
            "within_10pct": g.apply(lambda e: (e.abs() <= 0.1).mean()),
            "within_25pct": g.apply(lambda e: (e.abs() <= 0.25).mean()),
        }
    ).reset_index()


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


# ----------------------------------------------------------------------------- files


def save_table(df: pd.DataFrame, output_dir: str | Path, name: str) -> Path:
    """Write ``df`` as ``<output_dir>/<name>.csv``."""
    return atomic_write_text(Path(output_dir) / f"{name}.csv", df.to_csv(index=False))


def save_figure(fig, output_dir: str | Path, name: str, dpi: int = 110) -> Path:
    """Save a matplotlib Figure as ``<output_dir>/<name>.png`` and return the path.

    Figures from :mod:`fsstools.plots` are not registered with pyplot, so nothing stays
    open after they are garbage-collected; pyplot figures are closed here.
    """
    path = Path(output_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    import matplotlib.pyplot as plt

    if plt.fignum_exists(getattr(fig, "number", -1)):
        plt.close(fig)
    return path


def markdown_table(df: pd.DataFrame, index: bool = True, digits: int = 3) -> str:
    """A GitHub markdown table (no extra dependency)."""
    frame = df.reset_index() if index else df

    def cell(v: object) -> str:
        if isinstance(v, float | np.floating):
            return f"{v:.{digits}f}"
        return str(v).replace("|", "/")

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join(lines)


def write_summary(output_dir: str | Path, title: str, blocks: Sequence[str | pd.DataFrame]) -> Path:
    """Write ``<output_dir>/summary.md``: a heading, then text and tables in order.

    ``fsstools reproduce`` concatenates these fragments into ``outputs/summary.md``.
    """
    parts = [f"## {title}", ""]
    for block in blocks:
        parts += [markdown_table(block) if isinstance(block, pd.DataFrame) else block, ""]
    return atomic_write_text(Path(output_dir) / SUMMARY_NAME, "\n".join(parts))


# ----------------------------------------------------------------------------- one episode


@dataclass
class EpisodeView:
    """Everything the walkthrough shows about one task (images at the padded test size).

    Attributes:
        class_id, class_name, shots, index: which task.
        query_image: (H, W, 3) uint8; padding black.
        query_mask: (H, W) {0, 1, 255}.
        support_images: (S, H, W, 3) uint8; support_masks: (S, H, W) {0, 1, 255}.
        cosine: (h, w) cosine of the query features with the support prototype.
        initial: (H, W) bool prediction of the initial classifier (no step).
        prediction: (H, W) bool prediction after the method's steps.
        probs: (h, w) final foreground probabilities on the feature grid.
        traces: name -> (T,) per-iteration values of the method.
        true_share: foreground share of the query's labelled valid pixels (feature grid).
        method: the method that produced ``prediction``.
    """

    class_id: int
    class_name: str
    shots: int
    index: int
    query_image: np.ndarray
    query_mask: np.ndarray
    support_images: np.ndarray
    support_masks: np.ndarray
    cosine: np.ndarray
    initial: np.ndarray
    prediction: np.ndarray
    probs: np.ndarray
    traces: dict[str, np.ndarray]
    true_share: float
    method: MethodConfig


def display_image(root: str | Path, image: str, mask: str, dataset: str, size: int) -> np.ndarray:
    """An image as the model saw it (test transform, padding black): (size, size, 3) uint8."""
    sample = test_transform(size)(*voc.load_pair(root, image, mask, splits.n_classes(dataset)))
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    img = (sample["image"] * std + mean).clamp(0, 1) * sample["valid"]  # (3, H, W)
    return (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # (H, W, 3)


def episodes_of_class(study: Study, shots: int, class_id: int, seed: int = 0) -> list[int]:
    """Positions of the episodes of ``class_id`` in the (shots, seed) list."""
    el = study.episode_lists[shots, seed]
    return [i for i, ep in enumerate(el.episodes) if ep.class_id == class_id]


def episode_view(
    study: Study,
    shots: int,
    index: int,
    method: MethodConfig | None = None,
    seed: int = 0,
    images: bool = True,
) -> EpisodeView:
    """Run ``method`` (default RePRI) on one task with traces and collect what to show.

    Args:
        images: load the images from disk (False: zeros, for cheap redraws of masks only).
    """
    method = method or METHODS["repri"]
    cfg = study.cfg
    el = study.episode_lists[shots, seed]
    ep = el.episodes[index]
    tb = gather(study.store, el, [index])
    valid = query_valid_mask(tb.query_mask_small, tb.query_valid_small, method.reference)
    size = tuple(tb.query_mask.shape[-2:])
    common = dict(query_mask=tb.query_mask_small)
    init = run_method(
        dataclasses.replace(method, iterations=0),
        tb.support_feats,
        tb.support_masks,
        tb.query_feats,
        valid,
        **common,
    )
    out = run_method(
        method, tb.support_feats, tb.support_masks, tb.query_feats, valid, trace=True, **common
    )
    fg = (tb.support_masks == 1).unsqueeze(2).float()  # (1, S, 1, h, w)
    proto = (tb.support_feats * fg).sum((1, 3, 4)) / fg.sum((1, 3, 4)).clamp_min(1)  # (1, C)
    proto = torch.nn.functional.normalize(proto, dim=1)
    qf = torch.nn.functional.normalize(tb.query_feats, dim=1)
    cosine = torch.einsum("bchw,bc->bhw", qf, proto)[0]  # (h, w)

    def picture(pair: tuple[str, str]) -> np.ndarray:
        if images:
            return display_image(cfg.root, pair[0], pair[1], cfg.dataset, cfg.size)
        return np.zeros((*size, 3), dtype=np.uint8)

    return EpisodeView(
        class_id=ep.class_id,
        class_name=class_name(cfg.dataset, ep.class_id),
        shots=shots,
        index=index,
        query_image=picture(ep.query),
        query_mask=tb.query_mask[0].numpy(),
        support_images=np.stack([picture(p) for p in ep.supports]),
        support_masks=np.stack(
            [
                episode_mask(
                    np.asarray(study.store.masks_full[study.store.index[img]]), ep.class_id
                )
                for img, _ in ep.supports
            ]
        ),
        cosine=cosine.numpy(),
        initial=(fg_probs(init.logits, size) > 0.5)[0].numpy(),
        prediction=(fg_probs(out.logits, size) > 0.5)[0].numpy(),
        probs=torch.sigmoid(out.logits[0]).numpy(),
        traces={k: v[:, 0].double().numpy() for k, v in out.traces.items()},
        true_share=float(oracle_prior(tb.query_mask_small.flatten(1), valid.flatten(1))[0]),
        method=method,
    )


def mask_iou(pred: np.ndarray, mask: np.ndarray) -> float:
    """Foreground IoU of a (H, W) bool prediction against a {0, 1, 255} mask."""
    scored = mask != IGNORE_INDEX
    inter = (pred & (mask == 1) & scored).sum()
    union = ((pred | (mask == 1)) & scored).sum()
    return float(inter / union) if union else float("nan")


def feature_pca(feats: np.ndarray, n_components: int = 3) -> np.ndarray:
    """Project features on their top principal components, scaled to [0, 1] per component.

    Args:
        feats: (N, C, h, w) features of a few images (fitted jointly, so colours compare).

    Returns:
        (N, h, w, n_components) float in [0, 1].
    """
    n, c, h, w = feats.shape
    x = torch.from_numpy(np.ascontiguousarray(feats)).double().permute(0, 2, 3, 1)
    x = x.reshape(-1, c)  # (N*h*w, C)
    x = x - x.mean(0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    proj = x @ v[:n_components].T  # (N*h*w, k)
    lo, hi = proj.quantile(0.01, dim=0), proj.quantile(0.99, dim=0)
    proj = ((proj - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)
    return proj.reshape(n, h, w, n_components).numpy()


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
