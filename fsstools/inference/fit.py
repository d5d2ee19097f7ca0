"""Fitting the per-task classifiers: input checks, chunking, the streaming and autograd loops.

The fast loop (:func:`fit_fast`) uses closed-form gradients: per iteration and task it reads
each block of features (one shot, or the query) once for the scores and, while the block is
still in cache, once more for ``F^T g`` (see :func:`~fsstools.inference.classifier.cosine_grad`).
Features are used where they lie (no normalised copy: the dot products are scaled by inverse
norms instead), and support pixels labelled 255 are dropped since no term reads them.
That suits a large task (C=512, 53x53: ~11 MB per task) run alone on a core.
Small tasks instead go through :mod:`fsstools.inference.stacked`, which fits a chunk of
tasks at once on one normalised copy of their features, so per-operation overhead is shared.
The straightforward loop (:func:`fit_autograd`) is autograd + SGD over the whole chunk,
written like the reference code; tests and ``bench/inference.py`` hold them equal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import torch

from fsstools.constants import IGNORE_INDEX
from fsstools.inference import classifier as clf
from fsstools.inference import losses
from fsstools.inference.config import MethodConfig
from fsstools.inference.loop import Fitted, Schedule, Tracer, initial_bias_prior

DEFAULT_MEMORY_BUDGET = 2 * 1024**3
"""Bytes of features per chunk on accelerators when the caller gives no budget."""

COPIES_PER_TASK = 3
"""Feature-sized buffers per task on an accelerator: the chunk moved there, plus transient
copies while it is prepared."""

CACHE_BYTES = 6 * 1024**2
"""Bytes of features per chunk on CPU. A chunk's features are read twice per iteration,
so they should stay in cache; but each torch call costs microseconds whatever its size,
so small tasks go faster in larger chunks. Measured on the 2-core machine (1 MiB L2 per
core, 32 MiB shared L3, C=128 on 16x16): 4-8 MiB best, 2 MiB 1.3-1.6x and 16 MiB 1.4-2x
slower. Tasks larger than this run alone, streamed block by block (:func:`fit_fast`)."""

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Pixels:
    """A set of pixels of B tasks on the compute device, as feature columns.

    Attributes:
        f: (B, C, n) features, not normalised (often a view of the caller's tensor).
        r: (B, n) inverse feature norms, or None where ``f`` is normalised.
        weight: (B, n) pixel weights (valid / valid count of the whole support or query).
        fg: (B, n) bool foreground labels (support), or None.
    """

    f: torch.Tensor
    r: torch.Tensor | None
    weight: torch.Tensor
    fg: torch.Tensor | None = None


@dataclass
class Problem:
    """A chunk of B tasks: the support as one block of pixels per shot, and the query.

    Attributes:
        support: S blocks (fewer pixels per block after dropping ignored ones).
        query: the h*w query pixels, all kept (the output covers them all).
        labels_q: (B, h*w) {0, 1, 255} query mask, or None.
    """

    support: list[Pixels]
    query: Pixels
    labels_q: torch.Tensor | None

    @property
    def shots(self) -> int:
        return len(self.support)


def check_inputs(
    cfg: MethodConfig,
    support_feats: torch.Tensor,
    support_masks: torch.Tensor,
    query_feats: torch.Tensor,
    query_valid: torch.Tensor,
    query_mask: torch.Tensor | None,
) -> None:
    """Shapes agree, every support has foreground, every query a valid pixel (else ValueError)."""
    if support_feats.dim() != 5:
        raise ValueError(f"support_feats must be (B, S, C, h, w), got {tuple(support_feats.shape)}")
    B, S, C, h, w = support_feats.shape
    if B == 0 or S == 0:
        raise ValueError(f"support_feats {tuple(support_feats.shape)} holds no task or no shot")
    expected = {
        "support_masks": (support_masks, (B, S, h, w)),
        "query_feats": (query_feats, (B, C, h, w)),
        "query_valid": (query_valid, (B, h, w)),
    }
    if query_mask is not None:
        expected["query_mask"] = (query_mask, (B, h, w))
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(tensor.shape)}")
    has_fg = (support_masks == 1).flatten(1).any(dim=1)
    if not bool(has_fg.all()):
        raise ValueError(clf.empty_support_message(int((~has_fg).nonzero()[0])))
    has_valid = query_valid.flatten(1).any(dim=1)
    if not bool(has_valid.all()):
        task = int((~has_valid).nonzero()[0])
        raise ValueError(f"task {task}: query_valid has no True pixel; check the padding mask")
    if cfg.prior == "oracle" and query_mask is None:
        raise ValueError(f"method {cfg.name!r} uses the oracle prior: pass query_mask")


def task_bytes(feats: torch.Tensor) -> int:
    """Bytes of one task's support and query features (B, S, C, h, w) in the compute dtype."""
    _, S, C, h, w = feats.shape
    itemsize = 8 if feats.dtype == torch.float64 else 4
    return (S + 1) * C * h * w * itemsize


def default_chunk(feats: torch.Tensor, device: torch.device, memory_budget: int | None) -> int:
    """Most tasks per chunk for features (B, S, C, h, w).

    On CPU as many as :data:`CACHE_BYTES` holds (at least 1), elsewhere what
    ``memory_budget`` bytes allow. It depends on the features only, never on the worker
    count, so neither do the outputs.
    """
    per_task = task_bytes(feats)
    if device.type != "cpu":
        return max(1, (memory_budget or DEFAULT_MEMORY_BUDGET) // (per_task * COPIES_PER_TASK))
    return max(1, CACHE_BYTES // per_task)


def spans(tasks: int, chunk: int) -> list[tuple[int, int]]:
    """``[start, end)`` of the fewest chunks of at most ``chunk`` tasks, sizes within 1."""
    n = -(-tasks // chunk)
    return [(i * tasks // n, (i + 1) * tasks // n) for i in range(n)]


def streams(feats: torch.Tensor, chunk: int) -> bool:
    """Whether chunks of ``chunk`` tasks go through :func:`fit_fast` (streamed by block)
    rather than :func:`~fsstools.inference.stacked.fit_stacked` (one normalised copy).

    Streaming pays only for a task that runs alone and whose features exceed the cache:
    copying them would cost a pass over memory and as much memory again.
    """
    return chunk == 1 and task_bytes(feats) > CACHE_BYTES


def map_single_threaded(fn: Callable[[T], R], items: Sequence[T], workers: int | None) -> list[R]:
    """``[fn(x) for x in items]`` on ``workers`` threads, torch single-threaded meanwhile.

    Each chunk of tasks is a chain of matrix-vector products that one core runs at cache or
    memory speed; running chunks side by side uses the cores better than splitting each
    product.
    """
    workers = workers or torch.get_num_threads()
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if workers <= 1 or len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(fn, items))
    finally:
        torch.set_num_threads(previous)


def prepare(
    support_feats: torch.Tensor,
    support_masks: torch.Tensor,
    query_feats: torch.Tensor,
    query_valid: torch.Tensor,
    query_mask: torch.Tensor | None,
    device: torch.device,
    dtype: torch.dtype,
    compact: bool,
) -> Problem:
    """Move one chunk to ``device``/``dtype`` as pixel columns, without copying if possible.

    Args:
        support_feats: (B, S, C, h, w).
        support_masks: (B, S, h, w) {0, 1, 255}.
        query_feats: (B, C, h, w).
        query_valid: (B, h, w) bool.
        query_mask: (B, h, w) {0, 1, 255} or None.
        device: compute device.
        dtype: compute dtype.
        compact: drop support pixels labelled 255 (single-task chunks only).
    """
    B, S, C, h, w = support_feats.shape
    masks = support_masks.to(device).reshape(B, S, h * w)  # (B, S, h*w)
    support_weight = losses.pixel_weights(masks.flatten(1) != IGNORE_INDEX, dtype)
    support_weight = support_weight.reshape(B, S, h * w)
    blocks = []
    for shot in range(S):
        f = support_feats[:, shot].to(device=device, dtype=dtype).reshape(B, C, h * w)
        m, wt = masks[:, shot], support_weight[:, shot]
        if compact and not bool((m != IGNORE_INDEX).all()):
            keep = (m[0] != IGNORE_INDEX).nonzero().squeeze(1)
            f, m, wt = f[:, :, keep], m[:, keep], wt[:, keep]
        blocks.append(Pixels(f=f, r=clf.inverse_norms(f), weight=wt, fg=m == 1))
    fq = query_feats.to(device=device, dtype=dtype).reshape(B, C, h * w)
    query = Pixels(f=fq, r=clf.inverse_norms(fq),
                   weight=losses.pixel_weights(query_valid.to(device).flatten(1), dtype))
    labels = None if query_mask is None else query_mask.to(device).flatten(1)
    return Problem(support=blocks, query=query, labels_q=labels)


def initial_state(
    cfg: MethodConfig, p: Problem, task_offset: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prototype (B, C), bias (B,) and prior (B,) before any step."""
    blocks = p.support
    w = clf.prototypes([k.f for k in blocks], [k.fg for k in blocks], [k.r for k in blocks],
                       task_offset)
    q = p.query
    scores = clf.cosine_scores(q.f, w, cfg.tau, q.r)  # (B, Nq)
    support = None
    if cfg.bias_init == "support":
        support = (torch.cat([clf.cosine_scores(k.f, w, cfg.tau, k.r) for k in blocks], dim=1),
                   torch.cat([k.fg for k in blocks], dim=1),
                   torch.cat([k.weight > 0 for k in blocks], dim=1))
    return (w, *initial_bias_prior(cfg, scores, q.weight, p.labels_q, support))


def fit_fast(cfg: MethodConfig, p: Problem, trace: bool, task_offset: int = 0) -> Fitted:
    """The fast loop: closed-form gradients, one pass per block for scores and gradient."""
    w, b, pi = initial_state(cfg, p, task_offset)
    B, q = w.shape[0], p.query
    ce_w, ent_w, kl_w0 = (torch.full((B,), x, dtype=w.dtype, device=w.device)
                          for x in cfg.loss_weights(p.shots))
    ce_weights = [blk.weight * ce_w.unsqueeze(1) for blk in p.support]
    schedule, kl_w = Schedule(cfg, float(kl_w0[0])), kl_w0
    tracer = Tracer(p.labels_q) if trace else None
    for t in range(1, cfg.steps + 2):  # the last pass only scores the final classifier
        step = t <= cfg.steps
        reestimate, kl_w = schedule(t, kl_w)
        scale = clf.score_scale(w, cfg.tau).unsqueeze(1)  # (B, 1)
        cq = clf.cosine_dots(q.f, w, q.r)  # (B, Nq)
        zq = cq * scale - b.unsqueeze(1)
        pq = torch.sigmoid(zq)
        if reestimate:
            pi = losses.fg_share(pq, q.weight)
        terms = None
        if tracer is not None:
            terms = {"entropy": losses.query_entropy(pq, q.weight), "pi": pi, "kl_weight": kl_w,
                     "kl": losses.prior_kl(pq, q.weight, pi), "ce": torch.zeros_like(pi),
                     "fg_share": losses.fg_share(pq, q.weight)}
        elif not step:
            break
        if step:
            gq = losses.query_grad(pq, q.weight, pi, ent_w, kl_w)  # (B, Nq)
            h = clf.features_times(q.f, gq, q.r)  # (B, C)
            gc, gsum = (gq * cq).sum(dim=1), gq.sum(dim=1)
        for blk, ce_weight in zip(p.support, ce_weights, strict=True):
            cs = clf.cosine_dots(blk.f, w, blk.r)  # (B, n)
            ps = torch.sigmoid(cs * scale - b.unsqueeze(1))
            if terms is not None:
                terms["ce"] = terms["ce"] + losses.support_ce(ps, blk.fg, blk.weight)
            if step:
                # the block was just read for cs, so this second read hits the cache
                gs = losses.support_ce_grad(ps, blk.fg, ce_weight)
                h = h + clf.features_times(blk.f, gs, blk.r)
                gc, gsum = gc + (gs * cs).sum(dim=1), gsum + gs.sum(dim=1)
        if terms is not None:
            terms["loss"] = ce_w * terms["ce"] + ent_w * terms["entropy"] + kl_w * terms["kl"]
            tracer.add(zq, terms)
        if step:
            w = w - cfg.lr * clf.cosine_grad(h, gc, w, cfg.tau)
            b = b + cfg.lr * gsum  # d loss / d b = -sum of d loss / d z
    return Fitted(zq, pi, w, b, None if tracer is None else tracer.stacked())


def fit_autograd(cfg: MethodConfig, p: Problem, trace: bool, task_offset: int = 0) -> Fitted:
    """The straightforward loop: whole-chunk forward on normalised features, autograd, SGD.

    (torch.optim.SGD would do the same update; it is not used because its first construction
    imports torch._dynamo, which takes seconds.)
    """
    w0, b0, pi = initial_state(cfg, p, task_offset)
    fs = clf.normalize(torch.cat([blk.f for blk in p.support], dim=2))  # (B, C, Ns)
    fg = torch.cat([blk.fg for blk in p.support], dim=1)
    ws = torch.cat([blk.weight for blk in p.support], dim=1)
    fq, wq = clf.normalize(p.query.f), p.query.weight
    w = w0.clone().requires_grad_(True)
    b = b0.clone().requires_grad_(True)
    ce_w, ent_w, kl_w = cfg.loss_weights(p.shots)
    schedule = Schedule(cfg, kl_w)
    kl_w = torch.full_like(pi, kl_w)
    tracer = Tracer(p.labels_q) if trace else None
    for t in range(1, cfg.steps + 2):
        reestimate, kl_w = schedule(t, kl_w)
        with torch.set_grad_enabled(t <= cfg.steps):
            zs = clf.reference_cosine_scores(fs, w, cfg.tau) - b.unsqueeze(1)
            zq = clf.reference_cosine_scores(fq, w, cfg.tau) - b.unsqueeze(1)
            ps, pq = torch.sigmoid(zs), torch.sigmoid(zq)
            if reestimate:
                pi = losses.fg_share(pq.detach(), wq)
            ce = losses.support_ce(ps, fg, ws)
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
