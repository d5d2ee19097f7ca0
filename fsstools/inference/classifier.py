"""The per-task cosine classifier of RePRI: initialisation, scores and the closed-form gradient.

A task's classifier is a prototype ``w`` (C,) and a bias ``b``: the foreground score of a
pixel with L2-normalised feature ``f`` is ``s = tau * cos(f, w)`` and ``p_fg = sigmoid(s - b)``.
Only ``w`` and ``b`` are fitted, so the gradient of any loss that depends on the pixels' logits
``z = s - b`` reduces to two reductions over the features (see :func:`cosine_step`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fsstools.constants import EPS

NORM_EPS = 1e-12
"""Smallest norm divided by when normalising features (F.normalize's default)."""
TINY = 1e-30
"""Floor of ``|w| (|w| + EPS)`` in :func:`cosine_step`: 0/0 becomes 0 for a zero prototype."""


def inverse_norms(feats: torch.Tensor) -> torch.Tensor:
    """``1 / max(|f|, NORM_EPS)`` per pixel of (B, C, N) features: (B, N).

    The streamed layout never writes normalised features: it scales the N dot products
    instead, which saves a write pass over the features and, for one shot, any copy of them.
    """
    return (feats * feats).sum(dim=1).sqrt_().clamp_min_(NORM_EPS).reciprocal_()


def normalize(feats: torch.Tensor) -> torch.Tensor:
    """L2-normalised copy of (B, C, N) features over C (zero vectors stay zero)."""
    return F.normalize(feats, dim=1)


def empty_support_message(task: int) -> str:
    """The error text for a task whose support masks hold no foreground pixel."""
    return (
        f"task {task}: the support masks have no foreground pixel (value 1) at feature "
        "resolution, so no prototype can be formed; drop the episode or resample it with "
        "a larger minimum foreground (fsstools.constants.MIN_FG_PIXELS)"
    )


def cosine_dots(
    feats: torch.Tensor, w: torch.Tensor, inv_norms: torch.Tensor | None = None
) -> torch.Tensor:
    """Dot products of every normalised pixel feature with its task's prototype.

    Args:
        feats: (B, C, N) features.
        w: (B, C) prototypes.
        inv_norms: (B, N) from :func:`inverse_norms`, or None if ``feats`` are normalised.

    Returns:
        (B, N) ``f/|f| . w``; times :func:`score_scale` these are the scores.
    """
    dots = torch.bmm(w.unsqueeze(1), feats).squeeze(1)  # (B, N)
    return dots if inv_norms is None else dots * inv_norms


def features_times(
    feats: torch.Tensor, g: torch.Tensor, inv_norms: torch.Tensor | None = None
) -> torch.Tensor:
    """``sum_x g_x f_x/|f_x|`` per task: (B, C, N) features, (B, N) g -> (B, C)."""
    if inv_norms is not None:
        g = g * inv_norms
    # as a row times the transposed features, (B, 1, N) @ (B, N, C): on CPU this BLAS path
    # is ~2x faster than (B, C, N) @ (B, N, 1) for B > 1 (both read every feature once) and
    # gives each task the same bits whatever the batch; the column form with a contiguous
    # g.unsqueeze(2) is ~10x slower still
    return torch.bmm(g.unsqueeze(1), feats.transpose(1, 2)).squeeze(1)  # (B, C)


def score_scale(w: torch.Tensor, tau: float) -> torch.Tensor:
    """``tau / (|w| + EPS)`` per task (B,): turns dot products into scores."""
    return tau / (w.norm(dim=1) + EPS)


def cosine_scores(
    feats: torch.Tensor, w: torch.Tensor, tau: float, inv_norms: torch.Tensor | None = None
) -> torch.Tensor:
    """``tau * cos(f, w)``: (B, C, N) features, (B, C) prototypes -> (B, N)."""
    return cosine_dots(feats, w, inv_norms) * score_scale(w, tau).unsqueeze(1)


def init_bias(scores: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean query score per task, over ``valid`` pixels (B, N) bool, or all pixels if None: (B,)."""
    if valid is None:
        return scores.mean(dim=1)
    v = valid.to(scores.dtype)
    return (scores * v).sum(dim=1) / v.sum(dim=1)


def support_threshold(
    scores: torch.Tensor, fg: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """The bias that best separates each support's own foreground: (B,).

    Among the thresholds between consecutive scores of the valid support pixels, the one whose
    foreground prediction (score above it) has the highest IoU with the support's foreground;
    the bias is the midpoint between the last pixel in and the first pixel out (one score
    unit below the lowest score when every valid pixel is in).

    Args:
        scores: (B, N) ``tau * cos`` of the support pixels.
        fg: (B, N) bool, True on foreground support pixels.
        valid: (B, N) bool, False on pixels labelled 255 (and padding).
    """
    n = scores.shape[1]
    ranked = scores.masked_fill(~valid, float("-inf")).sort(dim=1, descending=True)
    in_order = ranked.values  # (B, N), valid pixels first
    y = (fg & valid).gather(1, ranked.indices).to(scores.dtype)
    tp = y.cumsum(dim=1)  # foreground among the top k + 1
    k = torch.arange(1, n + 1, device=scores.device, dtype=scores.dtype)
    iou = tp / (k + y.sum(dim=1, keepdim=True) - tp)
    iou = iou.masked_fill(torch.isinf(in_order), -1.0)
    last = iou.argmax(dim=1, keepdim=True)  # (B, 1) position of the last pixel in
    upper = in_order.gather(1, last).squeeze(1)
    lower = in_order.gather(1, (last + 1).clamp(max=n - 1)).squeeze(1)
    below = torch.isinf(lower) | (last.squeeze(1) == n - 1)
    return torch.where(below, upper - 1.0, (upper + lower) / 2)


def scale_and_norm(w: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``tau / (|w| + EPS)`` and ``|w|`` per task, each (B, 1), for :func:`cosine_step`."""
    norm = torch.linalg.vector_norm(w, dim=1, keepdim=True)  # (B, 1)
    return (norm + EPS).reciprocal().mul_(tau), norm


def cosine_step(
    w: torch.Tensor, h: torch.Tensor, scale: torch.Tensor, norm: torch.Tensor, lr: float
) -> torch.Tensor:
    """One gradient-descent step on ``w`` for a loss whose gradient wrt the scores
    ``s = tau f.w/(|w|+EPS)`` of normalised features is ``g``.

    With ``n = |w|`` and ``d = n + EPS``, ``ds/dw = tau (f/d - (f.w) w / (n d^2))``, so the
    gradient needs only ``h = sum_x g_x f_x``: its radial part ``sum_x g_x (f_x . w)`` is
    ``h . w``. One pass over the features, which the scores have just read, gives ``h``.

    Args:
        w: (B, C) prototypes.
        h: (B, C) ``sum_x g_x f_x/|f_x|`` (:func:`features_times`).
        scale, norm: (B, 1) from :func:`scale_and_norm` of ``w``.
        lr: step size.

    Returns:
        (B, C) the prototypes after the step.
    """
    # a zero prototype (support foreground with all-zero features) has h . w = 0: its
    # radial term is then 0, not 0/0
    radial = torch.linalg.vecdot(h, w).unsqueeze(1) / (norm * (norm + EPS)).clamp_min(TINY)
    return torch.addcmul(w, scale, torch.addcmul(h, radial, w, value=-1), value=-lr)


def fg_probs(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Foreground probabilities at image size.

    Args:
        logits: (B, h, w) ``tau*cos - b`` at feature resolution.
        size: (H, W) to upsample to (the padded image size).

    Returns:
        (B, H, W) sigmoid of the bilinearly upsampled logits (align_corners=True, as the
        reference); foreground where > 0.5.
    """
    up = F.interpolate(logits.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=True)
    return torch.sigmoid(up.squeeze(1))
