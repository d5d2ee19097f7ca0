"""Few-shot segmentation scores: class IoU / mIoU, FB-IoU, bootstrap intervals.

An :class:`IoUMeter` keeps one record per episode (class, foreground intersection and union,
background intersection and union), so scores are sums over episodes and intervals resample
episodes; :func:`crossed_draws` also resamples base-training seeds scored on the same
episodes (see :mod:`fsstools.evaluation.stats` for the method).

Example:
    >>> import torch
    >>> m = IoUMeter()
    >>> pred = torch.tensor([[[1, 1], [0, 0]]])
    >>> target = torch.tensor([[[1, 0], [0, 255]]])
    >>> m.update(pred, target, torch.tensor([3]))
    >>> m.compute()["class_iou"]
    {3: 0.5}
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fsstools.constants import IGNORE_INDEX

CLASS, FG_I, FG_U, BG_I, BG_U = range(5)
"""Columns of the per-episode records."""
RECORD_COLUMNS = ("class_id", "fg_inter", "fg_union", "bg_inter", "bg_union")
"""Names of the record columns in result tables (CSV)."""


class IoUMeter:
    """Accumulates intersections and unions per episode; works on any device.

    Class IoU sums intersection and union over all episodes of the class, then divides;
    mIoU averages the class IoUs. An episode whose foreground union is empty (no foreground
    predicted nor labelled) adds nothing to its class; a class whose summed union is 0 is left
    out of mIoU. FB-IoU is the mean of the foreground and background IoU, each summed over all
    episodes. Pixels labelled 255 are ignored.
    """

    def __init__(self) -> None:
        self._records: list[torch.Tensor] = []

    @classmethod
    def from_records(cls, records: torch.Tensor) -> IoUMeter:
        """A meter holding saved per-episode records (E, 5), e.g. read back from a CSV."""
        if records.dim() != 2 or records.shape[1] != 5:
            raise ValueError(f"records must be (E, 5), got {tuple(records.shape)}")
        meter = cls()
        meter._records = [records.long()]
        return meter

    def update(self, pred: torch.Tensor, target: torch.Tensor, class_id: torch.Tensor) -> None:
        """Add B episodes.

        Args:
            pred: (B, H, W) bool or {0, 1} predicted foreground.
            target: (B, H, W) {0, 1, 255}.
            class_id: (B,) class of each episode (a list of ints is accepted).
        """
        if pred.shape != target.shape or pred.dim() != 3:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} "
                             "must both be (B, H, W)")
        pred = pred.bool()
        scored = target != IGNORE_INDEX
        fg, bg = (target == 1) & scored, (target == 0) & scored
        pred_fg, pred_bg = pred & scored, ~pred & scored
        dims = (1, 2)
        classes = torch.as_tensor(class_id, device=target.device).reshape(-1).long()
        record = torch.stack([
            classes,
            (pred_fg & fg).sum(dims), (pred_fg | fg).sum(dims),
            (pred_bg & bg).sum(dims), (pred_bg | bg).sum(dims),
        ], dim=1)  # (B, 5)
        self._records.append(record)

    @property
    def records(self) -> torch.Tensor:
        """(E, 5) int64: class, fg intersection, fg union, bg intersection, bg union."""
        if not self._records:
            return torch.zeros(0, 5, dtype=torch.long)
        if len(self._records) > 1:
            self._records = [torch.cat(self._records)]
        return self._records[0]

    def __len__(self) -> int:
        return int(self.records.shape[0])

    def compute(self) -> dict:
        """Scores over all episodes.

        Returns:
            dict with miou, fbiou, fg_iou, bg_iou (floats), class_iou {class id: IoU} and
            n_episodes.
        """
        r = self.records
        classes = sorted(int(c) for c in r[:, CLASS].unique())
        class_iou = {}
        for c in classes:
            sel = r[r[:, CLASS] == c]
            union = int(sel[:, FG_U].sum())
            if union > 0:
                class_iou[c] = int(sel[:, FG_I].sum()) / union
        fg_iou = _ratio(r[:, FG_I].sum(), r[:, FG_U].sum())
        bg_iou = _ratio(r[:, BG_I].sum(), r[:, BG_U].sum())
        miou = sum(class_iou.values()) / len(class_iou) if class_iou else float("nan")
        return {"miou": miou, "fbiou": (fg_iou + bg_iou) / 2, "fg_iou": fg_iou, "bg_iou": bg_iou,
                "class_iou": class_iou, "n_episodes": len(r)}


def _ratio(num: torch.Tensor, den: torch.Tensor) -> float:
    return float(num) / float(den) if float(den) > 0 else float("nan")


def _boot_scores(records: torch.Tensor, counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """mIoU and FB-IoU of each resample, given how often each episode is drawn.

    Args:
        records: (E, 5) per-episode records.
        counts: (R, E) number of times each episode appears in each resample.

    Returns:
        name -> (R,) scores (NaN where a resample holds no scorable class).
    """
    counts = counts.double()
    stats = records[:, FG_I:].double()  # (E, 4)
    _, cls = records[:, CLASS].unique(return_inverse=True)
    onehot = torch.nn.functional.one_hot(cls).double()  # (E, K)
    inter = counts @ (onehot * stats[:, :1])  # (R, K)
    union = counts @ (onehot * stats[:, 1:2])
    class_iou = torch.where(union > 0, inter / union.clamp_min(1), torch.nan)
    totals = counts @ stats  # (R, 4)
    fb = (totals[:, 0] / totals[:, 1] + totals[:, 2] / totals[:, 3]) / 2
    return {"miou": class_iou.nanmean(dim=1), "fbiou": fb}


def stratum_seed(seed: int, stratum: int) -> int:
    """Seed of the resamples of one stratum (e.g. a fold): independent across strata."""
    return int(np.random.SeedSequence([seed, stratum]).generate_state(1)[0])


def _resample_counts(n: int, n_boot: int, seed: int, device: torch.device) -> torch.Tensor:
    """(n_boot, n) draw counts of n episodes resampled with replacement, seeded."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(n, (n_boot, n), generator=g)
    counts = torch.zeros(n_boot, n, dtype=torch.long).scatter_add_(1, idx, torch.ones_like(idx))
    return counts.to(device)


