"""The fast loop for small tasks: a chunk of tasks fitted together, one matrix per task.

For small features (e.g. C=128 on a 16x16 grid) a task's arithmetic per iteration takes a
few microseconds, as does each torch call, so a loop over one task's shots is mostly
dispatch. Here a chunk of B tasks is copied once into ``x`` (B, C, N): the query's pixels
first, then every shot's, L2-normalised. An iteration then makes ~30 torch calls whatever
B and S: two ``bmm`` (scores ``w^T x``, gradient ``x g``) and element-wise work on (B, N)
buffers allocated once. Results equal :func:`~fsstools.inference.fit.fit_fast` and
:func:`~fsstools.inference.fit.fit_autograd` to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fsstools.constants import EPS, IGNORE_INDEX
from fsstools.inference import classifier as clf
from fsstools.inference import losses
from fsstools.inference.config import MethodConfig
from fsstools.inference.loop import Fitted, Schedule, Tracer, initial_bias_prior


@dataclass
class StackedProblem:
    """A chunk of B tasks as one normalised feature matrix per task, query pixels first.

    Attributes:
        x: (B, C, Nq + Ns) L2-normalised features (a private copy): the h*w query pixels,
            then the S*h*w support pixels shot by shot.
        nq: number of query pixels Nq.
        shots: S.
        weight_q: (B, Nq) query pixel weights.
        weight_s: (B, Ns) support pixel weights (0 on pixels labelled 255).
        fg: (B, Ns) bool, True on foreground support pixels.
        labels_q: (B, Nq) {0, 1, 255} query mask, or None.
    """

    x: torch.Tensor
    nq: int
    shots: int
    weight_q: torch.Tensor
    weight_s: torch.Tensor
    fg: torch.Tensor
    labels_q: torch.Tensor | None


def prepare(
    support_feats: torch.Tensor,
    support_masks: torch.Tensor,
    query_feats: torch.Tensor,
    query_valid: torch.Tensor,
    query_mask: torch.Tensor | None,
    device: torch.device,
    dtype: torch.dtype,
) -> StackedProblem:
    """Copy one chunk to ``device``/``dtype`` as one normalised matrix per task.

    Args:
        support_feats: (B, S, C, h, w).
        support_masks: (B, S, h, w) {0, 1, 255}.
        query_feats: (B, C, h, w).
        query_valid: (B, h, w) bool.
        query_mask: (B, h, w) {0, 1, 255} or None.
        device: compute device.
        dtype: compute dtype.
    """
    B, S, C, h, w = support_feats.shape
    n = h * w
    x = torch.empty(B, C, S + 1, n, device=device, dtype=dtype)
    x[:, :, 0].copy_(query_feats.reshape(B, C, n))
    x[:, :, 1:].copy_(support_feats.reshape(B, S, C, n).transpose(1, 2))  # (B, C, S, n)
    x = x.view(B, C, (S + 1) * n)  # (B, C, N)
    x.mul_(clf.inverse_norms(x).unsqueeze(1))
    masks = support_masks.to(device).reshape(B, S * n)  # (B, Ns)
    return StackedProblem(
        x=x,
        nq=n,
        shots=S,
        weight_q=losses.pixel_weights(query_valid.to(device).reshape(B, n), dtype),
        weight_s=losses.pixel_weights(masks != IGNORE_INDEX, dtype),
        fg=masks == 1,
        labels_q=None if query_mask is None else query_mask.to(device).reshape(B, n),
    )


def initial_state(
    cfg: MethodConfig, p: StackedProblem, task_offset: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prototype (B, C), bias (B,) and prior (B,) before any step."""
    fg = p.fg.to(p.x.dtype)
    count = fg.sum(dim=1)  # (B,)
    empty = (count == 0).nonzero().flatten()
    if len(empty):
        raise ValueError(clf.empty_support_message(int(empty[0]) + task_offset))
    w = clf.features_times(p.x[:, :, p.nq:], fg) / count.unsqueeze(1)  # (B, C)
    scores = clf.cosine_scores(p.x[:, :, :p.nq], w, cfg.tau)  # (B, Nq)
    support = None
    if cfg.bias_init == "support":
        support = (clf.cosine_scores(p.x[:, :, p.nq:], w, cfg.tau), p.fg, p.weight_s > 0)
    return (w, *initial_bias_prior(cfg, scores, p.weight_q, p.labels_q, support))


