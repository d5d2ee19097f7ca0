"""Statistics over result rows: scores per group, fold means, paired differences, per-class
IoU, per-iteration traces and the error of the estimated prior.

Rows are the per-episode tables of :func:`fsstools.evaluate.score` (method, fold, shots,
seed, episode, the IoU record columns, ...). Every interval comes from
:func:`fsstools.metrics.bootstrap_draws`: episodes are resampled within each fold, folds
independently of each other, and two methods compared on the same episodes share their
resamples (a paired bootstrap).

Example:
    >>> import pandas as pd
    >>> rows = pd.DataFrame({"method": "m", "fold": [0, 0], "shots": 1, "seed": 0,
    ...     "episode": [0, 1], "class_id": [1, 2], "fg_inter": [5, 3], "fg_union": [10, 6],
    ...     "bg_inter": [80, 90], "bg_union": [85, 93]})
    >>> round(float(fold_mean(rows, n_boot=20)["miou"].iloc[0]), 3)
    0.5
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from fsstools import metrics

SCORES = ("miou", "fbiou")
TraceKey = tuple[str, int, int, int]
"""(method, fold, shots, seed)."""


def meter(rows: pd.DataFrame) -> metrics.IoUMeter:
    """An IoUMeter holding ``rows``' records, ordered by seed and episode."""
    ordered = rows.sort_values(["seed", "episode"]) if "seed" in rows else rows
    records = ordered[list(metrics.RECORD_COLUMNS)].to_numpy(dtype=np.int64, copy=True)
    return metrics.IoUMeter.from_records(torch.from_numpy(records))


def _groups(df: pd.DataFrame, by: Sequence[str]):
    for key, grp in df.groupby(list(by), sort=False):
        yield dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True)), grp


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
    for row, grp in _groups(episodes, by):
        m = meter(grp)
        (draws,) = metrics.bootstrap_draws([m], n_boot, seed, stratum=int(row.get("fold", 0)))
        point = metrics.point_scores(m)
        row["n_episodes"] = len(grp)
        for name in SCORES:
            ci = metrics.interval(point[name], draws[name])
            row[name], row[f"{name}_low"], row[f"{name}_high"] = ci["mean"], ci["low"], ci["high"]
        rows.append(row)
    return pd.DataFrame(rows)


def _fold_mean_row(row: dict, points: dict[str, list[float]],
                   draws: dict[str, list[torch.Tensor]]) -> dict:
    """Mean over folds of the points, and the interval of the mean of the folds' draws."""
    for name in SCORES:
        ci = metrics.interval(float(np.mean(points[name])), torch.stack(draws[name]).mean(0))
        row[name], row[f"{name}_low"], row[f"{name}_high"] = ci["mean"], ci["low"], ci["high"]
    return row


