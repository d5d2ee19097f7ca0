"""The prototype: the mean feature over the pixels of a mask, the one masked average every
classifier here and the peers' models take; and PANet's rule on two of them, one written
for the model (:class:`fsstools.models.panet.PANet`) and its inference on cached features
(:func:`fsstools.inference.peers.panet_logits`).

A module of its own so that the models that pool prototypes (PANet, PFENet) depend on it
alone, not on the transductive classifier nor the peers' inference (a model's cached runs
and features are keyed by the code it imports).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def masked_average(
    feats: torch.Tensor | Sequence[torch.Tensor],
    mask: torch.Tensor | Sequence[torch.Tensor],
    inv_norms: torch.Tensor | Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Mean feature over the pixels of a mask (masked average pooling): the prototype.

    Args:
        feats: (B, C, *grid) features, e.g. (B, C, N) or (B, C, h, w); or a list of blocks
            (B, C, n_i) whose pixels are pooled together.
        mask: (B, *grid) bool or {0, 1} (or the matching list).
        inv_norms: (B, N) from :func:`inverse_norms` (or the matching list) to pool the
            L2-normalised features, or None to pool ``feats`` as they are.

    Returns:
        (B, C) averages; zero where the mask holds no pixel.

    Example:
        >>> f = torch.tensor([[[1.0, 3.0, 5.0]]])  # (B=1, C=1, N=3)
        >>> masked_average(f, torch.tensor([[True, True, False]]))
        tensor([[2.]])
    """
    if isinstance(feats, torch.Tensor):
        feats, mask = [feats], [mask]
        inv_norms = None if inv_norms is None else [inv_norms]
    inv_norms = inv_norms or [None] * len(feats)
    total = count = None
    for f, m, r in zip(feats, mask, inv_norms, strict=True):
        weights = m.flatten(1).to(f.dtype)  # (B, N)
        n = weights.sum(dim=1)  # (B,)
        if r is not None:
            weights = weights * r
        part = torch.bmm(f.flatten(2), weights.unsqueeze(2)).squeeze(2)  # (B, C)
        total, count = (part, n) if total is None else (total + part, count + n)
    # count >= 1 wherever the mask holds a pixel; 0/1 = 0 elsewhere
    return total / count.clamp_min(1).unsqueeze(1)


PANET_SCALE = 20.0
"""PANet's multiplier of cosine similarities (alpha)."""
BACKGROUND, FOREGROUND = 0, 1
"""Task labels, also the channel order of PANet's two-way scores."""


def two_way_prototypes(feats: torch.Tensor, masks: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """PANet's background and foreground prototypes of B tasks, averaged over their S shots.

    Each shot's prototype is the masked average of its features; K shots average the
    per-shot prototypes (a shot with a small object weighs as much as one with a large one).

    Args:
        feats: (B, S, C, h, w) L2-normalised features.
        masks: (B, S, h, w) {0, 1, 255} at the same grid; 255 pixels count for neither.

    Returns:
        background (B, C) and foreground (B, C) prototypes.
    """
    flat = feats.flatten(0, 1)  # (B*S, C, h, w)
    m = masks.flatten(0, 1)  # (B*S, h, w)
    protos = [masked_average(flat, m == label) for label in (BACKGROUND, FOREGROUND)]
    bg, fg = (p.unflatten(0, feats.shape[:2]).mean(dim=1) for p in protos)  # (B, C) each
    return bg, fg


def two_way_cosines(feats: torch.Tensor, bg: torch.Tensor, fg: torch.Tensor) -> torch.Tensor:
    """Cosine of each pixel with its task's background and foreground prototypes: PANet's
    scores before its ``scale``.

    Args:
        feats: (N, C, h, w), normalised or not (they are normalised here).
        bg, fg: (N, C) prototypes.

    Returns:
        (N, 2, h, w), channel 0 background, 1 foreground.
    """
    protos = F.normalize(torch.stack([bg, fg], dim=1), dim=2)  # (N, 2, C)
    return torch.einsum("nchw,nkc->nkhw", F.normalize(feats, dim=1), protos)
