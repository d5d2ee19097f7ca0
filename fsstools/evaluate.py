"""Checkpoint + saved episodes + inference methods -> tidy scores (DataFrame, CSV, config).

The flow per study: sample (or reload) one episode list per (shots, seed), extract the
features of the union of their images once, then run every method on every list and
keep one row per episode. Summaries (mIoU, FB-IoU with bootstrap intervals, fold means)
are computed from those rows, so a figure can always be traced back to its episodes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from fsstools import config as config_lib
from fsstools import metrics
from fsstools.artifacts import OUTPUTS, atomic_write_text
from fsstools.data import splits, voc
from fsstools.data.episodes import EpisodeList, load_episodes, sample_episodes, save_episodes
from fsstools.features import FeatureStore, ensure_features, episode_list_images, gather
from fsstools.inference import (
    METHODS,
    MethodConfig,
    fg_probs,
    oracle_prior,
    query_valid_mask,
    run_method,
)

RECORD_COLUMNS = ["class_id", "fg_inter", "fg_union", "bg_inter", "bg_union"]
DEFAULT_METHODS = ("inductive", "ce", "ce_h", "ce_kl", "repri", "oracle_repri")


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate: which data, which episodes, which methods.

    Attributes:
        dataset: "synth", "pascal" or "coco" (the class table of the test data).
        root: data root holding the test list.
        list_file: image list of the test split, relative to ``root``.
        fold, scheme: which classes are novel.
        coco_to_pascal: test PASCAL classes absent from COCO fold ``fold``'s training classes.
        size: test-time image size (longer side, then padded square).
        shots, seeds, n_episodes: one episode list per (shots, seed).
        methods: names from ``fsstools.inference.METHODS``.
        reference: run every method in its reference-compatible variant.
        checkpoint: explicit base-model checkpoint; else ``train_config`` is trained (cached).
        train_config, train_overrides: training config producing the checkpoint.
        device, feature_dtype, batch_tasks: where and how to compute (results do not depend
            on batch_tasks).
        n_boot: bootstrap resamples for the intervals.
        out_dir: where CSVs, episodes and the resolved config go.
    """

    dataset: str = "synth"
    root: str = "data/synth/A"
    list_file: str = "lists/val.txt"
    fold: int = 0
    scheme: str = "interleaved"
    coco_to_pascal: bool = False
    size: int = 128
    shots: tuple[int, ...] = (1, 5)
    seeds: tuple[int, ...] = (0,)
    n_episodes: int = 1000
    methods: tuple[str, ...] = DEFAULT_METHODS
    reference: bool = False
    checkpoint: str | None = None
    train_config: str | None = "configs/synth/fold0.yaml"
    train_overrides: tuple[str, ...] = ()
    device: str = "cpu"
    feature_dtype: str = "float32"
    batch_tasks: int | None = None
    n_boot: int = 1000
    out_dir: str = str(OUTPUTS / "eval")


@dataclass
class Study:
    """Episodes and cached features of one evaluation, ready for any number of methods."""

    cfg: EvalConfig
    checkpoint: Path
    episode_lists: dict[tuple[int, int], EpisodeList]  # (shots, seed) -> episodes
    store: FeatureStore
    meta: dict = field(default_factory=dict)