def bootstrap_draws(
    meters: Sequence[IoUMeter], n_boot: int = 1000, seed: int = 0, stratum: int = 0
) -> list[dict[str, torch.Tensor]]:
    """Scores of ``n_boot`` resamples of the episodes, the same resamples for every meter.

    The one resampling primitive: an interval of one score takes one meter; a paired
    difference takes two meters holding the same episodes (each resample scores both on
    the same episodes); a mean over folds takes each fold as its own ``stratum``, so the
    folds are resampled independently.

    Args:
        meters: meters holding the same number of episodes (in the same order).
        n_boot: resamples.
        seed, stratum: the draws are a function of both (see :func:`stratum_seed`).

    Returns:
        Per meter, {"miou": (n_boot,), "fbiou": (n_boot,)} on the CPU (NaN where a resample
        holds no scorable class).

    Raises:
        ValueError: no episode, or meters of different lengths.
    """
    records = [m.records for m in meters]
    n = len(records[0])
    if n == 0:
        raise ValueError("bootstrap_draws: the meter holds no episode; call update() first")
    if any(len(r) != n for r in records):
        raise ValueError(f"bootstrap_draws: meters hold {[len(r) for r in records]} episodes; "
                         "paired resamples need the same episodes")
    counts = _resample_counts(n, n_boot, stratum_seed(seed, stratum), records[0].device)
    return [{k: v.cpu() for k, v in _boot_scores(r, counts.to(r.device)).items()}
            for r in records]


BASE_SEED_STREAM = 1
"""Spawn key of the base-seed picks: a stream independent of the episode resamples drawn
from the same (seed, stratum)."""


def seed_picks(n_seeds: int, n_boot: int, seed: int = 0, stratum: int = 0) -> torch.Tensor:
    """Base seeds (base-training runs) drawn by ``n_boot`` resamples, ``n_seeds`` picks each.

    Seeded from (seed, stratum) like the episode resamples of :func:`bootstrap_draws`, but
    from another stream, so the two levels are resampled independently.

    Returns:
        (n_boot, n_seeds) int64 indices of the picked seeds (with replacement), on the CPU.
    """
    entropy = np.random.SeedSequence([seed, stratum], spawn_key=(BASE_SEED_STREAM,))
    g = torch.Generator().manual_seed(int(entropy.generate_state(1)[0]))
    return torch.randint(n_seeds, (n_boot, n_seeds), generator=g)


