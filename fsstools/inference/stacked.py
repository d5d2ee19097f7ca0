"""The small-task loop: RePRI's iterations on the one-block layout with buffers made once.

For small features (the embedded benchmark's C=128 on a 16x16 grid) a chunk's arithmetic per
iteration takes about as long as dispatching the torch calls and allocating their results,
so the general loop (:func:`~fsstools.inference.loop.fit`, which runs any number of blocks)
pays for its per-block allocations and views. This loop takes the same one-block layout
(:func:`~fsstools.inference.layout.lay_out`, query pixels then every shot's, L2-normalised),
the same initial state (:func:`~fsstools.inference.loop.initial_state`), the same logit
gradient (:class:`~fsstools.inference.losses.LogitGrad`) and the same traces
(:func:`~fsstools.inference.loop.traced_terms`), and writes the scores into buffers made once
too (~30 calls per iteration whatever the chunk's size). The tests hold both loops equal to
the autograd reference (``tests/reference_repri.py``).

Why two loops: ``bench/loops.py`` runs both on the same chunks and worker threads,
alternating call by call (2-core Intel Xeon, idle, float32, medians of 7). Their outputs are
bit for bit the same; tasks/s:

| features, shots, method | chunk | general loop | this loop | general / this |
|---|---|---|---|---|
| C=128 16x16, 1, RePRI (50 steps) | 24 tasks (6 MiB) | 551 | 606 | 0.91 |
| C=128 16x16, 5, RePRI | 8 tasks (6 MiB) | 194 | 205 | 0.94 |
| C=128 16x16, 1, Oracle-RePRI (300 steps) | 24 tasks (6 MiB) | 102 | 108 | 0.94 |
| C=128 16x16, 1, RePRI | 128 tasks (32 MiB) | 1099 | 1151 | 0.95 |
| C=128 16x16, 5, RePRI | 42 tasks (32 MiB) | 382 | 387 | 0.99 |
| C=128 16x16, 1, Oracle-RePRI | 128 tasks (32 MiB) | 235 | 239 | 0.98 |
| C=512 53x53, 1, RePRI | 1 task | 19.2 | 20.0 | 0.96 |
| C=512 53x53, 5, RePRI | 1 task | 8.4 | 8.6 | 0.98 |

The C=128 rows are the embedded benchmark's features, which the notebooks score, in chunks
of the fixed 6 MiB and of the budget this CPU's cache gives
(:func:`~fsstools.inference.layout.chunk_bytes`): the larger the chunk, the less the buffers
made once save.
"""

from __future__ import annotations

import torch

from fsstools.inference import classifier as clf
from fsstools.inference import losses
from fsstools.inference.config import MethodConfig
from fsstools.inference.layout import Problem
from fsstools.inference.loop import Fitted, Schedule, Tracer, initial_state, traced_terms


def fit_one_block(cfg: MethodConfig, p: Problem, trace: bool) -> Fitted:
    """:func:`~fsstools.inference.loop.fit` for a chunk laid out as one normalised block.

    The gradient is the loop's: wrt the logits from the same
    :class:`~fsstools.inference.losses.LogitGrad`, wrt ``w`` via ``h = x g`` and
    ``g . (x w) = h . w`` (:func:`~fsstools.inference.classifier.cosine_step`); the traces
    are the loop's :func:`~fsstools.inference.loop.traced_terms`. Buffers are private and
    reused across iterations; nothing the caller holds is written.
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
    kernel = losses.LogitGrad(nq, p.weight_q, blk.fg, blk.weight_s, ce_w)
    dots, z = (torch.empty(B, 1, N, dtype=x.dtype, device=x.device) for _ in range(2))
    # views of the buffers, made once
    logits, logits_q, dots2 = z.view(B, N), z[:, 0, :nq], dots.view(B, N)
    g_row, x_t = kernel.g.unsqueeze(1), x.transpose(1, 2)  # see classifier.features_times
    h_row = torch.empty(B, 1, C, dtype=x.dtype, device=x.device)
    h = h_row.view(B, C)
    neg_b = -b.unsqueeze(1)  # (B, 1): the logits are scale * dots + neg_b
    prior = losses.prior_slope(pi, kl_w)
    for t in range(1, cfg.steps + 2):  # the last pass only scores the final classifier
        step = t <= cfg.steps
        reestimate, kl_w = schedule(t, kl_w)
        scale, norm = clf.scale_and_norm(w, cfg.tau)  # (B, 1) each
        torch.bmm(w.unsqueeze(1), x, out=dots)
        torch.addcmul(neg_b, dots2, scale, out=logits)
        if not step and tracer is None:
            break
        kernel.probabilities(logits)
        shares = kernel.shares()  # (B, 2)
        if reestimate:
            pi = shares[:, 0].clone()
            prior = losses.prior_slope(pi, kl_w)
        if tracer is not None:
            ce = losses.support_ce(kernel.p_fg_s, blk.fg, blk.weight_s)
            tracer.add(logits_q, traced_terms(kernel.p_fg_q, p.weight_q, ce, pi,
                                              (ce_w, ent_w, kl_w)))
        if not step:
            break
        g = kernel.grad(shares, prior, ent_w, kl_w)  # (B, N)
        torch.bmm(g_row, x_t, out=h_row)  # h: (B, C)
        w = clf.cosine_step(w, h, scale, norm, cfg.lr)
        neg_b = torch.add(neg_b, g.sum(dim=1, keepdim=True), alpha=-cfg.lr)  # d loss / d b
    return Fitted(logits_q, pi, w, -neg_b.squeeze(1),
                  None if tracer is None else tracer.stacked())
