"""RePRI's loss terms, each with its value and its closed-form gradient wrt the logits.

Every term is a per-task mean over pixels, written with pixel weights ``v`` (B, N) that are
``valid / valid.sum()`` per task (:func:`pixel_weights`), so padded or ignored pixels weigh 0.
Values follow the reference code's formulas, ``log(p + EPS)`` and ``p_bg = 1 - p_fg``
included, and the ``*_grad`` functions differentiate exactly those formulas wrt the logits
``z`` (``p_fg = sigmoid(z)``), so the analytic path agrees with autograd to rounding, also
where the probabilities saturate.

The total loss is ``ce_weight * CE(support) + ent_weight * H(query) + kl_weight *
KL(p_hat || pi)``, per task; :func:`total_loss` composes the terms.
"""

from __future__ import annotations

import torch

from fsstools.constants import EPS


def pixel_weights(valid: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``valid / valid.sum()`` per task: (B, N) bool -> (B, N) weights summing to 1.

    Raises:
        ValueError: a task has no valid pixel.
    """
    v = valid.to(dtype)
    count = v.sum(dim=1, keepdim=True)
    if bool((count == 0).any()):
        task = int((count.squeeze(1) == 0).nonzero()[0])
        raise ValueError(f"task {task}: no valid pixel to average over (all ignored or padding)")
    return v / count


def support_ce(p_fg: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on support pixels.

    Args:
        p_fg: (B, N) foreground probabilities.
        labels: (B, N) bool or {0, 1}, 1 on foreground.
        weights: (B, N) pixel weights (0 on ignored pixels).

    Returns:
        (B,) ``-sum_x v_x [y log(p + EPS) + (1 - y) log(1 - p + EPS)]``.
    """
    y = labels.to(p_fg.dtype)
    per_pixel = y * torch.log(p_fg + EPS) + (1 - y) * torch.log(1 - p_fg + EPS)
    return -(weights * per_pixel).sum(dim=1)


def query_entropy(p_fg: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean binary entropy of the query predictions, (B, N) -> (B,)."""
    p_bg = 1 - p_fg
    per_pixel = p_fg * torch.log(p_fg + EPS) + p_bg * torch.log(p_bg + EPS)
    return -(weights * per_pixel).sum(dim=1)


def fg_share(p_fg: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Predicted foreground share ``p_hat_fg`` of the query, (B, N) -> (B,)."""
    return (weights * p_fg).sum(dim=1)


def prior_kl(p_fg: torch.Tensor, weights: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
    """``KL(p_hat || pi)`` between the query's predicted (bg, fg) shares and the prior.

    Args:
        p_fg: (B, N) foreground probabilities.
        weights: (B, N) pixel weights.
        pi: (B,) foreground prior; the background prior is ``1 - pi``.

    Returns:
        (B,) divergence.
    """
    m_fg = (weights * p_fg).sum(dim=1)
    m_bg = (weights * (1 - p_fg)).sum(dim=1)
    return m_fg * torch.log(m_fg / (pi + EPS)) + m_bg * torch.log(m_bg / (1 - pi + EPS))


def total_loss(
    p_support: torch.Tensor,
    labels: torch.Tensor,
    w_support: torch.Tensor,
    p_query: torch.Tensor,
    w_query: torch.Tensor,
    pi: torch.Tensor,
    ce_weight: torch.Tensor | float,
    ent_weight: torch.Tensor | float,
    kl_weight: torch.Tensor | float,
) -> torch.Tensor:
    """Weighted sum of the three terms per task (B,); weights are floats or (B,) tensors."""
    return (
        ce_weight * support_ce(p_support, labels, w_support)
        + ent_weight * query_entropy(p_query, w_query)
        + kl_weight * prior_kl(p_query, w_query, pi)
    )


def support_ce_grad(
    p_fg: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """d support_ce / d z, (B, N); ``labels`` bool (B, N).

    Through ``log(p + EPS)`` this is ``p(1-p) [-y/(p+EPS) + (1-y)/(1-p+EPS)]``, which is
    ``p - y`` except where a probability saturates.
    """
    p_bg = 1 - p_fg
    slope = p_fg * p_bg  # d p_fg / d z
    inner = torch.where(labels, -1 / (p_fg + EPS), 1 / (p_bg + EPS))
    return weights * slope * inner


def query_entropy_grad(p_fg: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """d query_entropy / d z, (B, N)."""
    p_bg = 1 - p_fg
    slope = p_fg * p_bg
    d_fg = torch.log(p_fg + EPS) + p_fg / (p_fg + EPS)
    d_bg = torch.log(p_bg + EPS) + p_bg / (p_bg + EPS)
    return weights * slope * (d_bg - d_fg)


def prior_kl_grad(p_fg: torch.Tensor, weights: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
    """d prior_kl / d z, (B, N): ``v_x p(1-p) [log(m_fg/(pi+EPS)) - log(m_bg/(1-pi+EPS))]``."""
    p_bg = 1 - p_fg
    return weights * (p_fg * p_bg) * _kl_slope(p_fg, p_bg, weights, pi).unsqueeze(1)


def _kl_slope(
    p_fg: torch.Tensor, p_bg: torch.Tensor, weights: torch.Tensor, pi: torch.Tensor
) -> torch.Tensor:
    """dKL/dm_fg - dKL/dm_bg per task (B,); the +1 of each partial derivative cancels."""
    m_fg = (weights * p_fg).sum(dim=1)
    m_bg = (weights * p_bg).sum(dim=1)
    return torch.log(m_fg / (pi + EPS)) - torch.log(m_bg / (1 - pi + EPS))


def query_grad(
    p_fg: torch.Tensor,
    weights: torch.Tensor,
    pi: torch.Tensor,
    ent_weight: torch.Tensor,
    kl_weight: torch.Tensor,
) -> torch.Tensor:
    """``ent_weight * query_entropy_grad + kl_weight * prior_kl_grad`` with shared pieces.

    Args:
        p_fg: (B, N) query foreground probabilities.
        weights: (B, N) query pixel weights.
        pi: (B,) foreground prior.
        ent_weight: (B,) entropy weights.
        kl_weight: (B,) KL weights.

    Returns:
        (B, N) gradient wrt the query logits.
    """
    p_bg = 1 - p_fg
    d_fg = torch.log(p_fg + EPS) + p_fg / (p_fg + EPS)
    d_bg = torch.log(p_bg + EPS) + p_bg / (p_bg + EPS)
    kl = (kl_weight * _kl_slope(p_fg, p_bg, weights, pi)).unsqueeze(1)  # (B, 1)
    inner = ent_weight.unsqueeze(1) * (d_bg - d_fg) + kl
    return weights * (p_fg * p_bg) * inner
