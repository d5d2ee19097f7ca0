"""How a batch of generalized few-shot tasks reaches DIaM's loop: input checks, the valid
pixels of the support sets and the queries packed into dense (groups, C, pixels) tensors, and
the support CE's pass over its pixels a block at a time (:class:`SupportPass`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fsstools.constants import EPS, IGNORE_INDEX
from fsstools.inference.generalized_terms import pixel_weights, support_ce_step


@dataclass
class Packed:
    """The pixels the loop reads, for B queries and Bs = 1 or B support sets.

    Attributes:
        n_bg: background + base classes; n_classes: all classes K.
        groups: support sets Bs; the B // Bs queries sharing one are consecutive.
        support: (Bs, C + 1, n) valid support pixels' features and a row of ones (the bias),
            zero columns after a set's own pixels.
        cv_s: (Bs, 1, 1, n) class weight of each pixel's label times its pixel weight
            (0 on padding columns).
        label_s: (Bs, 1, 1, n) int64 label, base classes folded into background 0.
        bg_s: (Bs, 1, 1, n) bool, label 0.
        member_s: (Bs, 1, K, n) 1 for the classes whose probability the CE counts for the
            pixel's label (background and base classes for 0), else 0.
        query: (B, C, nq) valid query pixels' features, zero columns after a query's own.
        v_q: (B, 1, nq) their pixel weights.
    """

    n_bg: int
    n_classes: int
    groups: int
    support: torch.Tensor
    cv_s: torch.Tensor
    label_s: torch.Tensor
    bg_s: torch.Tensor
    member_s: torch.Tensor
    query: torch.Tensor
    v_q: torch.Tensor


class SupportPass:
    """The weighted support CE's gradient for all tasks, its buffers made once.

    The tasks sharing a support set are one matrix product: their weights and biases stacked
    as (Bs, share * K, C + 1) rows, against the set's (C + 1, pixels) features and ones.
    A block's logits become the gradient in place (:func:`support_ce_step`), then multiply
    the same block of features back into the gradient wrt the weights.

    Args:
        p: the packed batch.
        ce_weight: weight of the CE (0: the pass only measures it, for traces).
        block_elements: logits per block, all tasks together.
    """

    def __init__(self, p: Packed, ce_weight: float, block_elements: int) -> None:
        self.p, self.ce_weight, self.block_elements = p, ce_weight, block_elements
        self.buf: torch.Tensor | None = None  # (block logits,), made at the first call
        self.grad: torch.Tensor | None = None  # (Bs, share * K, C + 1)

    def __call__(self, weight: torch.Tensor, bias: torch.Tensor, grad_w: torch.Tensor,
                 grad_b: torch.Tensor, trace: bool) -> torch.Tensor | None:
        """Add the gradient to ``grad_w`` (B, K, C) and ``grad_b`` (B, K) of the tasks'
        ``weight`` (B, K, C) and ``bias`` (B, K); return the CE (B,) when ``trace``."""
        p = self.p
        if not self.ce_weight and not trace:
            return None
        B, K, C = weight.shape
        share = B // p.groups
        w_s = torch.cat([weight, bias.unsqueeze(2)], dim=2).view(p.groups, share * K, C + 1)
        n = p.support.shape[2]
        block = max(64, self.block_elements // (B * K))
        if self.buf is None:
            self.buf = w_s.new_empty(B * K * min(block, n))
            self.grad = torch.empty_like(w_s)
        grad = self.grad.zero_()
        ce = w_s.new_zeros(p.groups, share) if trace else None
        for a in range(0, n, block):
            e = min(a + block, n)
            f = p.support[:, :, a:e]  # (Bs, C + 1, b)
            z = torch.bmm(w_s, f, out=self.buf[:B * K * (e - a)].view(p.groups, share * K, -1))
            value = support_ce_step(z.view(p.groups, share, K, e - a), p.cv_s[..., a:e],
                                    p.label_s[..., a:e], p.bg_s[..., a:e],
                                    p.member_s[..., a:e], p.n_bg, trace)
            if trace:
                ce += value
            if self.ce_weight:
                grad.baddbmm_(z, f.transpose(1, 2))
        grad = grad.view(B, K, C + 1)
        grad_w.add_(grad[:, :, :C], alpha=self.ce_weight)
        grad_b.add_(grad[:, :, C], alpha=self.ce_weight)
        return None if ce is None else ce.view(B)


def _valid_first(valid: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Column order putting each row's valid pixels first (in their order), and the largest
    valid count: (G, N) bool -> ((G, n) int64, n)."""
    order = torch.sort((~valid).to(torch.uint8), dim=1, stable=True).indices
    n = max(int(valid.sum(dim=1).max()), 1)
    return order[:, :n], n


