"""Scores of the generalized protocol: base and novel mIoU per run, their mean and harmonic
mean, and intervals over runs (and base seeds) with paired differences.

The rows are the per-class sums of :func:`fsstools.evaluation.generalized.score` (method,
fold, shots, run, class_id, kind, inter, union, ...), optionally with a ``base_seed``
column. A run's class IoU is its intersection over its union summed over the run's queries;
a class whose union is 0 has none. Base mIoU averages the base classes, novel mIoU the novel
ones (background left out). A fold's score averages its runs (and base seeds); the headline
averages the folds; the mean is (base + novel) / 2 and the harmonic mean 2 base novel /
(base + novel) of those averages, as the authors report them.

Intervals. The support set is what varies most from run to run, so runs play the part the
episodes play in :mod:`fsstools.evaluation.stats`: each bootstrap draw resamples the runs of
a fold with replacement (seeded by :func:`fsstools.metrics.stratum_seed`, the fold its
stratum) and, with several base seeds, picks base seeds with replacement
(:func:`fsstools.metrics.seed_picks`; every base seed is scored on the same support sets).
Two methods compared take the very same picks: a paired difference. Five runs give only
126 distinct resamples, so these intervals are coarse; they say how far the support draw
moves a score, not how far the query images would.

Example:
    >>> import pandas as pd
    >>> rows = pd.DataFrame({"method": "m", "fold": 0, "shots": 1, "run": [0, 0, 0, 1, 1, 1],
    ...     "class_id": [0, 1, 2] * 2, "kind": ["background", "base", "novel"] * 2,
    ...     "inter": [9, 3, 1, 9, 3, 2], "union": [10, 4, 4, 10, 4, 4]})
    >>> s = summarize(rows, n_boot=20).iloc[0]
    >>> float(s["base"]), float(s["novel"]), round(float(s["hmean"]), 4)
    (0.75, 0.375, 0.5)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from fsstools import metrics

SCORES = ("base", "novel", "mean", "hmean")
"""Base mIoU, novel mIoU, their mean and harmonic mean (fractions)."""
CLASS_COLUMNS = ("class_index", "class_id", "kind", "inter", "union", "target")
RUNS_ONLY, SEEDS_X_RUNS = "runs", "base seeds x runs"
"""The ``interval`` column: what a table's intervals resample."""


def harmonic_mean(base, novel):
    """2 base novel / (base + novel), 0 where both are 0 (floats, arrays or tensors)."""
    total = base + novel
    if isinstance(total, torch.Tensor):
        return torch.where(total > 0, 2 * base * novel / total.clamp_min(1e-12), 0.0)
    total = np.asarray(total, dtype=float)
    out = np.divide(2 * np.asarray(base) * np.asarray(novel), total,
                    out=np.zeros_like(total), where=total > 0)
    return float(out) if out.ndim == 0 else out


def run_scores(rows: pd.DataFrame) -> pd.DataFrame:
    """Base and novel mIoU, their mean and harmonic mean of every run.

    Returns:
        One row per run (grouped by every column that is not a class column): the group
        columns, n_base_classes and n_novel_classes (classes with an IoU) and :data:`SCORES`.
    """
    keys = [c for c in rows.columns if c not in CLASS_COLUMNS]
    scored = rows[rows["union"] > 0].assign(iou=lambda d: d["inter"] / d["union"])
    out = []
    for key, grp in scored.groupby(keys, sort=False):
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        for kind in ("base", "novel"):
            sel = grp.loc[grp["kind"] == kind, "iou"]
            row[f"n_{kind}_classes"] = len(sel)
            row[kind] = float(sel.mean()) if len(sel) else float("nan")
        row["mean"] = (row["base"] + row["novel"]) / 2
        row["hmean"] = harmonic_mean(row["base"], row["novel"])
        out.append(row)
    return pd.DataFrame(out)


def _matrix(runs: pd.DataFrame, score: str) -> tuple[np.ndarray, list, list]:
    """(n_seeds, n_runs) scores of one fold, base seeds and runs sorted, and their ids.

    Raises:
        ValueError: a base seed misses a run another has (the design must be crossed).
    """
    if "base_seed" not in runs:
        runs = runs.assign(base_seed=0)
    wide = runs.pivot_table(index="base_seed", columns="run", values=score, aggfunc="first",
                            dropna=False)
    if wide.isna().any().any() and not runs[score].isna().any():
        raise ValueError("every base seed must be scored on the same runs; got "
                         f"{runs.groupby('base_seed')['run'].apply(sorted).to_dict()}")
    return wide.to_numpy(dtype=float), list(wide.index), list(wide.columns)


def _fold_draws(mat: np.ndarray, n_boot: int, seed: int, stratum: int) -> torch.Tensor:
    """(n_boot,) means of ``mat`` (n_seeds, n_runs) over resampled seeds and runs."""
    n_seeds, n_runs = mat.shape
    g = torch.Generator().manual_seed(metrics.stratum_seed(seed, stratum))
    runs = torch.randint(n_runs, (n_boot, n_runs), generator=g)  # (R, n_runs)
    x = torch.tensor(mat)  # (n_seeds, n_runs)
    per_seed = x[:, runs].mean(dim=2)  # (n_seeds, R): each seed's mean over the picked runs
    if n_seeds == 1:
        return per_seed[0]
    picks = metrics.seed_picks(n_seeds, n_boot, seed, stratum)  # (R, n_seeds)
    return per_seed.T.gather(1, picks).mean(dim=1)


