"""RePRI's loss terms, each with its value and its closed-form gradient wrt the logits.

Every term is a per-task mean over pixels, written with pixel weights ``v`` (B, N) that are
``valid / valid.sum()`` per task (:func:`pixel_weights`), so padded or ignored pixels weigh 0.
Values follow the reference code's formulas, ``log(p + EPS)`` and ``p_bg = 1 - p_fg``
included, and the ``*_grad`` functions differentiate exactly those formulas wrt the logits
``z`` (``p_fg = sigmoid(z)``), so the analytic path agrees with autograd to rounding, also
where the probabilities saturate.

The total loss is ``ce_weight * CE(support) + ent_weight * H(query) + kl_weight *
KL(p_hat || pi)``, per task; :func:`support_ce_grad` and :func:`query_grad` give its gradient
wrt the support and the query logits.
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


def log_prior_ratio(pi: torch.Tensor, kl_weight: float) -> torch.Tensor:
    """``kl_weight * (log(pi + EPS) - log(1 - pi + EPS))`` per task, (B,) -> (B, 1).

    The part of :func:`query_grad`'s KL slope that changes only when ``pi`` does.
    """
    ratio = torch.log(pi + EPS) - torch.log(1 - pi + EPS)
    return (kl_weight * ratio).unsqueeze(1)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Foreground and background probabilities of logits (B, N): (B, 2, N), rows
    ``p_fg = sigmoid(z)`` and ``p_bg = 1 - p_fg``, as the gradients below take them."""
    probs = logits.new_empty(logits.shape[0], 2, logits.shape[1])
    # written a row at a time (sigmoid's vectorised kernel rounds its last few elements of a
    # run differently), so a pixel's value does not depend on how many tasks share the call
    torch.sigmoid(logits, out=probs[:, 0])
    probs[:, 1] = 1 - probs[:, 0]
    return probs


def query_shares(probs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The query's predicted (fg, bg) shares ``(p_hat_fg, p_hat_bg)``: (B, 2, N) -> (B, 2)."""
    return (probs * weights.unsqueeze(1)).sum(dim=2)


def support_ce_grad(probs: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor
                    ) -> torch.Tensor:
    """d support_ce / d z, (B, N), from :func:`probabilities` (B, 2, N); ``labels`` bool (B, N),
    ``weights`` (B, N) (times the CE weight, if any).

    Through ``log(p + EPS)`` this is ``p(1-p) [-y/(p+EPS) + (1-y)/(1-p+EPS)]``, which is
    ``p - y`` except where a probability saturates.
    """
    p_fg, p_bg = probs[:, 0], probs[:, 1]
    signed = torch.where(labels, -weights, weights)
    return (p_fg * p_bg) * signed / torch.where(labels, p_fg + EPS, p_bg + EPS)


def query_grad(
    probs: torch.Tensor,
    weights: torch.Tensor,
    shares: torch.Tensor,
    prior_ratio: torch.Tensor,
    ent_weight: float,
    kl_weight: float,
) -> torch.Tensor:
    """d (ent_weight * query_entropy + kl_weight * prior_kl) / d z, (B, N).

    The entropy's is ``v p(1-p) (d_bg - d_fg)`` with ``d_k = log(p_k + EPS) + p_k/(p_k + EPS)``;
    the KL's is ``v p(1-p)`` times ``dKL/dm_fg - dKL/dm_bg = log(m_fg/m_bg) - log((pi + EPS)
    / (1 - pi + EPS))`` per task (the +1 of each partial derivative cancels).

    Args:
        probs: (B, 2, N) :func:`probabilities` of the query pixels.
        weights: (B, N) query pixel weights ``v``.
        shares: (B, 2) :func:`query_shares` ``(m_fg, m_bg)`` of ``probs``.
        prior_ratio: (B, 1) :func:`log_prior_ratio` of the prior and ``kl_weight``.
        ent_weight, kl_weight: the terms' weights.
    """
    if ent_weight == 0 and kl_weight == 0:
        return torch.zeros_like(weights)
    slope = (probs[:, 0] * probs[:, 1]) * weights  # v p(1-p)
    if kl_weight != 0:
        log_shares = shares.log()
        kl = torch.add(-prior_ratio, log_shares[:, :1] - log_shares[:, 1:], alpha=kl_weight)
        if ent_weight == 0:
            return slope * kl
    shifted = probs + EPS
    d = torch.log(shifted).add_(probs / shifted)  # (B, 2, N): d_fg, d_bg
    inner = d[:, 1] - d[:, 0]
    if kl_weight != 0:
        inner = torch.add(kl, inner, alpha=ent_weight)
    else:
        inner = inner.mul_(ent_weight)
    return slope * inner