def _log_prior_ratio(pi: torch.Tensor, kl_weight: float) -> torch.Tensor:
    """``kl_weight * (log(pi + EPS) - log(1 - pi + EPS))`` per task, (B,) -> (B, 1)."""
    ratio = torch.log(pi + EPS) - torch.log(1 - pi + EPS)
    return (kl_weight * ratio).unsqueeze(1)


def _terms(
    p: StackedProblem,
    p_fg: torch.Tensor,
    pi: torch.Tensor,
    weights: tuple[float, float, float],
) -> dict[str, torch.Tensor]:
    """Per-task loss terms for the traces from the probabilities (B, N) of all pixels."""
    pq, ps = p_fg[:, :p.nq], p_fg[:, p.nq:]
    ce_w, ent_w, kl_w = weights
    terms = {"ce": losses.support_ce(ps, p.fg, p.weight_s),
             "entropy": losses.query_entropy(pq, p.weight_q),
             "kl": losses.prior_kl(pq, p.weight_q, pi),
             "fg_share": losses.fg_share(pq, p.weight_q),
             "pi": pi,
             "kl_weight": torch.full_like(pi, kl_w)}
    terms["loss"] = ce_w * terms["ce"] + ent_w * terms["entropy"] + kl_w * terms["kl"]
    return terms


