"""Pieces every fitting loop shares: the initial bias and prior, the prior-update schedule,
the per-iteration traces, and the loop's output."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fsstools.constants import IGNORE_INDEX
from fsstools.inference import classifier as clf
from fsstools.inference import losses
from fsstools.inference.config import MethodConfig
from fsstools.inference.prior import oracle_prior, perturb_prior


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