def crossed_draws(
    meters: Sequence[Sequence[IoUMeter]], n_boot: int = 1000, seed: int = 0, stratum: int = 0
) -> list[dict[str, torch.Tensor]]:
    """Two-level resamples of a crossed design: the episodes and the base seeds.

    ``meters[k][s]`` holds series ``k`` (e.g. a method; several series are paired) scored
    with base seed ``s``, every meter on the same episodes. Each draw resamples the episodes
    once for all meters (:func:`bootstrap_draws`), picks base seeds once for all series
    (:func:`seed_picks`), and averages the picked seeds' resampled scores. With one base
    seed it is :func:`bootstrap_draws` of the series, bit for bit.

    Example:
        >>> m = IoUMeter.from_records(torch.tensor([[1, 5, 10, 80, 85], [2, 3, 6, 90, 93]]))
        >>> (d,) = crossed_draws([[m, m, m]], n_boot=20)
        >>> torch.allclose(d["miou"], bootstrap_draws([m], n_boot=20)[0]["miou"])
        True

    Returns:
        Per series, {"miou": (n_boot,), "fbiou": (n_boot,)} on the CPU (NaN where a picked
        seed's resample holds no scorable class).

    Raises:
        ValueError: no base seed, series with different numbers of base seeds, or meters
            of different lengths.
    """
    n_seeds = len(meters[0]) if meters else 0
    if n_seeds == 0 or any(len(series) != n_seeds for series in meters):
        raise ValueError(f"crossed_draws: series hold {[len(s) for s in meters]} base seeds; "
                         "paired series need the same ones (at least one)")
    flat = bootstrap_draws([m for series in meters for m in series], n_boot, seed, stratum)
    if n_seeds == 1:
        return flat
    picks = seed_picks(n_seeds, n_boot, seed, stratum)  # (R, m)
    out = []
    for k in range(len(meters)):
        per_seed = flat[k * n_seeds:(k + 1) * n_seeds]
        out.append({name: torch.stack([d[name] for d in per_seed], 1)  # (R, m)
                    .gather(1, picks).mean(1) for name in per_seed[0]})
    return out


def crossed_point_scores(meters: Sequence[IoUMeter]) -> dict[str, float]:
    """mIoU and FB-IoU averaged over base seeds, each on all episodes (``meters[s]``)."""
    points = [point_scores(m) for m in meters]
    return {k: float(np.mean([p[k] for p in points])) for k in points[0]}


def point_scores(meter: IoUMeter) -> dict[str, float]:
    """mIoU and FB-IoU on all episodes (what the resamples scatter around)."""
    r = meter.records
    full = _boot_scores(r, torch.ones(1, len(r), device=r.device))
    return {k: float(v[0]) for k, v in full.items()}


def interval(point: float, draws: torch.Tensor, level: float = 0.95) -> dict[str, float]:
    """{"mean": point, "low", "high"}: the ``level`` percentile interval of ``draws``."""
    alpha = (1 - level) / 2
    draws = draws.double()
    lo, hi = torch.nanquantile(draws, torch.tensor([alpha, 1 - alpha], dtype=draws.dtype))
    return {"mean": point, "low": float(lo), "high": float(hi)}


def bootstrap_ci(
    meter: IoUMeter, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, dict[str, float]]:
    """Percentile bootstrap over episodes for mIoU and FB-IoU.

    Returns:
        {"miou": {"mean", "low", "high"}, "fbiou": {...}}; "mean" is the score on all
        episodes, low/high the ``level`` percentile interval of the resampled scores.
    """
    (draws,) = bootstrap_draws([meter], n_boot, seed)
    point = point_scores(meter)
    return {k: interval(point[k], draws[k], level) for k in draws}


def paired_difference(
    meter_a: IoUMeter, meter_b: IoUMeter, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, dict[str, float]]:
    """Score of A minus score of B on the same episodes, with a paired bootstrap interval.

    Both methods are scored on the same resampled episodes in every draw, so the interval
    reflects the difference, not the spread of each.

    Raises:
        ValueError: the meters do not hold the same episodes (count and classes, in order).
    """
    ra, rb = meter_a.records, meter_b.records
    if ra.shape != rb.shape or not torch.equal(ra[:, CLASS].cpu(), rb[:, CLASS].cpu()):
        raise ValueError("paired_difference: the meters must hold the same episodes in the "
                         f"same order (got {len(ra)} and {len(rb)} episodes)")
    da, db = bootstrap_draws([meter_a, meter_b], n_boot, seed)
    pa, pb = point_scores(meter_a), point_scores(meter_b)
    return {k: interval(pa[k] - pb[k], da[k] - db[k], level) for k in da}
