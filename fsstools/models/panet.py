"""PANet-style few-shot segmenter (after Wang et al., ICCV 2019), on our PSPNet encoder.

The encoder is the base model's (dilated ResNet trunk + pyramid pooling + bottleneck, i.e.
:meth:`PSPNet.extract_features`), built by the same code and so, under the same seed, from
the same initial weights. A task is solved without any learned classifier, by the rule that
:mod:`fsstools.inference.prototype` writes once for this model and its inference on cached
features (:func:`~fsstools.inference.peers.panet_logits`):

- masked average pooling of the support features gives a foreground and a background
  prototype per shot; K shots average the per-shot prototypes;
- each query pixel is scored by ``scale * cos`` with both prototypes (``scale`` = 20) and
  the two scores go through a softmax (cross-entropy on the query when training);
- prototype alignment regularisation (PAR): the query's own prediction (argmax, no
  gradient through the mask) gives query prototypes, which must segment the supports back
  (cross-entropy, weight ``align_weight`` = 1).

Two choices of ours, said here once: features are L2-normalised per pixel before pooling
(the feature cache stores normalised features, so inference on cached features computes
exactly this function; cosine scoring itself ignores the scale), and support masks are
brought to the feature grid by nearest neighbour, as the feature cache does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fsstools.constants import IGNORE_INDEX
from fsstools.inference.prototype import (
    BACKGROUND,
    FOREGROUND,
    PANET_SCALE,
    two_way_cosines,
    two_way_prototypes,
)
from fsstools.models.backbones import load_imagenet_weights
from fsstools.models.pspnet import ModelConfig, PSPNet


@dataclass(frozen=True)
class PANetConfig:
    """PANet's few settings; defaults are the paper's.

    Attributes:
        scale: multiplier of the cosine similarities before the softmax (alpha = 20).
        align_weight: weight of the prototype alignment loss (PAR); 0 turns PAR off.
    """

    scale: float = PANET_SCALE
    align_weight: float = 1.0


def to_grid(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Masks (..., H, W) int64 resized to ``size`` by nearest neighbour (values kept)."""
    lead = masks.shape[:-2]
    small = F.interpolate(masks.flatten(0, -3)[:, None].float(), size=size, mode="nearest")
    return small[:, 0].long().unflatten(0, lead)  # (..., h, w)


def upsampled_ce(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0
                 ) -> torch.Tensor:
    """Cross-entropy of (N, 2, h, w) logits upsampled bilinearly (align_corners=True) to the
    (N, H, W) target's size, averaged over the pixels not labelled 255."""
    up = F.interpolate(logits.float(), size=tuple(target.shape[-2:]), mode="bilinear",
                       align_corners=True)
    total = F.cross_entropy(up, target, ignore_index=IGNORE_INDEX,
                            label_smoothing=label_smoothing, reduction="sum")
    # The mean over labelled pixels, as reduction="mean" gives, but 0 (not NaN) without any.
    return total / (target != IGNORE_INDEX).sum().clamp(min=1)