def pack(n_bg: int, n_novel: int, support_feats: torch.Tensor, support_labels: torch.Tensor,
         query_feats: torch.Tensor, query_valid: torch.Tensor, bg_weight: float,
         dtype: torch.dtype) -> Packed:
    """Lay the batch out for the loop (see :class:`Packed`); shapes as in
    :func:`~fsstools.inference.generalized.run_gfss`, ``bg_weight`` the background's class
    weight in the CE."""
    Bs, S, C = support_feats.shape[:3]
    K = n_bg + n_novel
    labels = support_labels.reshape(Bs, -1)  # (Bs, S h w), shots then pixels
    valid = labels != IGNORE_INDEX
    order, n = _valid_first(valid)
    keep = valid.gather(1, order)
    label = torch.where(keep & (labels.gather(1, order) >= n_bg), labels.gather(1, order), 0)
    flat = support_feats.to(dtype).transpose(1, 2).reshape(Bs, C, -1)  # (Bs, C, S h w)
    support = flat.new_ones(Bs, C + 1, n)
    # padding columns (a set with fewer valid pixels than another) are zeroed, not
    # multiplied by 0, so that nothing an ignored pixel holds, NaN included, is ever read
    support[:, :C] = flat.gather(2, order.unsqueeze(1).expand(Bs, C, n)).masked_fill_(
        ~keep.unsqueeze(1), 0)
    v = pixel_weights(keep, dtype)
    cv = torch.where(label == 0, bg_weight * v, v)
    classes = torch.arange(K, device=label.device).view(1, K, 1)
    member = torch.where((label == 0).unsqueeze(1), classes < n_bg,
                         classes == label.unsqueeze(1)).to(dtype)  # (Bs, K, n)
    B = query_feats.shape[0]
    q_valid = query_valid.reshape(B, -1).bool()
    q_order, nq = _valid_first(q_valid)
    q_keep = q_valid.gather(1, q_order)
    q_flat = query_feats.to(dtype).flatten(2)  # (B, C, h w)
    if bool(q_keep.all()) and nq == q_flat.shape[2]:
        query = q_flat.contiguous()
    else:
        query = q_flat.gather(2, q_order.unsqueeze(1).expand(B, C, nq)).masked_fill_(
            ~q_keep.unsqueeze(1), 0)
    return Packed(n_bg, K, Bs, support, cv.view(Bs, 1, 1, n), label.view(Bs, 1, 1, n),
                  (label == 0).view(Bs, 1, 1, n), member.unsqueeze(1), query,
                  pixel_weights(q_keep, dtype).unsqueeze(1))


def true_proportions(labels: torch.Tensor, valid: torch.Tensor, n_classes: int,
                     dtype: torch.dtype) -> torch.Tensor:
    """Class shares of each query among its valid, labelled pixels: (B, h, w) -> (B, K).

    The authors' valid pixels are the labelled ones; with padding-only validity, pixels
    labelled 255 inside the image are left out here rather than counted as background.
    """
    labelled = valid.bool() & (labels != IGNORE_INDEX)
    onehot = torch.nn.functional.one_hot(torch.where(labelled, labels, 0).flatten(1), n_classes)
    counts = (onehot * labelled.flatten(1).unsqueeze(2)).sum(dim=1).to(dtype)  # (B, K)
    return counts / (labelled.flatten(1).sum(dim=1, keepdim=True).to(dtype) + EPS)


def check(labels_for: str | None, base_weight: torch.Tensor, base_bias: torch.Tensor, support_feats: torch.Tensor,
          support_labels: torch.Tensor, query_feats: torch.Tensor, query_valid: torch.Tensor,
          n_novel: int, query_labels: torch.Tensor | None) -> None:
    """Raise ValueError naming the input at fault (shapes, label values, missing labels);
    ``labels_for`` names what reads the query labels, None when nothing does."""
    if base_weight.dim() != 2 or base_bias.shape != base_weight.shape[:1]:
        raise ValueError(f"base_weight {tuple(base_weight.shape)} and base_bias "
                         f"{tuple(base_bias.shape)}: need (K_b, C) and (K_b,)")
    K = base_weight.shape[0] + n_novel
    if n_novel < 1:
        raise ValueError(f"n_novel={n_novel}: need at least one novel class")
    if support_feats.dim() != 5 or query_feats.dim() != 4:
        raise ValueError(f"support_feats {tuple(support_feats.shape)}, query_feats "
                         f"{tuple(query_feats.shape)}: need (Bs, S, C, h, w) and (B, C, h, w)")
    Bs, S, C = support_feats.shape[:3]
    B = query_feats.shape[0]
    if C != base_weight.shape[1] or query_feats.shape[1] != C:
        raise ValueError(f"channels: base_weight {base_weight.shape[1]}, support {C}, query "
                         f"{query_feats.shape[1]}; they must agree")
    if Bs not in (1, B):
        raise ValueError(f"{Bs} support sets for {B} queries: give one shared set or one each")
    if support_labels.shape != (Bs, S, *support_feats.shape[-2:]):
        raise ValueError(f"support_labels {tuple(support_labels.shape)}: need "
                         f"{(Bs, S, *support_feats.shape[-2:])}")
    bad = (support_labels != IGNORE_INDEX) & ((support_labels < 0) | (support_labels >= K))
    if bool(bad.any()):
        raise ValueError(f"support label {int(support_labels[bad][0])}: use 0..{K - 1} "
                         f"({base_weight.shape[0]} background + base, {n_novel} novel) or "
                         f"{IGNORE_INDEX}")
    grid = (B, *query_feats.shape[-2:])
    if query_valid.shape != grid:
        raise ValueError(f"query_valid {tuple(query_valid.shape)}: need {grid}")
    empty = (query_valid.reshape(B, -1).sum(dim=1) == 0).nonzero()
    if len(empty):
        raise ValueError(f"query {int(empty[0])} has no valid pixel to average over")
    if labels_for is not None:
        if query_labels is None or query_labels.shape != grid:
            raise ValueError(f"{labels_for} reads the query labels: pass query_labels of "
                             f"shape {grid}")
        labelled = query_valid.bool() & (query_labels != IGNORE_INDEX)
        if bool((labelled.reshape(B, -1).sum(dim=1) == 0).any()):
            raise ValueError(f"{labels_for}: a query has no valid labelled pixel, so no class "
                             "proportions")
