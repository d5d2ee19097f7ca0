"""Few-shot segmentation scores: class IoU / mIoU, FB-IoU, bootstrap intervals.

An :class:`IoUMeter` keeps one record per episode (class, foreground intersection and union,
background intersection and union), so scores are sums over episodes and intervals resample
episodes.

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

import torch
import torch.distributed as dist

from fsstools.constants import IGNORE_INDEX

CLASS, FG_I, FG_U, BG_I, BG_U = range(5)
"""Columns of the per-episode records."""


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

    def reduce(self) -> None:
        """Gather the episodes of all ranks when torch.distributed is initialised (else no-op).

        Afterwards every rank holds all episodes (in rank order), so ``compute`` and the
        intervals are global.
        """
        if not (dist.is_available() and dist.is_initialized()):
            return
        local = self.records
        gathered: list[torch.Tensor | None] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, local.cpu())
        self._records = [torch.cat(gathered).to(local.device)]


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


def _resample_counts(n: int, n_boot: int, seed: int, device: torch.device) -> torch.Tensor:
    """(n_boot, n) draw counts of n episodes resampled with replacement, seeded."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(n, (n_boot, n), generator=g)
    counts = torch.zeros(n_boot, n, dtype=torch.long).scatter_add_(1, idx, torch.ones_like(idx))
    return counts.to(device)


def _interval(point: float, samples: torch.Tensor, level: float) -> dict[str, float]:
    alpha = (1 - level) / 2
    lo, hi = torch.nanquantile(samples, torch.tensor([alpha, 1 - alpha], dtype=samples.dtype))
    return {"mean": point, "low": float(lo), "high": float(hi)}


def bootstrap_samples(meter: IoUMeter, n_boot: int = 1000, seed: int = 0) -> dict[str, torch.Tensor]:
    """Resampled scores: {"miou": (n_boot,), "fbiou": (n_boot,)} over episodes drawn with
    replacement (seeded), e.g. to combine folds into an interval of their mean."""
    records = meter.records
    if len(records) == 0:
        raise ValueError("bootstrap_samples: the meter holds no episode; call update() first")
    counts = _resample_counts(len(records), n_boot, seed, records.device)
    return {k: v.cpu() for k, v in _boot_scores(records, counts).items()}


def bootstrap_ci(
    meter: IoUMeter, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, dict[str, float]]:
    """Percentile bootstrap over episodes for mIoU and FB-IoU.

    Returns:
        {"miou": {"mean", "low", "high"}, "fbiou": {...}}; "mean" is the score on all
        episodes, low/high the ``level`` percentile interval of the resampled scores.
    """
    records = meter.records
    if len(records) == 0:
        raise ValueError("bootstrap_ci: the meter holds no episode; call update() first")
    full = _boot_scores(records, torch.ones(1, len(records), device=records.device))
    samples = _boot_scores(records, _resample_counts(len(records), n_boot, seed, records.device))
    return {k: _interval(float(full[k][0]), samples[k].cpu(), level) for k in samples}


def paired_difference(
    meter_a: IoUMeter, meter_b: IoUMeter, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, dict[str, float]]:
    """Score of A minus score of B on the same episodes, with a paired bootstrap interval.

    Both methods are scored on the same resampled episodes in every draw, so the interval
    reflects the difference, not the spread of each.

    Raises:
        ValueError: the meters do not hold the same episodes (count and classes, in order).
    """
    ra, rb = meter_a.records, meter_b.records.to(meter_a.records.device)
    if ra.shape != rb.shape or not torch.equal(ra[:, CLASS], rb[:, CLASS]):
        raise ValueError("paired_difference: the meters must hold the same episodes in the "
                         f"same order (got {len(ra)} and {len(rb)} episodes)")
    if len(ra) == 0:
        raise ValueError("paired_difference: the meters hold no episode")
    ones = torch.ones(1, len(ra), device=ra.device)
    counts = _resample_counts(len(ra), n_boot, seed, ra.device)
    fa, fb = _boot_scores(ra, ones), _boot_scores(rb, ones)
    sa, sb = _boot_scores(ra, counts), _boot_scores(rb, counts)
    return {k: _interval(float(fa[k][0] - fb[k][0]), (sa[k] - sb[k]).cpu(), level) for k in sa}


def crop_valid(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Crop ``x`` (..., H, W) to the bounding box of ``valid`` (H, W) bool.

    Test images are padded bottom/right, so with the transform's ``valid`` mask this is the
    resized image without its padding (scoring there or on the padded grid gives the same
    IoU, since padding is 255 in the target; cropping saves the work).
    """
    rows = valid.any(dim=1).nonzero()
    cols = valid.any(dim=0).nonzero()
    if len(rows) == 0:
        raise ValueError("crop_valid: the valid mask has no True pixel")
    return x[..., int(rows[0]):int(rows[-1]) + 1, int(cols[0]):int(cols[-1]) + 1]
