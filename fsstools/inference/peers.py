"""The meta-learned peers' own inference on cached features: pure tensors in and out.

Both return foreground logits (B, h, w) at the feature grid, the difference of the peer's
foreground and background scores, so that the softmax over its two classes is
``sigmoid(logits)`` and :func:`fsstools.inference.fg_probs` turns them into probabilities at
image size, as for every other method (bilinear upsampling commutes with the difference).

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> sf, qf = torch.randn(2, 5, 8, 6, 6, generator=g), torch.randn(2, 8, 6, 6, generator=g)
    >>> sm = torch.zeros(2, 5, 6, 6, dtype=torch.long); sm[..., :3, :3] = 1
    >>> panet_logits(sf, sm, qf).shape
    torch.Size([2, 6, 6])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fsstools.inference.prototype import (
    BACKGROUND,
    FOREGROUND,
    PANET_SCALE,
    two_way_cosines,
    two_way_prototypes,
)


@torch.no_grad()
def panet_logits(support_feats: torch.Tensor, support_masks: torch.Tensor,
                 query_feats: torch.Tensor, scale: float = PANET_SCALE) -> torch.Tensor:
    """PANet's prediction: ``scale * (cos(f, p_fg) - cos(f, p_bg))`` per query pixel.

    The prototypes (:func:`two_way_prototypes`) are masked averages of the L2-normalised
    support features over the foreground (1) and background (0) pixels of each shot (255
    pixels count for neither), averaged over the shots; the query is never read to form
    them (inductive). :class:`fsstools.models.panet.PANet` predicts with the same two
    functions (:mod:`~fsstools.inference.prototype`).

    Args:
        support_feats: (B, S, C, h, w), normalised or not (they are normalised here).
        support_masks: (B, S, h, w) {0, 1, 255} at the feature grid.
        query_feats: (B, C, h, w).
        scale: PANet's alpha (20).

    Returns:
        (B, h, w) foreground logits; ``sigmoid`` of them is PANet's two-way softmax.
    """
    bg, fg = two_way_prototypes(F.normalize(support_feats.float(), dim=2), support_masks)
    cos = two_way_cosines(query_feats.float(), bg, fg)  # (B, 2, h, w)
    return scale * (cos[:, FOREGROUND] - cos[:, BACKGROUND])


@torch.no_grad()
def pfenet_logits(model: nn.Module, support_feats: torch.Tensor, support_masks: torch.Tensor,
                  query_feats: torch.Tensor, chunk_size: int = 64) -> torch.Tensor:
    """PFENet's prediction from cached frozen-trunk features, chunk by chunk over tasks.

    Args:
        model: a trained PFENet-style peer (``fsstools.models.checkpoints.load_model`` of its
            checkpoint): called as ``model(support_feats, support_masks, query_feats)`` it
            returns ``{"logits": (b, 2, h, w), ...}``. Put in eval mode here.
        support_feats: (B, S, C, h, w) the cached features of its checkpoint (the trunk's
            layer2, layer3 and layer4, as its ``extract_features`` gives them).
        support_masks: (B, S, h, w) {0, 1, 255} at the feature grid.
        query_feats: (B, C, h, w).
        chunk_size: tasks per forward pass (memory bound).

    Returns:
        (B, h, w) foreground logits on the device of ``support_feats``.
    """
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, support_feats.shape[0], chunk_size):
        part = slice(start, start + chunk_size)
        logits = model(support_feats[part].to(device, torch.float32),
                       support_masks[part].to(device),
                       query_feats[part].to(device, torch.float32))["logits"]  # (b, 2, h, w)
        out.append((logits[:, FOREGROUND] - logits[:, BACKGROUND]).float())
    return torch.cat(out).to(support_feats.device)
