"""The straightforward RePRI loop: whole-chunk forward, autograd, plain SGD.

Written like the reference code (scores ``tau f.w / (|f| |w| + EPS)``, the summed loss
terms, ``backward``), it is what the tests hold :func:`fsstools.inference.loop.fit` equal
to, and what ``bench/inference.py`` times it against. It starts from the library's initial
classifier (:func:`~fsstools.inference.loop.initial_state`), so it checks the steps.
"""

from __future__ import annotations

import torch

from fsstools.constants import EPS
from fsstools.inference import InferenceResult, MethodConfig, dispatch, layout, losses
from fsstools.inference import classifier as clf
from fsstools.inference.loop import Fitted, Schedule, Tracer, initial_state


def reference_cosine_scores(feats: torch.Tensor, w: torch.Tensor, tau: float) -> torch.Tensor:
    """``tau * f.w / (|f| |w| + EPS)`` as the reference code writes it: (B, C, N), (B, C) -> (B, N)."""
    dots = clf.cosine_dots(feats, w)  # (B, N)
    return tau * dots / (feats.norm(dim=1) * w.norm(dim=1, keepdim=True) + EPS)


def total_loss(p_support, labels, w_support, p_query, w_query, pi, ce_weight, ent_weight,
               kl_weight) -> torch.Tensor:
    """Weighted sum of the three terms per task (B,); weights are floats or (B,) tensors."""
    return (ce_weight * losses.support_ce(p_support, labels, w_support)
            + ent_weight * losses.query_entropy(p_query, w_query)
            + kl_weight * losses.prior_kl(p_query, w_query, pi))


def fit_autograd(cfg: MethodConfig, p: layout.Problem, trace: bool) -> Fitted:
    """Autograd + SGD over a chunk laid out as one block per task (``streamed=False``).

    (torch.optim.SGD would do the same update; it is not used because its first construction
    imports torch._dynamo, which takes seconds.)
    """
    w0, b0, pi = initial_state(cfg, p)
    (blk,) = p.blocks
    fq, fs = blk.f[:, :, :blk.nq], blk.f[:, :, blk.nq:]
    wq = p.weight_q
    w = w0.clone().requires_grad_(True)
    b = b0.clone().requires_grad_(True)
    ce_w, ent_w, kl_w = cfg.loss_weights(p.shots)
    schedule = Schedule(cfg, kl_w)
    kl_w = torch.full_like(pi, kl_w)
    tracer = Tracer(p.labels_q) if trace else None
    for t in range(1, cfg.steps + 2):
        reestimate, kl_w = schedule(t, kl_w)
        with torch.set_grad_enabled(t <= cfg.steps):
            zs = reference_cosine_scores(fs, w, cfg.tau) - b.unsqueeze(1)
            zq = reference_cosine_scores(fq, w, cfg.tau) - b.unsqueeze(1)
            ps, pq = torch.sigmoid(zs), torch.sigmoid(zq)
            if reestimate:
                pi = losses.fg_share(pq.detach(), wq)
            ce = losses.support_ce(ps, blk.fg, blk.weight_s)
            ent = losses.query_entropy(pq, wq)
            kl = losses.prior_kl(pq, wq, pi)
            loss = ce_w * ce + ent_w * ent + kl_w * kl  # (B,)
        if tracer is not None:
            tracer.add(zq.detach(), {"loss": loss, "ce": ce, "entropy": ent, "kl": kl, "pi": pi,
                                     "fg_share": losses.fg_share(pq, wq), "kl_weight": kl_w})
        if t <= cfg.steps:
            loss.sum().backward()  # tasks are independent: the sum separates
            with torch.no_grad():  # plain SGD, as torch.optim.SGD without momentum
                for param in (w, b):
                    param.add_(param.grad, alpha=-cfg.lr)
                    param.grad = None
    return Fitted(zq.detach(), pi, w.detach(), b.detach(),
                  None if tracer is None else tracer.stacked())


def run_reference(
    cfg: MethodConfig,
    support_feats: torch.Tensor,
    support_masks: torch.Tensor,
    query_feats: torch.Tensor,
    query_valid: torch.Tensor,
    query_mask: torch.Tensor | None = None,
    chunk_size: int | None = None,
    trace: bool = False,
) -> InferenceResult:
    """:func:`fsstools.inference.run_method` with :func:`fit_autograd` (RePRI's cosine
    classifier only), in chunks of ``chunk_size`` tasks (default all) on their device, one
    after the other with torch's threads (the dispatcher's chunks and concatenation)."""
    layout.check_inputs(cfg, support_feats, support_masks, query_feats, query_valid, query_mask)
    return dispatch.fit_chunks(fit_autograd, cfg, support_feats, support_masks, query_feats,
                               query_valid, query_mask, trace,
                               chunk=chunk_size or support_feats.shape[0],
                               device=support_feats.device, streamed=False, worker_threads=False)