def resolve_checkpoint(cfg: EvalConfig) -> Path:
    """The explicit checkpoint, or the (cached) result of training ``cfg.train_config``."""
    if cfg.checkpoint:
        path = Path(cfg.checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist; fix EvalConfig.checkpoint")
        return path
    if not cfg.train_config:
        raise ValueError("EvalConfig needs a checkpoint or a train_config")
    from fsstools.train import TrainConfig, ensure_trained

    return ensure_trained(config_lib.load(TrainConfig, cfg.train_config, cfg.train_overrides))


def test_class_list(cfg: EvalConfig) -> list[int] | None:
    """Classes to sample episodes from (None: the fold's novel classes)."""
    if cfg.coco_to_pascal:
        return splits.coco_to_pascal_classes(cfg.fold, cfg.scheme)
    return None


def episodes_for(cfg: EvalConfig, shots: int, seed: int) -> EpisodeList:
    """Sample the episodes of (shots, seed), or reload them if already saved for this data."""
    classes = test_class_list(cfg)
    tag = "c2p" if cfg.coco_to_pascal else cfg.scheme
    name = f"{cfg.dataset}-{tag}-fold{cfg.fold}-{shots}shot-seed{seed}-n{cfg.n_episodes}.json"
    key = config_lib.config_hash({"root": str(Path(cfg.root).resolve()), "list": cfg.list_file})
    path = OUTPUTS / "episodes" / key / name
    if path.is_file():
        return load_episodes(path)
    el = sample_episodes(
        cfg.root,
        cfg.list_file,
        cfg.dataset,
        cfg.fold,
        shots,
        cfg.n_episodes,
        seed,
        scheme=cfg.scheme,
        classes=classes,
    )
    save_episodes(el, path)
    return el


def prepare(cfg: EvalConfig, progress: bool = True, whole_list_limit: int = 0) -> Study:
    """Checkpoint, episode lists and features for ``cfg`` (all cached on disk).

    Features cover the images of the episodes, or the whole test list when it holds at most
    ``whole_list_limit`` images, so that later studies with other shots or episode counts
    on the same checkpoint reuse one feature cache.
    """
    checkpoint = resolve_checkpoint(cfg)
    lists = {(k, s): episodes_for(cfg, k, s) for k in cfg.shots for s in cfg.seeds}
    pairs = voc.read_pairs(cfg.root, cfg.list_file)
    if len(pairs) > whole_list_limit:
        pairs = episode_list_images(list(lists.values()))
    store = ensure_features(
        checkpoint,
        cfg.root,
        pairs,
        cfg.dataset,
        cfg.size,
        cfg.device,
        dtype=cfg.feature_dtype,
        progress=progress,
    )
    return Study(cfg, checkpoint, lists, store)


def resolve_method(name_or_cfg: str | MethodConfig, reference: bool = False) -> MethodConfig:
    m = METHODS[name_or_cfg] if isinstance(name_or_cfg, str) else name_or_cfg
    return dataclasses.replace(m, reference=True) if reference else m


def score_episodes(
    store: FeatureStore,
    episodes: EpisodeList,
    method: MethodConfig,
    device: str | torch.device = "cpu",
    batch_tasks: int | None = None,
    trace: bool = False,
) -> tuple[pd.DataFrame, dict[str, torch.Tensor] | None]:
    """Run ``method`` on every episode and score it at the padded image size.

    Returns:
        One row per episode (episode, class_id, fg/bg intersection and union, pi, true_share,
        pred_share) and, with ``trace``, name -> (T, E) traces over all episodes.
    """
    n = len(episodes.episodes)
    batch = batch_tasks or 256
    meter = metrics.IoUMeter()
    extra: dict[str, list[torch.Tensor]] = {"pi": [], "true_share": [], "pred_share": []}
    traces: dict[str, list[torch.Tensor]] = {}
    for start in range(0, n, batch):
        tb = gather(store, episodes, range(start, min(start + batch, n)), device)
        valid = query_valid_mask(tb.query_mask_small, tb.query_valid_small, method.reference)
        out = run_method(
            method,
            tb.support_feats,
            tb.support_masks,
            tb.query_feats,
            valid,
            query_mask=tb.query_mask_small,
            trace=trace,
        )
        pred = fg_probs(out.logits, tuple(tb.query_mask.shape[-2:])) > 0.5  # (B, H, W)
        meter.update(pred, tb.query_mask, tb.class_id)
        scored = tb.query_mask != 255
        extra["pi"].append(out.pi.float().cpu())
        extra["true_share"].append(
            oracle_prior(tb.query_mask_small.flatten(1), tb.query_valid_small.flatten(1)).cpu()
        )
        share = (pred & scored).sum((1, 2)) / scored.sum((1, 2)).clamp_min(1)
        extra["pred_share"].append(share.float().cpu())
        for k, v in (out.traces or {}).items():
            traces.setdefault(k, []).append(v.float().cpu())
    rows = pd.DataFrame(meter.records.cpu().numpy(), columns=RECORD_COLUMNS)
    rows.insert(0, "episode", np.arange(n))
    for k, v in extra.items():
        rows[k] = torch.cat(v).numpy()
    return rows, ({k: torch.cat(v, dim=1) for k, v in traces.items()} if trace else None)


def run_methods(
    study: Study,
    methods: Iterable[str | MethodConfig] | None = None,
    progress: bool = True,
    trace: bool = False,
) -> tuple[pd.DataFrame, dict]:
    """Score methods on every episode list of ``study``.

    Returns:
        per-episode DataFrame with columns method, fold, shots, seed, episode, class_id,
        fg/bg intersection and union, pi, true_share, pred_share; and, with ``trace``,
        {(method, shots, seed): traces}.
    """
    cfg = study.cfg
    chosen = [resolve_method(m, cfg.reference) for m in (methods or cfg.methods)]
    frames, all_traces = [], {}
    jobs = [(m, key) for key in study.episode_lists for m in chosen]
    for m, (shots, seed) in tqdm(jobs, desc="methods", disable=not progress):
        rows, tr = score_episodes(
            study.store, study.episode_lists[(shots, seed)], m, cfg.device, cfg.batch_tasks, trace
        )
        rows.insert(0, "seed", seed)
        rows.insert(0, "shots", shots)
        rows.insert(0, "fold", cfg.fold)
        rows.insert(0, "method", m.name)
        frames.append(rows)
        if trace:
            all_traces[(m.name, shots, seed)] = tr
    return pd.concat(frames, ignore_index=True), all_traces


def _records(df: pd.DataFrame) -> torch.Tensor:
    return torch.from_numpy(df[RECORD_COLUMNS].to_numpy(dtype=np.int64, copy=True))


def summarize(
    episodes: pd.DataFrame,
    by: Sequence[str] = ("method", "fold", "shots"),
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """mIoU and FB-IoU per group with bootstrap 95% intervals over episodes.

    Seeded runs of a group are pooled as one larger episode set (the mean over runs of
    class IoUs summed over episodes differs from it only through the class balance).
    """
    rows = []
    for key, grp in episodes.groupby(list(by), sort=False):
        meter = metrics.IoUMeter.from_records(_records(grp))
        ci = metrics.bootstrap_ci(meter, n_boot=n_boot, seed=seed)
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key, strict=True))
        row["n_episodes"] = len(grp)
        for name in ("miou", "fbiou"):
            row[name] = ci[name]["mean"]
            row[f"{name}_low"], row[f"{name}_high"] = ci[name]["low"], ci[name]["high"]
        rows.append(row)
    return pd.DataFrame(rows)


