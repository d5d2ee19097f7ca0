"""Statistics over result rows: scores per group, fold means, paired differences, per-class
IoU, per-iteration traces and the error of the estimated prior.

Rows are the per-episode tables of :func:`fsstools.evaluation.pipeline.score` (method, fold, shots,
seed, episode, the IoU record columns, ...), optionally with a ``base_seed`` column: the
seed of the base training whose model was scored. Every interval comes from
:func:`fsstools.metrics.bootstrap_draws`: episodes are resampled within each fold, folds
independently of each other, and two methods compared on the same episodes share their
resamples (a paired bootstrap).

Base seeds. Base training varies by several points with its seed, so when a fold's
episodes were scored with models of several base seeds, the design is crossed (every base
seed on the same episodes, which is checked) and the intervals cover both levels
(:func:`fsstools.metrics.crossed_draws`). A fold's score is the mean over its base seeds of
each seed's score on all episodes. Each draw resamples the episodes (one resample for all
seeds, and for both methods of a difference) and, independently, picks m base seeds among
the fold's m with replacement (the same picks for both methods, so a difference is paired
over seeds too), then averages the picked seeds' resampled scores; folds stay independent
strata. This is coarse with few seeds: the bootstrap variance of a mean of m values is
(m - 1) / m times the usual estimate s^2 / m, so with m = 3 the interval understates the
seed variance by about a third (its seed part is about a fifth too narrow), and 3 seeds
give only 10 distinct picks. (The seed x episode interaction enters through both levels,
which errs slightly the other way; Owen 2007, "the pigeonhole bootstrap".) Show
:func:`seed_spread` beside it. With one base seed per fold, or no ``base_seed`` column,
nothing changes: episodes only.

Every table of intervals says what they cover: ``n_base_seeds`` (the fewest base seeds of
any fold; folds may differ, each averages its own) and ``interval`` ("episodes" or "base
seeds x episodes"). ``base_seed`` is not a grouping column unless ``by`` names it.

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
EPISODES_ONLY, SEEDS_X_EPISODES = "episodes", "base seeds x episodes"
"""The ``interval`` column: what a table's intervals resample."""
TraceKey = tuple[str, int, int, int]
"""(method, fold, shots, seed)."""


def _ordered(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.sort_values(["seed", "episode"]) if "seed" in rows else rows


def meter(rows: pd.DataFrame) -> metrics.IoUMeter:
    """An IoUMeter holding ``rows``' records, ordered by seed and episode."""
    records = _ordered(rows)[list(metrics.RECORD_COLUMNS)].to_numpy(dtype=np.int64, copy=True)
    return metrics.IoUMeter.from_records(torch.from_numpy(records))


def _episode_ids(rows: pd.DataFrame) -> np.ndarray:
    """(E, k) class, seed and episode ids (those present) of ``rows``, in meter order."""
    ids = [c for c in ("class_id", "seed", "episode") if c in rows]
    return _ordered(rows)[ids].to_numpy()


def _base_seed_meters(rows: pd.DataFrame, where: str) -> tuple[list, list[metrics.IoUMeter]]:
    """The base seeds of ``rows`` (sorted; ``[None]`` without a base_seed column) and a meter
    per seed.

    Raises:
        ValueError: missing base seeds, or base seeds not scored on the same episodes
            (class, seed and episode ids, in order); ``where`` names the rows.
    """
    if "base_seed" not in rows or rows.empty:
        return [None], [meter(rows)]
    if rows["base_seed"].isna().any():
        raise ValueError(f"{where}: {int(rows['base_seed'].isna().sum())} rows have no "
                         "base_seed; fill it (one value for a single base training) or drop "
                         "the column")
    seeds, meters, ids = [], [], []
    for s, sub in rows.groupby("base_seed", sort=True):
        seeds.append(s)
        meters.append(meter(sub))
        ids.append(_episode_ids(sub))
    for s, other in zip(seeds[1:], ids[1:], strict=True):
        if other.shape != ids[0].shape or not (other == ids[0]).all():
            raise ValueError(f"{where}: base seeds {seeds[0]} and {s} were not scored on the "
                             f"same episodes ({len(ids[0])} and {len(other)} episodes); the "
                             "crossed bootstrap needs every base seed on the same episodes")
    return seeds, meters


def _coverage(n_seeds: Sequence[int]) -> dict:
    """``n_base_seeds`` (the fewest of any fold) and what the intervals resample."""
    fewest, most = min(n_seeds), max(n_seeds)
    if most == 1:
        label = EPISODES_ONLY
    elif fewest > 1:
        label = SEEDS_X_EPISODES
    else:
        label = f"{SEEDS_X_EPISODES} (episodes only in folds with one base seed)"
    return {"n_base_seeds": fewest, "interval": label}


def _groups(df: pd.DataFrame, by: Sequence[str]):
    for key, grp in df.groupby(list(by), sort=False):
        yield dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True)), grp


