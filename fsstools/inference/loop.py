"""The RePRI loop: a closed-form gradient-descent loop over blocks of pixels (:func:`fit`),
with its initial classifier, prior-update schedule, traces and output.

It runs any layout (:func:`~fsstools.inference.layout.lay_out`: small tasks as one block
each, many tasks to a chunk; a large task streamed a block per shot), making the same calls
per block; :func:`fsstools.inference.run_method` gives it the streamed layout and the
one-block layout to :mod:`~fsstools.inference.stacked`, whose loop is faster there (the
measurement is in its docstring) and starts from this module's :func:`initial_state`.
``tests/reference_repri.py`` holds the straightforward autograd loop that the tests hold
both loops equal to.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fsstools.constants import IGNORE_INDEX
from fsstools.inference import classifier as clf
from fsstools.inference import losses
from fsstools.inference.config import MethodConfig
from fsstools.inference.layout import Block, Problem
from fsstools.inference.prior import oracle_prior, perturb_prior
from fsstools.inference.prototype import masked_average


@dataclass
class Fitted:
    """Output of a loop for one chunk: logits (B, Nq), pi (B,), the final prototype (B, C)
    and bias (B,), traces name -> (T, B)."""

    logits: torch.Tensor
    pi: torch.Tensor
    prototype: torch.Tensor
    bias: torch.Tensor
    traces: dict[str, torch.Tensor] | None


def initial_bias_prior(
    cfg: MethodConfig,
    scores: torch.Tensor,
    weight_q: torch.Tensor,
    labels_q: torch.Tensor | None,
    support: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bias (B,) and prior (B,) of the initial classifier.

    Args:
        cfg: the method.
        scores: (B, Nq) ``tau * cos`` of the query pixels.
        weight_q: (B, Nq) query pixel weights.
        labels_q: (B, Nq) {0, 1, 255} query mask (needed for the oracle prior) or None.
        support: (scores (B, Ns), foreground (B, Ns) bool, valid (B, Ns) bool) of the support
            pixels; needed when ``cfg.bias_init == "support"``.
    """
    if cfg.bias_init == "support":
        if support is None:
            raise ValueError(f"method {cfg.name!r} sets its bias from the support: pass it")
        b = clf.support_threshold(*support)
    else:
        b = clf.init_bias(scores, None if cfg.reference else weight_q > 0)
    if cfg.prior == "oracle":
        if labels_q is None:
            raise ValueError(f"method {cfg.name!r} uses the oracle prior: pass query_mask")
        pi = perturb_prior(oracle_prior(labels_q, weight_q > 0), cfg.prior_delta)
        return b, pi.to(scores.dtype)
    return b, losses.fg_share(torch.sigmoid(scores - b.unsqueeze(1)), weight_q)


class Schedule:
    """When the prior is re-estimated and what the KL weight is at each iteration."""

    def __init__(self, cfg: MethodConfig, kl_weight: float) -> None:
        active = cfg.prior == "estimate" and kl_weight != 0
        self.updates = set(cfg.t_pi) if active else set()
        self.bump = 1.0 if cfg.reference else 0.0

    def __call__(self, t: int, kl_weight: torch.Tensor) -> tuple[bool, torch.Tensor]:
        """Before step t (1-based): (re-estimate?, KL weight for this step)."""
        if t in self.updates:
            return True, kl_weight + self.bump
        return False, kl_weight