class PANet(nn.Module):
    """Prototype alignment network on the base model's encoder.

    Example:
        >>> net = PANet(ModelConfig(arch="small", bottleneck_dim=16, widths=(8, 8, 8, 8),
        ...                         stem_width=8, bins=(1, 2))).eval()
        >>> s, q = torch.randn(2, 5, 3, 32, 32), torch.randn(2, 3, 32, 32)
        >>> sm = torch.zeros(2, 5, 32, 32, dtype=torch.long); sm[..., :16, :16] = 1
        >>> net(s, sm, q)["logits"].shape
        torch.Size([2, 2, 4, 4])
    """

    def __init__(self, model_cfg: ModelConfig, cfg: PANetConfig | None = None) -> None:
        super().__init__()
        # Built by PSPNet's own code, so the encoder (and its initial draws) is the base model's.
        encoder = PSPNet(model_cfg, n_classes=1)
        self.backbone, self.ppm, self.bottleneck = encoder.backbone, encoder.ppm, encoder.bottleneck
        self.cfg = cfg or PANetConfig()
        self.model_cfg = model_cfg
        self.feature_dim = model_cfg.bottleneck_dim

    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        """Bottleneck features (B, C, h, w) of images (B, 3, H, W), not normalised."""
        return self.bottleneck(self.ppm(self.backbone(images)))

    def forward(self, support_imgs: torch.Tensor, support_masks: torch.Tensor,
                query_img: torch.Tensor, query_mask: torch.Tensor | None = None,
                label_smoothing: float = 0.0) -> dict[str, torch.Tensor]:
        """Segment the query from the supports; with ``query_mask``, also the training loss.

        Args:
            support_imgs: (B, S, 3, H, W).
            support_masks: (B, S, H, W) {0, 1, 255}.
            query_img: (B, 3, H, W).
            query_mask: (B, H, W) {0, 1, 255}, or None at inference.
            label_smoothing: of both cross-entropies.

        Returns:
            ``logits`` (B, 2, h, w) at the feature grid (background, foreground); with
            ``query_mask`` also ``loss`` = ``seg_loss`` + align_weight * ``align_loss``.
        """
        b, s = support_imgs.shape[:2]
        images = torch.cat([support_imgs.flatten(0, 1), query_img])  # (B*S + B, 3, H, W)
        # One encoder pass for supports and query: BN sees one batch, as in base training.
        feats = F.normalize(self.extract_features(images).float(), dim=1)
        grid = tuple(feats.shape[-2:])
        s_feats = feats[: b * s].unflatten(0, (b, s))  # (B, S, C, h, w)
        q_feats = feats[b * s:]  # (B, C, h, w)
        bg, fg = two_way_prototypes(s_feats, to_grid(support_masks, grid))
        logits = self.cfg.scale * two_way_cosines(q_feats, bg, fg)  # (B, 2, h, w)
        if query_mask is None:
            return {"logits": logits}
        seg = upsampled_ce(logits, query_mask, label_smoothing)
        align = self.alignment_loss(logits, q_feats, to_grid(query_mask, grid), s_feats,
                                    support_masks, label_smoothing)
        return {"logits": logits, "loss": seg + self.cfg.align_weight * align,
                "seg_loss": seg.detach(), "align_loss": align.detach()}

    def alignment_loss(self, logits: torch.Tensor, q_feats: torch.Tensor,
                       q_mask_small: torch.Tensor, s_feats: torch.Tensor,
                       support_masks: torch.Tensor, label_smoothing: float = 0.0
                       ) -> torch.Tensor:
        """PAR: prototypes from the query's own prediction segment the supports back.

        The predicted mask is an argmax (no gradient through it); the gradient reaches the
        encoder through the query features pooled into prototypes and through the support
        features scored. Query pixels labelled 255 (padding, novel classes) are left out of
        the prototypes. A task whose prediction has no foreground or no background pixel has
        no query prototype and adds nothing (0 if every task is such).

        Args:
            logits: (B, 2, h, w) query logits.
            q_feats: (B, C, h, w) normalised query features.
            q_mask_small: (B, h, w) query labels at the grid (only 255 is read).
            s_feats: (B, S, C, h, w) normalised support features.
            support_masks: (B, S, H, W) support labels at image size.
        """
        pred = logits.detach().argmax(dim=1)  # (B, h, w)
        pred[q_mask_small == IGNORE_INDEX] = IGNORE_INDEX
        has_both = ((pred == FOREGROUND).any(dim=(1, 2)) & (pred == BACKGROUND).any(dim=(1, 2)))
        if not has_both.any():
            return logits.sum() * 0.0  # keeps the graph (DDP) with a zero loss
        bg, fg = two_way_prototypes(q_feats[has_both, None], pred[has_both, None])  # (b', C)
        s = s_feats.shape[1]
        target = support_masks[has_both].flatten(0, 1)  # (b'*S, H, W)
        back = self.cfg.scale * two_way_cosines(
            s_feats[has_both].flatten(0, 1), bg.repeat_interleave(s, dim=0),
            fg.repeat_interleave(s, dim=0))  # (b'*S, 2, h, w)
        return upsampled_ce(back, target, label_smoothing)


def build_panet(model_cfg: ModelConfig, cfg: PANetConfig | None = None) -> PANet:
    """A PANet whose trunk gets ImageNet weights if ``model_cfg.pretrained`` is set."""
    model = PANet(model_cfg, cfg)
    if model_cfg.pretrained is not None:
        load_imagenet_weights(model.backbone, model_cfg.pretrained)
    return model
