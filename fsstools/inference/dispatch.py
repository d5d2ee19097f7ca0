"""Running a method on a batch of tasks: chunks of tasks, each laid out and fitted by the loop.

Example:
    >>> import torch
    >>> from fsstools.inference import METHODS, run_method, fg_probs
    >>> g = torch.Generator().manual_seed(0)
    >>> sf, qf = torch.randn(2, 1, 8, 6, 6, generator=g), torch.randn(2, 8, 6, 6, generator=g)
    >>> sm = torch.zeros(2, 1, 6, 6, dtype=torch.long); sm[..., :3, :3] = 1
    >>> out = run_method(METHODS["repri"], sf, sm, qf, torch.ones(2, 6, 6, dtype=torch.bool))
    >>> out.logits.shape, fg_probs(out.logits, (41, 41)).shape
    (torch.Size([2, 6, 6]), torch.Size([2, 41, 41]))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from fsstools.inference import layout, loop, peers, stacked
from fsstools.inference.config import MethodConfig

PEER_CHUNK = 64
"""Tasks per forward pass of a peer's own inference (bounds the normalised copies)."""


@dataclass
class InferenceResult:
    """What a method returns for B tasks.

    Attributes:
        logits: (B, h, w) ``tau * cos - b`` of the final classifier on the query grid (the
            peers: foreground minus background logit, so ``sigmoid`` is their softmax).
        pi: (B,) foreground prior in force at the end; for a method without KL term the
            predicted share of its initial classifier; NaN for the peers, which have none.
        prototype: (B, C) final prototype ``w``; bias: (B,) final bias ``b``; both None for
            the peers' own inference.
        traces: None, or name -> (T, B) per-iteration values, T = steps + 1 (row t: the
            classifier after t steps, with the prior and KL weight used for the next step):
            "loss", "ce", "entropy", "kl" (unweighted terms), "kl_weight", "pi", "fg_share"
            (p_hat_fg) and, given the query mask, "iou" (foreground IoU at feature resolution).
            The peers take no step: an empty dict.
    """

    logits: torch.Tensor
    pi: torch.Tensor
    prototype: torch.Tensor | None
    bias: torch.Tensor | None
    traces: dict[str, torch.Tensor] | None = None


def run_method(
    cfg: MethodConfig,
    support_feats: torch.Tensor,
    support_masks: torch.Tensor,
    query_feats: torch.Tensor,
    query_valid: torch.Tensor,
    query_mask: torch.Tensor | None = None,
    chunk_size: int | None = None,
    trace: bool = False,
    *,
    device: torch.device | str | None = None,
    memory_budget: int | None = None,
    workers: int | None = None,
    model: nn.Module | None = None,
) -> InferenceResult:
    """Fit one classifier per task on its support and unlabelled query, predict the query;
    or, for the peers (``cfg.classifier`` "panet" / "pfenet"), run their own inference.

    Features may be a large CPU tensor (even memory-mapped): only one chunk of tasks is
    converted, normalised and moved to ``device`` at a time.

    Args:
        cfg: the method.
        support_feats: (B, S, C, h, w) features, normalised or not (cosines are taken here).
        support_masks: (B, S, h, w) {0, 1, 255} at feature resolution.
        query_feats: (B, C, h, w).
        query_valid: (B, h, w) bool, query pixels the losses and the prior average over
            (see :func:`~fsstools.inference.prior.query_valid_mask`).
        query_mask: (B, h, w) {0, 1, 255}; only for the oracle prior and the "iou" trace.
        chunk_size: most tasks per chunk (chunks are made about equal); default on CPU
            as many as fit in a core's cache (at least 1: a large task's features are then
            streamed block by block), else as many as ``memory_budget`` allows. Results
            depend on it only through rounding.
        trace: also return per-iteration traces.
        device: where to compute; default the device of ``support_feats``.
        memory_budget: bytes of features per chunk on accelerators (default 2 GiB).
        workers: CPU threads running tasks in parallel, each single-threaded (default
            ``torch.get_num_threads()``); results do not depend on it.
        model: the PFENet-style peer whose cached features these are (``cfg.classifier ==
            "pfenet"`` only; it runs on its own device).

    Returns:
        :class:`InferenceResult` on the device of ``support_feats``; float64 inputs are
        computed in float64 (the peers: always float32), anything else in float32.

    Raises:
        ValueError: a task without foreground support pixel or without valid query pixel,
            the oracle prior without ``query_mask``, inconsistent shapes, or "pfenet"
            without ``model``.
    """
    layout.check_inputs(cfg, support_feats, support_masks, query_feats, query_valid, query_mask)
    compute = torch.device(device) if device is not None else support_feats.device
    if cfg.classifier != "cosine":
        return _run_peer(cfg, support_feats, support_masks, query_feats, compute, trace, model)
    chunk = chunk_size or layout.default_chunk(support_feats, compute, memory_budget)
    streamed = layout.streams(support_feats, chunk)
    return fit_chunks(loop.fit if streamed else stacked.fit_one_block, cfg, support_feats,
                      support_masks, query_feats, query_valid, query_mask, trace, chunk=chunk,
                      device=compute, streamed=streamed, workers=workers)