def fold_mean(
    episodes: pd.DataFrame,
    by: Sequence[str] = ("method", "shots"),
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean over folds of the per-fold scores (the paper's headline), with a 95% interval.

    Each fold is resampled independently (its own stratum); the fold means of the
    resampled scores give the interval.
    """
    out = []
    for row, grp in _groups(episodes, by):
        points: dict[str, list[float]] = {name: [] for name in SCORES}
        draws: dict[str, list[torch.Tensor]] = {name: [] for name in SCORES}
        for fold, fold_rows in grp.groupby("fold"):
            m = meter(fold_rows)
            (d,) = metrics.bootstrap_draws([m], n_boot, seed, stratum=int(fold))
            p = metrics.point_scores(m)
            for name in SCORES:
                points[name].append(p[name])
                draws[name].append(d[name])
        row["n_folds"] = grp["fold"].nunique()
        out.append(_fold_mean_row(row, points, draws))
    return pd.DataFrame(out)


def differences(
    episodes: pd.DataFrame,
    reference: str,
    key: str = "method",
    by: Sequence[str] = ("shots",),
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Score of each ``key`` value minus that of ``reference`` on the very same episodes.

    Per fold both are scored on the same resamples (a paired bootstrap: the interval
    reflects the difference, not each score's spread), folds independently; the fold
    means of the resampled differences give the 95% interval of the mean difference.

    Returns:
        Rows: ``key``, ``by``..., n_folds, and for miou and fbiou the difference (points
        as fractions) with ``_low``/``_high``.

    Raises:
        ValueError: no reference rows, or the two were not scored on the same episodes.
    """
    out = []
    for group, grp in _groups(episodes, by):
        ref = grp[grp[key] == reference]
        if ref.empty:
            raise ValueError(f"no rows of the reference {key}={reference!r} for {group}")
        for name, sub in grp.groupby(key, sort=False):
            if name == reference:
                continue
            points: dict[str, list[float]] = {v: [] for v in SCORES}
            draws: dict[str, list[torch.Tensor]] = {v: [] for v in SCORES}
            for fold, fold_rows in sub.groupby("fold"):
                a, b = meter(fold_rows), meter(ref[ref["fold"] == fold])
                if a.records.shape != b.records.shape or not torch.equal(
                    a.records[:, metrics.CLASS], b.records[:, metrics.CLASS]
                ):
                    raise ValueError(f"{key}={name!r} and {reference!r} were not scored on the "
                                     f"same episodes in fold {fold}")
                da, db = metrics.bootstrap_draws([a, b], n_boot, seed, stratum=int(fold))
                pa, pb = metrics.point_scores(a), metrics.point_scores(b)
                for v in SCORES:
                    points[v].append(pa[v] - pb[v])
                    draws[v].append(da[v] - db[v])
            row = {key: name, **group, "n_folds": len(points["miou"])}
            out.append(_fold_mean_row(row, points, draws))
    return pd.DataFrame(out)


def class_table(
    episodes: pd.DataFrame, by: Sequence[str] = ("method", "fold", "shots")
) -> pd.DataFrame:
    """Tidy per-class IoU: one row per group and class."""
    sums = episodes.groupby([*by, "class_id"], sort=False)[["fg_inter", "fg_union"]].sum()
    sums["iou"] = sums["fg_inter"] / sums["fg_union"].where(sums["fg_union"] > 0)
    return sums.reset_index()


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


def trace_table(
    traces: Mapping[TraceKey, Mapping[str, torch.Tensor]],
    terms: Sequence[str] = ("loss", "ce", "entropy", "kl", "pi", "iou"),
) -> pd.DataFrame:
    """Per-iteration means of traces over episodes, seeds and folds.

    Returns:
        Tidy rows: method, shots, term, iteration, mean, low, high (mean +- 1.96 standard
        errors over episodes; NaN values, e.g. IoU with an empty union, are skipped).
    """
    pooled: dict[tuple[str, int, str], list[torch.Tensor]] = {}
    for (method, _, shots, _), tr in traces.items():
        if not tr or next(iter(tr.values())).shape[0] < 2:  # no step (inductive, peers)
            continue
        for term in terms:
            if term in tr:
                pooled.setdefault((method, shots, term), []).append(tr[term].double())
    rows = []
    for (method, shots, term), parts in pooled.items():
        x = torch.cat(parts, dim=1)  # (T, E) over all folds and seeds
        ok = ~torch.isnan(x)
        n = ok.sum(1).clamp_min(1)
        mean = torch.where(ok, x, 0).sum(1) / n
        var = torch.where(ok, (x - mean[:, None]) ** 2, 0).sum(1) / (n - 1).clamp_min(1)
        half = 1.96 * (var / n).sqrt()
        rows += [
            {"method": method, "shots": shots, "term": term, "iteration": t,
             "mean": float(mean[t]), "low": float(mean[t] - half[t]),
             "high": float(mean[t] + half[t])}
            for t in range(x.shape[0])
        ]
    return pd.DataFrame(rows)


def prior_errors(
    episodes: pd.DataFrame,
    traces: Mapping[TraceKey, Mapping[str, torch.Tensor]],
    method: str = "repri",
) -> pd.DataFrame:
    """Relative error ``pi / true - 1`` of the estimated prior before and after its update.

    ``traces[...]["pi"]`` row 0 is the prior set from the initial classifier, the last row
    the prior in force at the end (after the re-estimations at ``t_pi``). The true share is
    the query's foreground share on the feature grid (``true_share``); episodes whose
    share is 0 there are dropped.

    Returns:
        Rows: fold, shots, seed, episode, stage ("initial (t=0)" / "final (t=T)"), pi,
        true_share, rel_error.
    """
    frames = []
    for (m, fold, shots, seed), tr in traces.items():
        if m != method:
            continue
        sel = episodes[
            (episodes["method"] == m) & (episodes["fold"] == fold)
            & (episodes["shots"] == shots) & (episodes["seed"] == seed)
        ].sort_values("episode")
        pi = tr["pi"].double().numpy()  # (T, E)
        for stage, row in (("initial (t=0)", pi[0]), ("final (t=T)", pi[-1])):
            frames.append(pd.DataFrame({
                "fold": fold, "shots": shots, "seed": seed,
                "episode": sel["episode"].to_numpy(), "stage": stage, "pi": row,
                "true_share": sel["true_share"].to_numpy(),
            }))  # fmt: skip
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
