"""RePRI's loss terms, each with its value and its closed-form gradient wrt the logits.

Every term is a per-task mean over pixels, written with pixel weights ``v`` (B, N) that are
``valid / valid.sum()`` per task (:func:`pixel_weights`), so padded or ignored pixels weigh 0.
Values follow the reference code's formulas, ``log(p + EPS)`` and ``p_bg = 1 - p_fg``
included, and :class:`LogitGrad` differentiates exactly those formulas wrt the logits ``z``
(``p_fg = sigmoid(z)``), so the analytic path agrees with autograd to rounding, also where
the probabilities saturate.

The total loss is ``ce_weight * CE(support) + ent_weight * H(query) + kl_weight *
KL(p_hat || pi)``, per task; :class:`LogitGrad` gives its gradient wrt the logits of a block
of pixels, for both loops (:mod:`~fsstools.inference.loop`, :mod:`~fsstools.inference.stacked`).
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


def prior_slope(pi: torch.Tensor, kl_weight: float) -> torch.Tensor:
    """``-kl_weight * (log(pi + EPS) - log(1 - pi + EPS))`` per task, (B,) -> (B, 1).

    The part of the KL term's slope (:meth:`LogitGrad.grad`) that changes only when ``pi``
    does, so the loops compute it then and not every iteration.
    """
    ratio = torch.log(pi + EPS) - torch.log(1 - pi + EPS)
    return (-kl_weight * ratio).unsqueeze(1)


class LogitGrad:
    """The gradient of the total loss wrt the logits ``z`` of one block of pixels, the one
    kernel of both loops, written into buffers made once.

    A block holds ``nq`` query pixels (all of the query or none) followed by support pixels.
    Its gradient is ``slope * factor * r`` with ``slope = p_fg p_bg`` and ``factor`` the
    query pixel weight ``v``, or the support pixel weight times the CE weight, negative on
    foreground; ``r`` is, on a support pixel, ``1 / (p_k + EPS)`` for its label's class
    ``k`` (d support_ce / d z through ``log(p + EPS)``; ``p - y`` except where a probability
    saturates), and on a query pixel

    - entropy: ``ent_weight (d_bg - d_fg)`` with ``d_k = log(p_k + EPS) + p_k / (p_k + EPS)``;
    - KL: ``kl_weight (log m_fg - log m_bg) + prior_slope(pi, kl_weight)``, per task, from
      the query's shares ``m`` (``dKL/dm_fg - dKL/dm_bg``: the +1 of each partial cancels).

    Each iteration: :meth:`probabilities` of the block's logits, then :meth:`shares` and
    :meth:`grad` from those probabilities. For small tasks an iteration costs about as much
    in torch calls as in arithmetic, so nothing is allocated per iteration, and every view
    and constant read is made here once (a view, or a Python number wrapped as a tensor,
    costs a good part of what a small element-wise call does). The buffers are this object's
    own: what the methods return is overwritten by the next call.

    Args:
        nq: query pixels at the front of the block.
        weight_q: (B, nq) query pixel weights (read when ``nq`` > 0).
        fg: (B, n - nq) bool, True on foreground support pixels.
        weight_s: (B, n - nq) support pixel weights.
        ce_weight: the CE term's weight.

    Example:
        >>> v = pixel_weights(torch.ones(1, 3, dtype=torch.bool), torch.float64)
        >>> kernel = LogitGrad(0, None, torch.tensor([[True, False, False]]), v, 1.0)
        >>> probs = kernel.probabilities(torch.zeros(1, 3, dtype=torch.float64))
        >>> kernel.grad(None, None, 0.0, 0.0)  # (p - y) / 3
        tensor([[-0.1667,  0.1667,  0.1667]], dtype=torch.float64)
    """

    def __init__(self, nq: int, weight_q: torch.Tensor | None, fg: torch.Tensor,
                 weight_s: torch.Tensor, ce_weight: float) -> None:
        B, ns = fg.shape
        n = nq + ns
        new = dict(dtype=weight_s.dtype, device=weight_s.device)
        self.nq, self.ns, self.fg = nq, ns, fg
        self.weight_q = None if weight_q is None else weight_q.unsqueeze(1)  # (B, 1, nq)
        self.one, self.eps = torch.ones((), **new), torch.full((), EPS, **new)
        factors = ([weight_q] if nq else []) + (
            [torch.where(fg, -weight_s, weight_s) * ce_weight] if ns else [])
        self.factor = factors[0] if len(factors) == 1 else torch.cat(factors, dim=1)  # (B, n)
        self.probs = torch.empty(B, 2, n, **new)  # rows p_fg, p_bg
        self.shifted = torch.empty(B, 2, n, **new)  # probs + EPS
        self.g = torch.empty(B, n, **new)
        self.d = torch.empty(B, 2, nq, **new)  # d_fg, d_bg of the query pixels
        self.ratio = torch.empty(B, 2, nq, **new)
        self.inner = torch.empty(B, nq, **new)
        self.den = torch.empty(B, ns, **new)
        # views, made once
        self.p_fg, self.p_bg = self.probs[:, 0], self.probs[:, 1]  # (B, n) each
        self.probs_q, self.shifted_q = self.probs[:, :, :nq], self.shifted[:, :, :nq]
        self.p_fg_q, self.p_fg_s = self.probs[:, 0, :nq], self.probs[:, 0, nq:]
        self.shifted_fg_s, self.shifted_bg_s = self.shifted[:, 0, nq:], self.shifted[:, 1, nq:]
        self.d_fg, self.d_bg = self.d[:, 0], self.d[:, 1]
        self.g_q, self.g_s = self.g[:, :nq], self.g[:, nq:]

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Rows ``p_fg = sigmoid(z)`` and ``p_bg = 1 - p_fg`` of logits (B, n): (B, 2, n).

        Views of them: ``p_fg`` (B, n), ``probs_q`` (B, 2, nq), ``p_fg_q`` (B, nq), ``p_fg_s``
        (B, n - nq).
        """
        # written a row at a time (sigmoid's vectorised kernel rounds its last few elements
        # of a run differently), so a pixel's value does not depend on how many tasks share
        # the call
        torch.sigmoid(logits, out=self.p_fg)
        torch.sub(self.one, self.p_fg, out=self.p_bg)
        return self.probs

    def shares(self) -> torch.Tensor:
        """The query's predicted (fg, bg) shares ``(p_hat_fg, p_hat_bg)`` at the last
        :meth:`probabilities`: (B, 2); the block must hold the query."""
        return (self.probs_q * self.weight_q).sum(dim=2)

    def grad(self, shares: torch.Tensor | None, prior_slope: torch.Tensor | None,
             ent_weight: float, kl_weight: float) -> torch.Tensor:
        """d (ce_weight CE(support) + ent_weight H(query) + kl_weight KL(p_hat || pi)) / d z
        at the probabilities of the last :meth:`probabilities` call: (B, n).

        Args:
            shares: (B, 2) :meth:`shares`; read only with a KL term.
            prior_slope: (B, 1) :func:`prior_slope` of the prior; likewise.
            ent_weight, kl_weight: the query terms' weights.
        """
        torch.add(self.probs, self.eps, out=self.shifted)
        torch.mul(self.p_fg, self.p_bg, out=self.g)
        self.g.mul_(self.factor)  # slope * factor
        if self.nq:
            if kl_weight != 0:
                log_shares = shares.log()
                kl = torch.sub(log_shares[:, :1], log_shares[:, 1:])  # (B, 1)
                kl = torch.add(prior_slope, kl, alpha=kl_weight)
            if ent_weight != 0:
                torch.log(self.shifted_q, out=self.d)
                torch.div(self.probs_q, self.shifted_q, out=self.ratio)
                self.d.add_(self.ratio)
                torch.sub(self.d_bg, self.d_fg, out=self.inner)
                if kl_weight != 0:
                    torch.add(kl, self.inner, alpha=ent_weight, out=self.inner)
                else:
                    self.inner.mul_(ent_weight)
                self.g_q.mul_(self.inner)
            elif kl_weight != 0:
                self.g_q.mul_(kl)
            else:
                self.g_q.zero_()
        if self.ns:
            torch.where(self.fg, self.shifted_fg_s, self.shifted_bg_s, out=self.den)
            self.g_s.div_(self.den)
        return self.g