def fit_chunks(
    fit: Callable[[MethodConfig, layout.Problem, bool], loop.Fitted],
    cfg: MethodConfig,
    support_feats: torch.Tensor,
    support_masks: torch.Tensor,
    query_feats: torch.Tensor,
    query_valid: torch.Tensor,
    query_mask: torch.Tensor | None,
    trace: bool,
    *,
    chunk: int,
    device: torch.device,
    streamed: bool,
    workers: int | None = None,
    worker_threads: bool = True,
) -> InferenceResult:
    """The cosine classifier's part of :func:`run_method`, with the loop as an argument: tasks
    in chunks of at most ``chunk``, each laid out (:func:`~fsstools.inference.layout.lay_out`)
    and fitted by ``fit``, the results put together.

    Arguments as :func:`run_method`'s (inputs already checked), and:
        fit: the loop (``loop.fit``, ``stacked.fit_one_block``; the tests' autograd reference).
        streamed: the layout (:func:`~fsstools.inference.layout.streams`).
        worker_threads: on CPU, run chunks on ``workers`` threads with torch single-threaded
            (:func:`~fsstools.inference.layout.map_single_threaded`); False: one after the
            other in this thread, with torch's threads as they are.

    Returns:
        :class:`InferenceResult` on the device of ``support_feats``.
    """
    dtype = torch.float64 if support_feats.dtype == torch.float64 else torch.float32
    spans = layout.spans(support_feats.shape[0], chunk)

    def one(span: tuple[int, int]) -> InferenceResult:
        a, e = span
        args = (support_feats[a:e], support_masks[a:e], query_feats[a:e], query_valid[a:e],
                None if query_mask is None else query_mask[a:e], device, dtype)
        out = fit(cfg, layout.lay_out(*args, streamed=streamed), trace)
        logits = out.logits.reshape(e - a, *query_feats.shape[-2:])  # (b, h, w)
        return InferenceResult(logits, out.pi, out.prototype, out.bias, out.traces)

    if device.type == "cpu" and worker_threads:
        results = layout.map_single_threaded(one, spans, workers)
    else:
        results = [one(span) for span in spans]
    return _concat(results, support_feats.device)


def _run_peer(cfg: MethodConfig, support_feats: torch.Tensor, support_masks: torch.Tensor,
              query_feats: torch.Tensor, compute: torch.device, trace: bool,
              model: nn.Module | None) -> InferenceResult:
    """A peer's own inference, ``PEER_CHUNK`` tasks at a time (see :mod:`.peers`)."""
    if cfg.classifier == "pfenet":
        if model is None:
            raise ValueError(f"method {cfg.name!r} is the PFENet-style peer's own head: pass "
                             "its model (load_model of its checkpoint) as model=")
        logits = peers.pfenet_logits(model, support_feats, support_masks, query_feats,
                                     chunk_size=PEER_CHUNK)
    else:
        parts = [peers.panet_logits(support_feats[a:e].to(compute),
                                    support_masks[a:e].to(compute),
                                    query_feats[a:e].to(compute), scale=cfg.tau)
                 for a, e in layout.spans(support_feats.shape[0], PEER_CHUNK)]
        logits = torch.cat(parts).to(support_feats.device)  # (B, h, w)
    nan = torch.full(logits.shape[:1], float("nan"), device=logits.device)  # no prior
    return InferenceResult(logits, nan, None, None, {} if trace else None)


def _concat(results: list[InferenceResult], device: torch.device) -> InferenceResult:
    traces = None
    if results[0].traces is not None:
        traces = {k: torch.cat([r.traces[k] for r in results], dim=1).to(device)
                  for k in results[0].traces}
    return InferenceResult(
        logits=torch.cat([r.logits for r in results]).to(device),
        pi=torch.cat([r.pi for r in results]).to(device),
        prototype=torch.cat([r.prototype for r in results]).to(device),
        bias=torch.cat([r.bias for r in results]).to(device),
        traces=traces,
    )