class Tracer:
    """Collects one row of per-task values per iteration."""

    def __init__(self, labels_q: torch.Tensor | None) -> None:
        self.labels_q = labels_q
        self.rows: dict[str, list[torch.Tensor]] = {}

    def add(self, zq: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        if self.labels_q is not None:
            terms = {**terms, "iou": _fg_iou(zq > 0, self.labels_q)}
        for k, v in terms.items():
            self.rows.setdefault(k, []).append(v.detach().to(zq.dtype))

    def stacked(self) -> dict[str, torch.Tensor]:
        return {k: torch.stack(v) for k, v in self.rows.items()}  # (T, B)


def _fg_iou(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Foreground IoU per task over labelled pixels, NaN when the union is empty: (B,)."""
    scored = labels != IGNORE_INDEX
    gt = labels == 1
    inter = (pred & gt & scored).sum(dim=1)
    union = ((pred | gt) & scored).sum(dim=1)
    return inter.double() / union.double()


def initial_state(cfg: MethodConfig, p: Problem) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prototype (B, C), bias (B,) and prior (B,) before any step."""
    support = [blk for blk in p.blocks if blk.has_support]
    w = masked_average([_support(blk.f, blk) for blk in support], [blk.fg for blk in support],
                           None if support[0].r is None else [_support(blk.r, blk) for blk in support])
    q = p.blocks[0]
    scores = clf.cosine_scores(q.f[:, :, :q.nq], w, cfg.tau, _query(q.r, q))  # (B, Nq)
    support_scores = None
    if cfg.bias_init == "support":
        support_scores = (
            torch.cat([clf.cosine_scores(_support(blk.f, blk), w, cfg.tau, _support(blk.r, blk))
                       for blk in support], dim=1),
            torch.cat([blk.fg for blk in support], dim=1),
            torch.cat([blk.weight_s > 0 for blk in support], dim=1))
    return (w, *initial_bias_prior(cfg, scores, p.weight_q, p.labels_q, support_scores))


def _query(t: torch.Tensor | None, blk: Block) -> torch.Tensor | None:
    """The query pixels' part of a block's (B, [C,] n) tensor."""
    return None if t is None else t[..., :blk.nq]


def _support(t: torch.Tensor | None, blk: Block) -> torch.Tensor | None:
    """The support pixels' part of a block's (B, [C,] n) tensor."""
    return None if t is None else t[..., blk.nq:]


def fit(cfg: MethodConfig, p: Problem, trace: bool) -> Fitted:
    """Fit the chunk's classifiers by gradient descent with closed-form gradients.

    An iteration reads each block twice: ``bmm`` for the scores, then, while the block is
    still in cache, ``bmm`` for ``h = sum_x g_x f_x/|f_x|``, where ``g`` is the gradient wrt
    the logits from the block's :class:`~fsstools.inference.losses.LogitGrad`;
    :func:`~fsstools.inference.classifier.cosine_step` turns ``h`` into the step on ``w``,
    and ``-sum g`` is the gradient wrt ``b``.
    """
    w, b, pi = initial_state(cfg, p)
    ce_w, ent_w, kl_w = cfg.loss_weights(p.shots)
    schedule = Schedule(cfg, kl_w)
    tracer = Tracer(p.labels_q) if trace else None
    kernels = [losses.LogitGrad(blk.nq, p.weight_q, blk.fg, blk.weight_s, ce_w)
               for blk in p.blocks]
    neg_b = -b.unsqueeze(1)  # (B, 1): the logits are scale * dots + neg_b
    prior = losses.prior_slope(pi, kl_w)
    for t in range(1, cfg.steps + 2):  # the last pass only scores the final classifier
        step = t <= cfg.steps
        reestimate, kl_w = schedule(t, kl_w)
        scale, norm = clf.scale_and_norm(w, cfg.tau)  # (B, 1) each
        h = g_sum = ce = shares = None
        for blk, kernel in zip(p.blocks, kernels, strict=True):
            z = torch.addcmul(neg_b, clf.cosine_dots(blk.f, w, blk.r), scale)  # (B, n)
            if blk.nq:
                zq = z[:, :blk.nq]
            if not step and tracer is None:
                break
            kernel.probabilities(z)
            if blk.nq:
                shares = kernel.shares()  # (B, 2)
                pq = kernel.p_fg_q
                if reestimate:
                    pi = shares[:, 0].clone()
                    prior = losses.prior_slope(pi, kl_w)
            if tracer is not None and blk.has_support:
                part = losses.support_ce(kernel.p_fg_s, blk.fg, blk.weight_s)
                ce = part if ce is None else ce + part
            if step:
                g = kernel.grad(shares, prior, ent_w, kl_w)  # (B, n)
                hb, gb = clf.features_times(blk.f, g, blk.r), g.sum(dim=1, keepdim=True)
                h, g_sum = (hb, gb) if h is None else (h + hb, g_sum + gb)
        if tracer is not None:
            tracer.add(zq, traced_terms(pq, p.weight_q, ce, pi, (ce_w, ent_w, kl_w)))
        if not step:
            break
        w = clf.cosine_step(w, h, scale, norm, cfg.lr)
        neg_b = torch.add(neg_b, g_sum, alpha=-cfg.lr)  # d loss / d b = -sum of d loss / d z
    return Fitted(zq, pi, w, -neg_b.squeeze(1), None if tracer is None else tracer.stacked())


def traced_terms(
    pq: torch.Tensor,
    weight_q: torch.Tensor,
    ce: torch.Tensor,
    pi: torch.Tensor,
    weights: tuple[float, float, float],
) -> dict[str, torch.Tensor]:
    """One row of the traces, per task (B,), but "iou" (:class:`Tracer` adds it).

    Args:
        pq: (B, Nq) foreground probabilities of the query pixels.
        weight_q: (B, Nq) query pixel weights.
        ce: (B,) the support's cross-entropy (:func:`~fsstools.inference.losses.support_ce`).
        pi: (B,) the prior in force.
        weights: the CE, entropy and KL weights in force.
    """
    ce_w, ent_w, kl_w = weights
    terms = {"ce": ce,
             "entropy": losses.query_entropy(pq, weight_q),
             "kl": losses.prior_kl(pq, weight_q, pi),
             "fg_share": losses.fg_share(pq, weight_q),
             "pi": pi,
             "kl_weight": torch.full_like(pi, kl_w)}
    terms["loss"] = ce_w * ce + ent_w * terms["entropy"] + kl_w * terms["kl"]
    return terms
