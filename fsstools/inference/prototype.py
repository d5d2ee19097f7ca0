"""The prototype: the mean feature over the pixels of a mask, the one masked average every
classifier here and the peers' models take.

A module of its own so that the models that pool prototypes (PANet, PFENet) depend on this
function alone, not on the transductive classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


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