def fold_mean(
    episodes: pd.DataFrame,
    by: Sequence[str] = ("method", "shots"),
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean over folds of the per-fold scores (the paper's headline), with a 95% interval.

    Each fold is resampled independently and the fold means of the resamples give the
    interval.
    """
    rows = []
    for key, grp in episodes.groupby(list(by), sort=False):
        samples: dict[str, list[torch.Tensor]] = {"miou": [], "fbiou": []}
        points: dict[str, list[float]] = {"miou": [], "fbiou": []}
        for _, fold_grp in grp.groupby("fold"):
            meter = metrics.IoUMeter.from_records(_records(fold_grp))
            full = meter.compute()
            boot = metrics.bootstrap_samples(meter, n_boot=n_boot, seed=seed)
            for name in samples:
                samples[name].append(boot[name])
                points[name].append(full[name])
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key, strict=True))
        row["n_folds"] = grp["fold"].nunique()
        for name in samples:
            mean_samples = torch.stack(samples[name]).mean(0)
            lo, hi = torch.nanquantile(mean_samples.double(), torch.tensor([0.025, 0.975]).double())
            row[name] = float(np.mean(points[name]))
            row[f"{name}_low"], row[f"{name}_high"] = float(lo), float(hi)
        rows.append(row)
    return pd.DataFrame(rows)


def class_table(
    episodes: pd.DataFrame, by: Sequence[str] = ("method", "fold", "shots")
) -> pd.DataFrame:
    """Tidy per-class IoU: one row per group and class."""
    sums = episodes.groupby([*by, "class_id"], sort=False)[["fg_inter", "fg_union"]].sum()
    sums["iou"] = sums["fg_inter"] / sums["fg_union"].where(sums["fg_union"] > 0)
    return sums.reset_index()


def save_results(
    cfg: EvalConfig,
    episodes: pd.DataFrame,
    summary: pd.DataFrame,
    out_dir: str | Path,
    extra: dict | None = None,
) -> Path:
    """Write episodes.csv, summary.csv, classes.csv and the resolved config into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "episodes.csv", episodes.to_csv(index=False))
    atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    atomic_write_text(out / "classes.csv", class_table(episodes).to_csv(index=False))
    config_lib.save_yaml(cfg, out / "config.yaml")
    if extra:
        atomic_write_text(out / "meta.json", json.dumps(extra, indent=2, default=str))
    return out


def evaluate(cfg: EvalConfig, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run ``cfg`` end to end; returns (per-episode rows, summary) and saves them."""
    study = prepare(cfg, progress)
    episodes, _ = run_methods(study, progress=progress)
    summary = summarize(episodes, n_boot=cfg.n_boot)
    meta = {
        "checkpoint": str(study.checkpoint),
        "features": study.store.key,
        "episode_hashes": {
            f"{k}shot-seed{s}": el.hash for (k, s), el in study.episode_lists.items()
        },
    }
    save_results(cfg, episodes, summary, cfg.out_dir, meta)
    return episodes, summary


def format_table(summary: pd.DataFrame, value: str = "miou", cols: str = "shots") -> pd.DataFrame:
    """Method x ``cols`` table of ``value`` in percent with its interval, as strings."""

    def cell(r: pd.Series) -> str:
        return (
            f"{100 * r[value]:.1f} [{100 * r[f'{value}_low']:.1f}, {100 * r[f'{value}_high']:.1f}]"
        )

    table = summary.assign(cell=summary.apply(cell, axis=1))
    order = list(dict.fromkeys(summary["method"]))
    return table.pivot(index="method", columns=cols, values="cell").loc[order]


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="fsstools evaluate", description="Score inference methods on saved episodes."
    )
    parser.add_argument("--config", type=Path, help="EvalConfig YAML (configs/synth/eval.yaml)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set shots=[1,5]",
    )
    args = parser.parse_args(argv)
    cfg = config_lib.load(EvalConfig, args.config, args.set)
    _, summary = evaluate(cfg)
    print(format_table(summary).to_string())
    print(f"results in {cfg.out_dir}")
    return 0
