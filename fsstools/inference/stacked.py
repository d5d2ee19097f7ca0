"""The small-task loop: RePRI's iterations on the one-block layout with buffers made once.

For small features (the embedded benchmark's C=128 on a 16x16 grid) a chunk's arithmetic per
iteration takes about as long as dispatching the torch calls and allocating their results,
so the general loop (:func:`~fsstools.inference.loop.fit`, which calls the
:mod:`~fsstools.inference.losses` gradients block by block) is dominated by that overhead.
This loop takes the same one-block layout (:func:`~fsstools.inference.layout.lay_out`, query
pixels then every shot's, L2-normalised) and the same initial state
(:func:`~fsstools.inference.loop.initial_state`) and writes the logit gradient inline into
buffers allocated once (~30 calls per iteration whatever the chunk's size). The tests hold
both loops equal to the autograd reference (``tests/reference_repri.py``).

Why two loops: tasks/s of the general loop on the one-block layout and of this one, side by
side in one process on the same tensors (idle AMD EPYC, 2 cores, 50 iterations, float32,
medians of 7; ``bench/inference.py``'s episodes):

| features, shots | general loop | this loop | general / this |
|---|---|---|---|
| C=512 53x53, 1 | 24.9 | 23.6 | 1.06 |
| C=512 53x53, 5 | 6.49 | 6.77 | 0.96 |
| C=128 16x16, 1 | 806 | 1151 | 0.70 |
| C=128 16x16, 5 | 274 | 425 | 0.64 |

The general loop alone would cost a third of the embedded benchmark's scoring speed.
"""

from __future__ import annotations

import torch

from fsstools.constants import EPS
from fsstools.inference import classifier as clf
from fsstools.inference import losses
from fsstools.inference.config import MethodConfig
from fsstools.inference.layout import Block, Problem
from fsstools.inference.loop import Fitted, Schedule, Tracer, initial_state


def _terms(
    p: Problem,
    blk: Block,
    p_fg: torch.Tensor,
    pi: torch.Tensor,
    weights: tuple[float, float, float],
) -> dict[str, torch.Tensor]:
    """Per-task loss terms for the traces from the probabilities (B, N) of all pixels."""
    pq, ps = p_fg[:, :blk.nq], p_fg[:, blk.nq:]
    ce_w, ent_w, kl_w = weights
    terms = {"ce": losses.support_ce(ps, blk.fg, blk.weight_s),
             "entropy": losses.query_entropy(pq, p.weight_q),
             "kl": losses.prior_kl(pq, p.weight_q, pi),
             "fg_share": losses.fg_share(pq, p.weight_q),
             "pi": pi,
             "kl_weight": torch.full_like(pi, kl_w)}
    terms["loss"] = ce_w * terms["ce"] + ent_w * terms["entropy"] + kl_w * terms["kl"]
    return terms


def fit_one_block(cfg: MethodConfig, p: Problem, trace: bool) -> Fitted:
    """:func:`~fsstools.inference.loop.fit` for a chunk laid out as one normalised block.

    The gradient is the loop's: wrt the logits from :mod:`~fsstools.inference.losses`'
    formulas, wrt ``w`` via ``h = x g`` and ``g . (x w) = h . w``
    (:func:`~fsstools.inference.classifier.cosine_step`). Buffers are private and reused
    across iterations; nothing the caller holds is written.
    """
    (blk,) = p.blocks
    if blk.r is not None:
        raise ValueError("fit_one_block takes the one-block layout (normalised features)")
    w, b, pi = initial_state(cfg, p)
    x, nq = blk.f, blk.nq
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
    # on foreground/background (losses.support_ce_grad).
    factor = torch.cat([p.weight_q, torch.where(blk.fg, -blk.weight_s, blk.weight_s) * ce_w],
                       dim=1)
    neg_b = -b.unsqueeze(1)  # (B, 1): the logits are scale * dots + neg_b
    neg_kl_pi = -losses.log_prior_ratio(pi, kl_w)
    if ent_w == 0 and kl_w == 0:  # the KL weight then stays 0 (no re-estimation either)
        g_q.zero_()
    for t in range(1, cfg.steps + 2):  # the last pass only scores the final classifier
        step = t <= cfg.steps
        reestimate, kl_w = schedule(t, kl_w)
        scale, norm = clf.scale_and_norm(w, cfg.tau)  # (B, 1) each
        torch.bmm(w.unsqueeze(1), x, out=dots)
        torch.addcmul(neg_b, dots2, scale, out=logits)
        if not step and tracer is None:
            break
        torch.sigmoid(logits, out=p_fg)
        torch.sub(one, p_fg, out=p_bg)
        shares = (probs_q * weight_q).sum(dim=2)  # (B, 2) query's (fg, bg) shares
        if reestimate:
            pi = shares[:, 0].clone()
            neg_kl_pi = -losses.log_prior_ratio(pi, kl_w)
        if tracer is not None:
            tracer.add(logits_q, _terms(p, blk, p_fg, pi, (ce_w, ent_w, kl_w)))
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
        torch.where(blk.fg, shifted_fg_s, shifted_bg_s, out=den_s)
        torch.div(slope_s, den_s, out=g_s)
        h = torch.bmm(x, g_col).view(B, C)  # (B, C)
        w = clf.cosine_step(w, h, scale, norm, cfg.lr)
        neg_b = torch.add(neg_b, g.sum(dim=2), alpha=-cfg.lr)  # d loss / d b = -sum g
    return Fitted(logits_q, pi, w, -neg_b.squeeze(1),
                  None if tracer is None else tracer.stacked())
