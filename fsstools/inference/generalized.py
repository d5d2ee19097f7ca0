"""Generalized few-shot segmentation by DIaM (Hajimiri et al., CVPR 2023), pure tensors.

Every query pixel gets one of background + base classes + novel classes. The classifier is
the base model's 1x1 classifier (dot product plus bias, on features as they are) with one
weight per novel class appended: the L2-normalised mean support feature of that class, bias
0. Per query (task), copies of all weights and biases are fitted by plain gradient descent on
``ce * CE(support) + kl * KL(query marginal || pi) + ent * H(query) + kd * KD(query)``, the
frozen base classifier being the distillation's teacher (:mod:`.generalized_terms`).

A batch is B queries with either one support set each or one support set that all of them
share (the authors' protocol: one support set per run); a shared set is read once per
iteration for all queries, as one matrix product. Tasks never interact: any batching gives
the same numbers as one query at a time (``tests/reference_diam.py``).

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> wb, bb = torch.randn(3, 8, generator=g), torch.zeros(3)  # background + 2 base
    >>> sf, qf = torch.randn(1, 2, 8, 5, 5, generator=g), torch.randn(4, 8, 5, 5, generator=g)
    >>> sl = torch.zeros(1, 2, 5, 5, dtype=torch.long); sl[0, 0, :2] = 3; sl[0, 1, 3:] = 4
    >>> out = run_gfss(GFSS_METHODS["diam"], wb, bb, sf, sl, qf, torch.ones(4, 5, 5).bool(), 2)
    >>> out.logits.shape, out.traces
    (torch.Size([4, 5, 5, 5]), None)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from fsstools.constants import EPS
from fsstools.errors import did_you_mean
from fsstools.inference import generalized_terms as terms
from fsstools.inference.generalized_layout import (
    Packed,
    SupportPass,
    check,
    pack,
    true_proportions,
)

PI_STRATEGIES = ("self", "uniform", "imglvl", "upperbound")
"""Where the class prior ``pi`` of the KL term comes from (see :class:`GFSSConfig`)."""
BLOCK_ELEMENTS = 1 << 18
"""Support logits per block of pixels (1 MiB in float32; 780 pixels for 16 queries and 21
classes): a block's logits stay in cache from the matrix product through the gradient to the
product back onto the features. Measured on one core of a Xeon (Sapphire Rapids, 2 MiB L2):
blocks of 256-780 pixels ran the two products at ~70 GFLOP/s, 1024 pixels and more at 45-53."""
BLOCK_ELEMENTS_ACCELERATOR = 1 << 26
"""The same on a GPU (256 MiB in float32), where each call costs a kernel launch: a support
set of 25 images for 16 queries is then one block."""


@dataclass(frozen=True)
class GFSSConfig:
    """Settings of DIaM's inference; the defaults are the authors' (config/pascal.yaml).

    Attributes:
        name: label used in tables.
        iterations: gradient steps (0: the initial classifier).
        lr: SGD step size (no momentum, no weight decay).
        ce_weight, kl_weight, ent_weight, kd_weight: weights of the support CE, KL(query
            marginal || pi), the query entropy and the distillation; 0 switches a term off.
        pi: "self" (the query marginal of the initial classifier, re-estimated after the
            steps in ``pi_update_at``), "uniform" (1 / K), "imglvl" (the initial marginal
            with the classes absent from the query's labels masked out), "upperbound" (the
            true class proportions of the query). The last two need the query labels.
        pi_update_at: steps after which "self" re-estimates pi from the current classifier
            (only when the KL term is on), as the authors' ``pi_update_at``.
        kd_direction: "student_teacher", KL(student || teacher) as the authors, or
            "teacher_student".
        tune_base: also fit the per-task copies of the base weights and biases (the
            authors' ``fine_tune_base_classifier``); else only the novel ones.
        bg_ce_weight_one_shot, bg_ce_weight: the background's class weight in the CE for
            one shot per novel class and for more; the others weigh 1.
    """

    name: str = "diam"
    iterations: int = 100
    lr: float = 0.00125
    ce_weight: float = 100.0
    kl_weight: float = 1.0
    ent_weight: float = 1.0
    kd_weight: float = 100.0
    pi: Literal["self", "uniform", "imglvl", "upperbound"] = "self"
    pi_update_at: tuple[int, ...] = (10,)
    kd_direction: Literal["student_teacher", "teacher_student"] = "student_teacher"
    tune_base: bool = True
    bg_ce_weight_one_shot: float = 0.01
    bg_ce_weight: float = 0.15

    def __post_init__(self) -> None:
        if self.pi not in PI_STRATEGIES:
            raise ValueError(f"GFSSConfig.pi={self.pi!r}: use one of {', '.join(PI_STRATEGIES)}")
        if self.kd_direction not in terms.KD_DIRECTIONS:
            raise ValueError(f"GFSSConfig.kd_direction={self.kd_direction!r}: use one of "
                             f"{', '.join(terms.KD_DIRECTIONS)}")
        weights = (self.ce_weight, self.kl_weight, self.ent_weight, self.kd_weight,
                   self.bg_ce_weight_one_shot, self.bg_ce_weight)
        if self.iterations < 0 or self.lr <= 0 or min(weights) < 0:
            raise ValueError(f"GFSSConfig {self.name!r}: need iterations >= 0, lr > 0 and "
                             "weights >= 0")
        if any(t < 1 for t in self.pi_update_at):
            raise ValueError(f"GFSSConfig.pi_update_at={self.pi_update_at}: each is a step "
                             "count >= 1")

    @property
    def needs_labels(self) -> bool:
        """True when the prior reads the query labels (imglvl, upperbound)."""
        return self.pi in ("imglvl", "upperbound")


GFSS_METHODS: dict[str, GFSSConfig] = {
    "diam": GFSSConfig(),
    "diam_no_kd": GFSSConfig(name="diam_no_kd", kd_weight=0.0),
    "diam_upperbound": GFSSConfig(name="diam_upperbound", pi="upperbound"),
    "gfss_prototypes": GFSSConfig(name="gfss_prototypes", iterations=0),
}
"""The generalized methods: DIaM, without distillation, with the true class proportions as
prior (an oracle), and its initial classifier (no fitting: base classifier + prototypes)."""


def resolve_gfss_method(name: str) -> GFSSConfig:
    """The :data:`GFSS_METHODS` entry called ``name``; ValueError naming the known ones."""
    if name not in GFSS_METHODS:
        raise ValueError(f"unknown generalized method {name!r}{did_you_mean(name, GFSS_METHODS)};"
                         f" known: {', '.join(GFSS_METHODS)}")
    return GFSS_METHODS[name]


@dataclass
class GFSSResult:
    """What :func:`run_gfss` returns for B queries over K = background + base + novel classes.

    Attributes:
        logits: (B, K, h, w) of the fitted classifier; softmax over dim 1 (:attr:`probs`).
        pi: (B, K) prior in force at the end (for "self" without KL term: the initial one).
        weight: (B, K, C) and bias: (B, K), the fitted classifier of each query.
        traces: None, or name -> (T, B), T = iterations + 1, row t the classifier after t
            steps with the prior of step t + 1: "loss" (weighted sum), "ce", "kl",
            "entropy", "kd" (unweighted; the CE carries its class weights).
    """

    logits: torch.Tensor
    pi: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    traces: dict[str, torch.Tensor] | None = None

    @property
    def probs(self) -> torch.Tensor:
        """(B, K, h, w) class probabilities."""
        return torch.softmax(self.logits, dim=1)


def initial_classifier(base_weight: torch.Tensor, base_bias: torch.Tensor, p: Packed,
                       tasks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Base classifier + normalised novel prototypes, one copy per task.

    Returns:
        (B, K, C) weights and (B, K) biases; a novel class without support pixel gets a
        zero weight.
    """
    feats = p.support[:, :-1]  # (Bs, C, n) without the ones row
    novel = torch.arange(p.n_bg, p.n_classes, device=feats.device)
    # (Bs, n_novel, n); padding columns are labelled 0
    onehot = (p.label_s.view(p.groups, 1, -1) == novel.view(1, -1, 1)).to(feats.dtype)
    mean = torch.bmm(onehot, feats.transpose(1, 2)) / (onehot.sum(dim=2, keepdim=True) + EPS)
    mean = mean / (mean.norm(dim=2, keepdim=True) + EPS)  # (Bs, n_novel, C)
    share = tasks // p.groups
    novel_w = mean.repeat_interleave(share, dim=0)  # (B, n_novel, C)
    weight = torch.cat([base_weight.expand(tasks, -1, -1), novel_w], dim=1)
    bias = torch.cat([base_bias.expand(tasks, -1), novel_w.new_zeros(tasks, len(novel))], dim=1)
    return weight.contiguous(), bias.contiguous()


def run_gfss(
    cfg: GFSSConfig,
    base_weight: torch.Tensor,
    base_bias: torch.Tensor,
    support_feats: torch.Tensor,
    support_labels: torch.Tensor,
    query_feats: torch.Tensor,
    query_valid: torch.Tensor,
    n_novel: int,
    query_labels: torch.Tensor | None = None,
    trace: bool = False,
) -> GFSSResult:
    """Fit DIaM's classifier for each of B queries and score every query pixel.

    Args:
        cfg: the method.
        base_weight: (K_b, C) trained 1x1 classifier, background first, K_b = 1 + base.
        base_bias: (K_b,).
        support_feats: (Bs, S, C, h, w) with Bs = 1 (one support set shared by all queries)
            or Bs = B; features as the model gives them (no normalisation).
        support_labels: (Bs, S, h, w) int64 in {0..K-1, 255}, K = K_b + n_novel; novel
            classes are K_b..K-1, base classes count as background (the CE folds them so).
            The number of shots is S // n_novel (it picks the background's CE weight).
        query_feats: (B, C, h, w).
        query_valid: (B, h, w) bool, pixels the query terms and the prior average over
            (the authors take ``query_labels != 255``: padding and object boundaries).
        n_novel: novel classes.
        query_labels: (B, h, w) {0..K-1, 255}; needed by the "imglvl" and "upperbound"
            priors, read for nothing else.
        trace: also return per-step traces.

    Returns:
        :class:`GFSSResult`, computed in float64 for float64 features, else float32.
    """
    check(f"method {cfg.name!r} (pi={cfg.pi!r})" if cfg.needs_labels else None, base_weight,
          base_bias, support_feats, support_labels, query_feats, query_valid, n_novel,
          query_labels)
    B = query_feats.shape[0]
    dtype = torch.float64 if support_feats.dtype == torch.float64 else torch.float32
    shots = support_feats.shape[1] // n_novel
    bg_w = cfg.bg_ce_weight_one_shot if shots == 1 else cfg.bg_ce_weight
    p = pack(base_weight.shape[0], n_novel, support_feats, support_labels, query_feats,
             query_valid, bg_w, dtype)
    weight, bias = initial_classifier(base_weight.to(dtype), base_bias.to(dtype), p, B)
    true_pi = None
    if cfg.needs_labels:
        true_pi = true_proportions(query_labels, query_valid, p.n_classes, dtype)
    pi = true_pi if cfg.pi == "upperbound" else torch.full(
        (B, p.n_classes), 1 / p.n_classes, dtype=dtype, device=weight.device)
    teacher = None
    if cfg.kd_weight or trace:  # the frozen base classifier, on the query pixels
        zt = torch.baddbmm(bias[:, :p.n_bg, None], weight[:, :p.n_bg], p.query)
        teacher = terms.teacher_terms(torch.softmax(zt, dim=1), cfg.kd_direction)
    q_weights = (cfg.kl_weight, cfg.ent_weight, cfg.kd_weight)
    updates = set(cfg.pi_update_at) if cfg.pi == "self" and cfg.kl_weight else set()
    support = SupportPass(p, cfg.ce_weight, BLOCK_ELEMENTS if weight.device.type == "cpu"
                          else BLOCK_ELEMENTS_ACCELERATOR)
    rows: dict[str, list[torch.Tensor]] = {}
    for t in range(cfg.iterations + 1):  # pass t scores the classifier after t steps
        zq = torch.baddbmm(bias.unsqueeze(2), weight, p.query)  # (B, K, nq)
        probs, marginal = terms.query_probs(zq, p.v_q)
        if t == 0 and cfg.pi in ("self", "imglvl"):
            pi = marginal if cfg.pi == "self" else _masked_marginal(zq, p.v_q, true_pi)
        elif t in updates:
            pi = marginal
        step = t < cfg.iterations
        if not step and not trace:
            break
        grad_w, grad_b, values = _gradient(cfg, p, support, weight, bias, probs, marginal, pi,
                                           teacher, trace)
        if trace:
            values["loss"] = sum(w * values[k] for w, k in zip(
                (cfg.ce_weight, *q_weights), ("ce", "kl", "entropy", "kd"), strict=True))
            for k, val in values.items():
                rows.setdefault(k, []).append(val)
        if step:
            if not cfg.tune_base:
                grad_w[:, :p.n_bg] = 0
                grad_b[:, :p.n_bg] = 0
            weight.sub_(grad_w, alpha=cfg.lr)
            bias.sub_(grad_b, alpha=cfg.lr)
    feats = query_feats.to(dtype).flatten(2)  # (B, C, h * w)
    logits = torch.baddbmm(bias.unsqueeze(2), weight, feats).view(B, -1, *query_feats.shape[-2:])
    traces = {k: torch.stack(v) for k, v in rows.items()} if trace else None
    return GFSSResult(logits, pi, weight, bias, traces)


def _gradient(cfg: GFSSConfig, p: Packed, support: SupportPass, weight: torch.Tensor,
              bias: torch.Tensor, probs: torch.Tensor, marginal: torch.Tensor,
              pi: torch.Tensor, teacher: torch.Tensor | None, trace: bool
              ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Gradient of the loss wrt the weights (B, K, C) and biases (B, K), and when ``trace``
    the unweighted terms (B,) of the classifier that gave the query ``probs``."""
    g, values = terms.query_grad(probs, marginal, p.v_q, pi, teacher,
                                 (cfg.kl_weight, cfg.ent_weight, cfg.kd_weight),
                                 cfg.kd_direction, p.n_bg, trace)
    grad_w = torch.bmm(g, p.query.transpose(1, 2))  # (B, K, C)
    grad_b = g.sum(dim=2)
    ce = support(weight, bias, grad_w, grad_b, trace)
    if trace:
        values["ce"] = ce
    return grad_w, grad_b, values


def _masked_marginal(zq: torch.Tensor, v: torch.Tensor, true_pi: torch.Tensor) -> torch.Tensor:
    """The "imglvl" prior: the marginal with the query's absent classes' logits at -inf."""
    masked = zq.masked_fill((true_pi == 0).unsqueeze(2), float("-inf"))
    return (torch.softmax(masked, dim=1) * v).sum(dim=2)