def summarize(
    episodes: pd.DataFrame,
    by: Sequence[str] = ("method", "fold", "shots"),
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """mIoU and FB-IoU per group with bootstrap 95% intervals over episodes (and base seeds).

    Seeded runs of a group are pooled as one larger episode set (the mean over runs of
    class IoUs summed over episodes differs from it only through the class balance).
    Several base seeds in a group are averaged, and resampled (see the module docstring).
    With "fold" in ``by``: the terms :func:`fold_mean` averages, on the same resamples.

    Returns:
        Rows: ``by``..., n_episodes (per base seed), n_base_seeds, interval, and miou and
        fbiou with ``_low``/``_high``.
    """
    rows = []
    for row, grp in _groups(episodes, by):
        seeds, meters = _base_seed_meters(grp, f"group {row}")
        (draws,) = metrics.crossed_draws([meters], n_boot, seed, stratum=int(row.get("fold", 0)))
        point = metrics.crossed_point_scores(meters)
        row["n_episodes"] = len(meters[0])
        row.update(_coverage([len(seeds)]))
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

    Each fold is resampled independently (its own stratum), its base seeds too when it has
    several (see the module docstring); the fold means of the resampled scores give the
    interval.

    Returns:
        Rows: ``by``..., n_folds, n_base_seeds, interval, and miou and fbiou with
        ``_low``/``_high``.
    """
    out = []
    for row, grp in _groups(episodes, by):
        points: dict[str, list[float]] = {name: [] for name in SCORES}
        draws: dict[str, list[torch.Tensor]] = {name: [] for name in SCORES}
        n_seeds = []
        for fold, fold_rows in grp.groupby("fold"):
            seeds, meters = _base_seed_meters(fold_rows, f"{row} fold {fold}")
            (d,) = metrics.crossed_draws([meters], n_boot, seed, stratum=int(fold))
            p = metrics.crossed_point_scores(meters)
            n_seeds.append(len(seeds))
            for name in SCORES:
                points[name].append(p[name])
                draws[name].append(d[name])
        row["n_folds"] = grp["fold"].nunique()
        row.update(_coverage(n_seeds))
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
    means of the resampled differences give the 95% interval of the mean difference. With
    several base seeds, both are averaged over the same base seeds and share the seed picks
    too (paired over seeds; see the module docstring). With "fold" in ``by``, each fold's
    difference: the terms the fold mean averages, on the same resamples.

    Returns:
        Rows: ``key``, ``by``..., n_folds, n_base_seeds, interval, and for miou and fbiou
        the difference (points as fractions) with ``_low``/``_high``.

    Raises:
        ValueError: no reference rows, or the two were not scored on the same episodes or
            with the same base seeds.
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
            n_seeds = []
            for fold, fold_rows in sub.groupby("fold"):
                seeds_a, a = _base_seed_meters(fold_rows, f"{key}={name!r} {group} fold {fold}")
                seeds_b, b = _base_seed_meters(ref[ref["fold"] == fold],
                                              f"{key}={reference!r} {group} fold {fold}")
                _check_paired(a[0], b[0], f"{key}={name!r} and {reference!r}", fold)
                if seeds_a != seeds_b:
                    raise ValueError(f"{key}={name!r} and {reference!r} have other base seeds "
                                     f"in fold {fold} ({seeds_a} and {seeds_b}); a paired "
                                     "difference needs the same ones (select common seeds)")
                da, db = metrics.crossed_draws([a, b], n_boot, seed, stratum=int(fold))
                pa, pb = metrics.crossed_point_scores(a), metrics.crossed_point_scores(b)
                n_seeds.append(len(seeds_a))
                for v in SCORES:
                    points[v].append(pa[v] - pb[v])
                    draws[v].append(da[v] - db[v])
            row = {key: name, **group, "n_folds": len(points["miou"]), **_coverage(n_seeds)}
            out.append(_fold_mean_row(row, points, draws))
    return pd.DataFrame(out)


def _check_paired(a: metrics.IoUMeter, b: metrics.IoUMeter, what: str, fold) -> None:
    if a.records.shape != b.records.shape or not torch.equal(
        a.records[:, metrics.CLASS], b.records[:, metrics.CLASS]
    ):
        raise ValueError(f"{what} were not scored on the same episodes in fold {fold}")


def seed_spread(
    episodes: pd.DataFrame,
    by: Sequence[str] = ("method", "shots"),
    reference: str | None = None,
    key: str = "method",
) -> pd.DataFrame:
    """Fold-mean scores computed separately for each base seed (no intervals).

    Shows whether a headline holds on every base training: with ``reference`` (a value of
    ``key``, which ``by`` must hold), each row also carries its difference to the reference
    on the same base seed, folds and episodes (0 for the reference itself).

    Returns:
        Tidy rows: ``by``..., base_seed, n_folds, miou, fbiou (fractions), and with a
        reference miou_diff, fbiou_diff. :func:`spread_summary` gives min/max/range.

    Raises:
        ValueError: no base_seed column, or the reference misses a base seed or fold of a
            group, or was scored on other episodes.
    """
    if "base_seed" not in episodes:
        raise ValueError("seed_spread: the rows have no base_seed column (one base training); "
                         "use fold_mean")
    if reference is not None and key not in by:
        raise ValueError(f"seed_spread: by={tuple(by)} must hold key={key!r} to compare with "
                         f"the reference {reference!r}")
    cols = [*by, "base_seed"]
    per_fold: dict[tuple, dict] = {}  # (by..., base_seed) -> {fold: meter}
    for group, grp in _groups(episodes, by):
        for s, sub in grp.groupby("base_seed"):
            per_fold[(*group.values(), s)] = {f: meter(r) for f, r in sub.groupby("fold")}
    out = []
    for vals, meters in per_fold.items():
        points = {fold: metrics.point_scores(m) for fold, m in meters.items()}
        row = {**dict(zip(cols, vals, strict=True)), "n_folds": len(meters)}
        row.update({v: float(np.mean([p[v] for p in points.values()])) for v in SCORES})
        if reference is not None:
            ref_vals = tuple(reference if c == key else v for c, v in zip(cols, vals, strict=True))
            ref = per_fold.get(ref_vals, {})
            for fold, m in meters.items():
                if fold not in ref:
                    raise ValueError(f"seed_spread: no rows of the reference {reference!r} for "
                                     f"{dict(zip(cols, ref_vals, strict=True))} fold {fold}")
                _check_paired(m, ref[fold], f"{dict(zip(cols, vals, strict=True))} and "
                              f"{key}={reference!r}", fold)
            for v in SCORES:
                row[f"{v}_diff"] = float(np.mean(
                    [p[v] - metrics.point_scores(ref[fold])[v] for fold, p in points.items()]))
        out.append(row)
    return pd.DataFrame(out)


def spread_summary(spread: pd.DataFrame) -> pd.DataFrame:
    """Per group of :func:`seed_spread` rows: n_base_seeds and each score's (and
    difference's) min, max and range across base seeds."""
    values = [c for c in (*SCORES, *(f"{v}_diff" for v in SCORES)) if c in spread]
    groups = [c for c in spread.columns if c not in (*values, "base_seed", "n_folds")]
    g = spread.groupby(groups, sort=False)
    out = g["base_seed"].nunique().rename("n_base_seeds").to_frame()
    for v in values:
        out[f"{v}_min"], out[f"{v}_max"] = g[v].min(), g[v].max()
        out[f"{v}_range"] = out[f"{v}_max"] - out[f"{v}_min"]
    return out.reset_index()


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
