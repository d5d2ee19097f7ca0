"""PFENet-style few-shot segmenter (after Tian et al., TPAMI 2020) on a frozen trunk.

PFENet freezes an ImageNet-trained backbone. No ImageNet weights are available offline, so
the frozen trunk here is the fold's base-trained (cross-entropy, base classes only) dilated
ResNet: it has never seen a novel class, like PFENet's backbone, but it was trained on the
fold's base classes, which an ImageNet backbone was not.

- Mid-level features: layer2 and layer3 concatenated, a 1x1 convolution (+ ReLU, Dropout2d
  0.5), one for the query and one for the supports.
- Support prototype: masked average pooling of the reduced support features.
- Prior mask (training-free, under ``torch.no_grad``): for each query pixel, the largest
  cosine similarity between its layer4 feature and the foreground layer4 features of a
  support, min-max normalised over the query's pixels.
- Feature Enrichment Module: at each scale of ``bins`` (PFENet's 60/30/15/8 on a 60x60 map
  become 16/8/4/2 on our 16x16 grid) the pooled query feature, the expanded prototype and
  the resized prior are merged by a 1x1 convolution; each scale also takes the previous,
  finer scale's output (inter-scale interaction, from fine to coarse as in PFENet's code),
  refines it with two 3x3 convolutions (residual) and is supervised by its own classifier
  (auxiliary loss); the scales, brought back to the grid and concatenated, feed the final
  classifier.
- K shots: prototypes and prior masks averaged over the shots.

The trunk's features are computed once per image (:meth:`PFENet.extract_features`: layer2,
layer3 and layer4, each L2-normalised per pixel, concatenated and divided by sqrt(3), so the
whole vector has unit norm and the feature cache's normalisation leaves it unchanged). The
head (:meth:`PFENet.forward`) works on those cached features, so it trains without running
the trunk; the price is that no augmentation is possible while training the head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fsstools.constants import EPS
from fsstools.inference.prototype import masked_average
from fsstools.models.backbones import DilatedResNet
from fsstools.models.panet import FOREGROUND, upsampled_ce
from fsstools.models.pspnet import ModelConfig, PSPNet

N_LEVELS = 3
"""layer2, layer3 and layer4 make up the cached features."""
N_WAYS = 2
"""Background and foreground logits."""


@dataclass(frozen=True)
class PFENetConfig:
    """The head's settings.

    Attributes:
        reduce_dim: channels of the reduced features and of the module; PFENet's 256 for a
            512-d PSPNet feature, scaled like our small trunk's features (128-d): 64.
        bins: spatial sizes of the enrichment scales, fine to coarse.
        dropout: Dropout2d after the 1x1 reductions (PFENet: 0.5).
        cls_dropout: Dropout2d inside the classifiers (PFENet: 0.1).
        aux_weight: weight of the mean of the per-scale auxiliary losses (PFENet: 1).
    """

    reduce_dim: int = 64
    bins: tuple[int, ...] = (16, 8, 4, 2)
    dropout: float = 0.5
    cls_dropout: float = 0.1
    aux_weight: float = 1.0


def _stage_channels(stage: nn.Sequential) -> int:
    last = stage[-1]
    return (last.bn3 if hasattr(last, "bn3") else last.bn2).num_features


def _conv3x3(c: int) -> nn.Conv2d:
    return nn.Conv2d(c, c, 3, padding=1, bias=False)


def _classifier(c: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(_conv3x3(c), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
                         nn.Conv2d(c, N_WAYS, 1))


def _refine(c: int) -> nn.Sequential:
    return nn.Sequential(_conv3x3(c), nn.ReLU(inplace=True), _conv3x3(c), nn.ReLU(inplace=True))


def _reduce(c_in: int, c_out: int, dropout: float = 0.0) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, 1, bias=False), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.Dropout2d(dropout)) if dropout else nn.Sequential(*layers)


@torch.no_grad()
def prior_mask(query_high: torch.Tensor, support_high: torch.Tensor, support_fg: torch.Tensor
               ) -> torch.Tensor:
    """PFENet's training-free prior: max cosine to the support foreground, min-max normalised.

    Args:
        query_high: (B, C, h, w) high-level query features.
        support_high: (B, S, C, h, w) high-level support features.
        support_fg: (B, S, h, w) bool, foreground support pixels.

    Returns:
        (B, 1, h, w) in [0, 1], averaged over the S shots; a shot without foreground pixels
        gives a zero prior. No gradient flows through it.
    """
    b, s, _, h, w = support_high.shape
    q = F.normalize(query_high.flatten(2).float(), dim=1)  # (B, C, hw)
    sup = F.normalize(support_high.flatten(3).float(), dim=2)  # (B, S, C, hw)
    cos = torch.einsum("bcq,bscp->bsqp", q, sup)  # (B, S, hw_q, hw_s)
    cos = cos.masked_fill(~support_fg.flatten(2)[:, :, None, :], -math.inf)
    best = cos.amax(dim=3)  # (B, S, hw_q)
    best = torch.where(torch.isinf(best), torch.zeros_like(best), best)
    lo, hi = best.amin(dim=2, keepdim=True), best.amax(dim=2, keepdim=True)
    prior = (best - lo) / (hi - lo + EPS)  # (B, S, hw_q)
    return prior.mean(dim=1).unflatten(1, (h, w))[:, None]  # (B, 1, h, w)


class PFENet(nn.Module):
    """A frozen trunk and PFENet's trainable head.

    Example:
        >>> net = PFENet(ModelConfig(arch="small", widths=(8, 8, 8, 8), stem_width=8),
        ...              PFENetConfig(reduce_dim=8, bins=(4, 2))).eval()
        >>> feats = net.extract_features(torch.randn(6, 3, 32, 32))  # (6, 24, 4, 4)
        >>> sm = torch.zeros(2, 2, 4, 4, dtype=torch.long); sm[..., :2, :2] = 1
        >>> net(feats[:4].unflatten(0, (2, 2)), sm, feats[4:])["logits"].shape
        torch.Size([2, 2, 4, 4])
    """

    def __init__(self, model_cfg: ModelConfig, cfg: PFENetConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or PFENetConfig()
        self.model_cfg = model_cfg
        # PSPNet's own code builds the trunk, so a base checkpoint's trunk weights fit it.
        self.backbone: DilatedResNet = PSPNet(model_cfg, n_classes=1).backbone
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.level_dims = tuple(_stage_channels(getattr(self.backbone, f"layer{i}"))
                                for i in (2, 3, 4))
        self.feature_dim = sum(self.level_dims)
        mid, rd = self.level_dims[0] + self.level_dims[1], cfg.reduce_dim
        self.down_query = _reduce(mid, rd, cfg.dropout)
        self.down_supp = _reduce(mid, rd, cfg.dropout)
        n = len(cfg.bins)
        self.init_merge = nn.ModuleList(_reduce(2 * rd + 1, rd) for _ in range(n))
        self.alpha_conv = nn.ModuleList(_reduce(2 * rd, rd) for _ in range(n - 1))
        self.beta_conv = nn.ModuleList(_refine(rd) for _ in range(n))
        self.inner_cls = nn.ModuleList(_classifier(rd, cfg.cls_dropout) for _ in range(n))
        self.res1 = _reduce(n * rd, rd)
        self.res2 = _refine(rd)
        self.cls = _classifier(rd, cfg.cls_dropout)

    def train(self, mode: bool = True) -> PFENet:
        """Train the head; the frozen trunk stays in eval mode (its BN statistics fixed)."""
        super().train(mode)
        self.backbone.eval()
        return self

    @torch.no_grad()
    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        """Frozen trunk features (B, C2 + C3 + C4, h, w) of images (B, 3, H, W): layer2,
        layer3, layer4, each unit-normalised per pixel, concatenated, divided by sqrt(3)."""
        t = self.backbone
        x2 = t.layer2(t.layer1(t.stem(images)))
        x3 = t.layer3(x2)
        x4 = t.layer4(x3)
        levels = [F.normalize(x.float(), dim=1) for x in (x2, x3, x4)]
        return torch.cat(levels, dim=1) / math.sqrt(N_LEVELS)

    def split(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mid-level (layer2 + layer3) and high-level (layer4) parts of cached features
        (N, C, h, w), each level rescaled to unit norm."""
        feats = feats.float() * math.sqrt(N_LEVELS)
        mid = self.level_dims[0] + self.level_dims[1]
        return feats[:, :mid], feats[:, mid:]

    def forward(self, support_feats: torch.Tensor, support_masks: torch.Tensor,
                query_feats: torch.Tensor, query_mask: torch.Tensor | None = None,
                label_smoothing: float = 0.0) -> dict[str, torch.Tensor]:
        """Segment the query from cached trunk features; with ``query_mask``, the loss too.

        Args:
            support_feats: (B, S, C, h, w) from :meth:`extract_features` (or the cache).
            support_masks: (B, S, h, w) {0, 1, 255} at the feature grid.
            query_feats: (B, C, h, w).
            query_mask: (B, H, W) {0, 1, 255} at image size, or None at inference.
            label_smoothing: of the cross-entropies.

        Returns:
            ``logits`` (B, 2, h, w) (background, foreground) and ``prior`` (B, 1, h, w);
            with ``query_mask`` also ``loss`` = ``main_loss`` + aux_weight * ``aux_loss``
            (the mean of the per-scale losses).
        """
        b, s = support_feats.shape[:2]
        s_mid, s_high = self.split(support_feats.flatten(0, 1))  # (B*S, ., h, w)
        q_mid, q_high = self.split(query_feats)
        fg = support_masks.flatten(0, 1) == FOREGROUND  # (B*S, h, w)
        # Back to tasks x shots: (B, S, C4, h, w) features and (B, S, h, w) masks.
        prior = prior_mask(q_high, s_high.unflatten(0, (b, s)), fg.unflatten(0, (b, s)))
        protos = masked_average(self.down_supp(s_mid), fg.float())  # (B*S, rd)
        proto = protos.unflatten(0, (b, s)).mean(dim=1)  # (B, rd)
        logits, aux = self.enrich(self.down_query(q_mid), proto, prior)
        out = {"logits": logits, "prior": prior}
        if query_mask is None:
            return out
        main = upsampled_ce(logits, query_mask, label_smoothing)
        aux_loss = torch.stack([upsampled_ce(a, query_mask, label_smoothing) for a in aux]).mean()
        return {**out, "loss": main + self.cfg.aux_weight * aux_loss,
                "main_loss": main.detach(), "aux_loss": aux_loss.detach()}

    def enrich(self, query: torch.Tensor, proto: torch.Tensor, prior: torch.Tensor
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Feature Enrichment Module and final classifier.

        Args:
            query: (B, rd, h, w) reduced query features.
            proto: (B, rd) support prototype.
            prior: (B, 1, h, w) prior mask.

        Returns:
            final logits (B, 2, h, w) and per-scale logits [(B, 2, bin, bin)].
        """
        grid = tuple(query.shape[-2:])
        scales, aux, previous = [], [], None
        for i, size in enumerate(self.cfg.bins):
            q = F.adaptive_avg_pool2d(query, size)  # (B, rd, bin, bin)
            p = proto[:, :, None, None].expand(-1, -1, size, size)  # (B, rd, bin, bin)
            m = F.interpolate(prior, size=(size, size), mode="bilinear", align_corners=True)
            merged = self.init_merge[i](torch.cat([q, p, m], dim=1))
            if previous is not None:  # inter-scale interaction: the finer scale's output
                finer = F.interpolate(previous, size=(size, size), mode="bilinear",
                                      align_corners=True)
                merged = self.alpha_conv[i - 1](torch.cat([merged, finer], dim=1)) + merged
            merged = self.beta_conv[i](merged) + merged
            aux.append(self.inner_cls[i](merged))
            scales.append(F.interpolate(merged, size=grid, mode="bilinear", align_corners=True))
            previous = merged
        out = self.res1(torch.cat(scales, dim=1))  # (B, rd, h, w)
        out = self.res2(out) + out
        return self.cls(out), aux