def _folds(runs: pd.DataFrame, n_boot: int, seed: int) -> dict:
    """Points and draws of base and novel mIoU averaged over folds, and the design's size."""
    points = {s: [] for s in ("base", "novel")}
    draws = {s: [] for s in ("base", "novel")}
    n_runs, n_seeds = [], []
    for fold, grp in runs.groupby("fold"):
        for s in ("base", "novel"):
            mat, seeds, run_ids = _matrix(grp, s)
            points[s].append(float(mat.mean()))
            draws[s].append(_fold_draws(mat, n_boot, seed, int(fold)))
        n_runs.append(len(run_ids))
        n_seeds.append(len(seeds))
    out = {s: (float(np.mean(points[s])), torch.stack(draws[s]).mean(0)) for s in points}
    out["design"] = {"n_folds": len(n_runs), "n_runs": min(n_runs),
                     "n_base_seeds": min(n_seeds),
                     "interval": RUNS_ONLY if max(n_seeds) == 1 else SEEDS_X_RUNS}
    return out


def _all_scores(parts: dict) -> dict[str, tuple[float, torch.Tensor]]:
    """Points and draws of the four scores from those of base and novel."""
    (bp, bd), (np_, nd) = parts["base"], parts["novel"]
    return {"base": (bp, bd), "novel": (np_, nd), "mean": ((bp + np_) / 2, (bd + nd) / 2),
            "hmean": (harmonic_mean(bp, np_), harmonic_mean(bd, nd))}


def _fill(row: dict, scores: dict[str, tuple[float, torch.Tensor]]) -> dict:
    for name, (point, draws) in scores.items():
        ci = metrics.interval(point, draws)
        row[name], row[f"{name}_low"], row[f"{name}_high"] = ci["mean"], ci["low"], ci["high"]
    return row


def _groups(df: pd.DataFrame, by: Sequence[str]):
    for key, grp in df.groupby(list(by), sort=False):
        yield dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True)), grp


def summarize(rows: pd.DataFrame, by: Sequence[str] = ("method", "shots"), n_boot: int = 1000,
              seed: int = 0) -> pd.DataFrame:
    """Base and novel mIoU, mean and harmonic mean per group, mean over folds, with 95%
    intervals over runs (and base seeds).

    Returns:
        Rows: ``by``..., n_folds, n_runs, n_base_seeds, interval, and each of
        :data:`SCORES` with ``_low``/``_high``.
    """
    runs = run_scores(rows)
    out = []
    for row, grp in _groups(runs, by):
        parts = _folds(grp, n_boot, seed)
        row.update(parts["design"])
        out.append(_fill(row, _all_scores(parts)))
    return pd.DataFrame(out)


def difference(rows: pd.DataFrame, first: str, second: str, key: str = "method",
               by: Sequence[str] = ("shots",), n_boot: int = 1000, seed: int = 0
               ) -> pd.DataFrame:
    """``first`` minus ``second`` (values of ``key``) on the same runs and base seeds, with
    a paired 95% interval: both take the same resamples of runs and seeds.

    Returns:
        Rows: ``by``..., first, second, n_folds, n_runs, n_base_seeds, interval, and the
        difference of each of :data:`SCORES` (fractions) with ``_low``/``_high``.

    Raises:
        ValueError: no rows of one of them, or they were not scored on the same folds, runs
            and base seeds.
    """
    runs = run_scores(rows)
    out = []
    for row, grp in _groups(runs, by):
        a, b = grp[grp[key] == first], grp[grp[key] == second]
        if a.empty or b.empty:
            raise ValueError(f"no rows of {key}={first if a.empty else second!r} for {row}")
        ids = [sorted(map(tuple, d[[c for c in ("fold", "run", "base_seed") if c in d]]
                          .to_numpy().tolist())) for d in (a, b)]
        if ids[0] != ids[1]:
            raise ValueError(f"{key}={first!r} and {second!r} were not scored on the same "
                             f"folds, runs and base seeds for {row}")
        fa = _folds(a, n_boot, seed)
        pa, pb = _all_scores(fa), _all_scores(_folds(b, n_boot, seed))
        diff = {s: (pa[s][0] - pb[s][0], pa[s][1] - pb[s][1]) for s in SCORES}
        row.update(first=first, second=second, **fa["design"])
        out.append(_fill(row, diff))
    return pd.DataFrame(out)


def class_table(rows: pd.DataFrame, by: Sequence[str] = ("method", "fold", "shots")
                ) -> pd.DataFrame:
    """Per-class IoU averaged over runs (and base seeds): one row per group and class with
    kind, iou (mean of the runs' IoUs where the class has one) and n_runs."""
    scored = rows[rows["union"] > 0].assign(iou=lambda d: d["inter"] / d["union"])
    g = scored.groupby([*by, "class_id", "kind"], sort=False)["iou"]
    return g.agg(iou="mean", n_runs="size").reset_index()