def fit_stacked(
    cfg: MethodConfig, p: StackedProblem, trace: bool, task_offset: int = 0
) -> Fitted:
    """The fast loop on a stacked chunk: closed-form gradients, two ``bmm`` per iteration.

    The gradient is that of :func:`~fsstools.inference.fit.fit_fast`: wrt the logits from
    :mod:`~fsstools.inference.losses`' formulas, wrt ``w`` via ``h = x g`` and
    ``g . (x w) = h . w`` (:func:`~fsstools.inference.classifier.cosine_grad`). Buffers are
    private and reused across iterations; nothing the caller holds is written.
    """
    w, b, pi = initial_state(cfg, p, task_offset)
    x, nq = p.x, p.nq
    B, C, N = x.shape
    ce_w, ent_w, kl_w = cfg.loss_weights(p.shots)
    schedule = Schedule(cfg, kl_w)
    tracer = Tracer(p.labels_q) if trace else None
    new = dict(dtype=x.dtype, device=x.device)
    one, eps = torch.ones((), **new), torch.full((), EPS, **new)
    dots, z, g = (torch.empty(B, 1, N, **new) for _ in range(3))  # g: d loss / d logits
    probs, shifted = torch.empty(B, 2, N, **new), torch.empty(B, 2, N, **new)  # rows: fg, bg
    slope, den_s = torch.empty(B, N, **new), torch.empty(B, N - nq, **new)
    d_q, ratio_q, inner = (torch.empty(B, k, nq, **new) for k in (2, 2, 1))
    # views of the buffers, made once
    logits, logits_q, dots2 = z.view(B, N), z[:, 0, :nq], dots.view(B, N)
    p_fg, p_bg, probs_q, shifted_q = probs[:, 0], probs[:, 1], probs[:, :, :nq], shifted[:, :, :nq]
    slope_q, slope_s, g_q, g_s = slope[:, :nq], slope[:, nq:], g[:, 0, :nq], g[:, 0, nq:]
    shifted_fg_s, shifted_bg_s = shifted[:, 0, nq:], shifted[:, 1, nq:]
    d_fg, d_bg = d_q[:, 0], d_q[:, 1]
    inner = inner.view(B, nq)
    g_col = g.transpose(1, 2)  # (B, N, 1), a transposed row: see classifier.features_times
    weight_q = p.weight_q.unsqueeze(1)  # (B, 1, Nq)
    # The logit gradient is slope * factor * (query: d_q terms; support: 1/(p_k + EPS)) with
    # slope = p_fg p_bg and factor the query weight, or -/+ ce_w times the support weight
    # on foreground/background (the support CE gradient of losses.support_ce_grad).
    factor = torch.cat([p.weight_q, torch.where(p.fg, -p.weight_s, p.weight_s) * ce_w], dim=1)
    neg_b = -b.unsqueeze(1)  # (B, 1): the logits are scale * dots + neg_b
    neg_kl_pi = -_log_prior_ratio(pi, kl_w)
    if ent_w == 0 and kl_w == 0:  # the KL weight then stays 0 (no re-estimation either)
        g_q.zero_()
    for t in range(1, cfg.steps + 2):  # the last pass only scores the final classifier
        step = t <= cfg.steps
        reestimate, kl_w = schedule(t, kl_w)
        norm = torch.linalg.vector_norm(w, dim=1, keepdim=True)  # (B, 1)
        d = norm + EPS
        scale = d.reciprocal().mul_(cfg.tau)  # (B, 1) = tau / (|w| + EPS)
        torch.bmm(w.unsqueeze(1), x, out=dots)
        torch.addcmul(neg_b, dots2, scale, out=logits)
        if not step and tracer is None:
            break
        torch.sigmoid(logits, out=p_fg)
        torch.sub(one, p_fg, out=p_bg)
        shares = (probs_q * weight_q).sum(dim=2)  # (B, 2) query's (fg, bg) shares
        if reestimate:
            pi = shares[:, 0].clone()
            neg_kl_pi = -_log_prior_ratio(pi, kl_w)
        if tracer is not None:
            tracer.add(logits_q, _terms(p, p_fg, pi, (ce_w, ent_w, kl_w)))
        if not step:
            break
        torch.add(probs, eps, out=shifted)
        torch.mul(p_fg, p_bg, out=slope)
        slope.mul_(factor)
        if kl_w != 0:
            log_shares = shares.log()
            kl = torch.sub(log_shares[:, :1], log_shares[:, 1:])  # (B, 1)
            kl = torch.add(neg_kl_pi, kl, alpha=kl_w)  # dKL/dm_fg - dKL/dm_bg, weighted
        if ent_w != 0:
            # d entropy / d z = slope * (d_bg - d_fg), d_k = log(p_k + EPS) + p_k/(p_k + EPS)
            torch.log(shifted_q, out=d_q)
            torch.div(probs_q, shifted_q, out=ratio_q)
            d_q.add_(ratio_q)
            torch.sub(d_bg, d_fg, out=inner)
            if kl_w != 0:
                torch.add(kl, inner, alpha=ent_w, out=inner)
            else:
                inner.mul_(ent_w)
            torch.mul(slope_q, inner, out=g_q)
        elif kl_w != 0:
            torch.mul(slope_q, kl, out=g_q)
        torch.where(p.fg, shifted_fg_s, shifted_bg_s, out=den_s)
        torch.div(slope_s, den_s, out=g_s)
        h = torch.bmm(x, g_col).view(B, C)  # (B, C)
        # cosine_grad with gc = g . (x w) = h . w (0, not 0/0, for a zero prototype)
        coef = torch.linalg.vecdot(h, w).unsqueeze(1) / (norm * d).clamp_min(clf.TINY)  # (B, 1)
        w = torch.addcmul(w, scale, torch.addcmul(h, coef, w, value=-1), value=-cfg.lr)
        neg_b = torch.add(neg_b, g.sum(dim=2), alpha=-cfg.lr)  # d loss / d b = -sum g
    return Fitted(logits_q, pi, w, -neg_b.squeeze(1),
                  None if tracer is None else tracer.stacked())
