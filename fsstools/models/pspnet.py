"""PSPNet: dilated ResNet trunk, pyramid pooling, 3x3 bottleneck and a 1x1 classifier."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from fsstools.models.backbones import TRUNKS, DilatedResNet, load_imagenet_weights

Arch = Literal["resnet18", "resnet34", "resnet50", "resnet101", "small"]


@dataclass(frozen=True)
class ModelConfig:
    """PSPNet architecture; defaults are the reference recipe (ResNet-50, 512-d bottleneck).

    Attributes:
        arch: trunk name, a key of ``backbones.TRUNKS``.
        deep_stem: three 3x3 stem convolutions (the PSPNet reference ResNet) instead of a 7x7.
        pretrained: path of a local ImageNet state dict in torchvision's layout, or None to
            train from scratch. Never downloaded.
        bottleneck_dim: channels of the bottleneck output, i.e. of the few-shot features.
        bins: output sizes of the pyramid-pooling branches.
        dropout: Dropout2d rate between bottleneck and classifier.
        widths, depths, stem_width: override the trunk's stage widths, blocks per stage and
            stem width (None keeps the ``arch`` values).
        zero_init_residual: zero the last BN of every residual branch (helps from scratch).
    """

    arch: Arch = "resnet50"
    deep_stem: bool = False
    pretrained: str | None = None
    bottleneck_dim: int = 512
    bins: tuple[int, ...] = (1, 2, 3, 6)
    dropout: float = 0.1
    widths: tuple[int, int, int, int] | None = None
    depths: tuple[int, int, int, int] | None = None
    stem_width: int | None = None
    zero_init_residual: bool = False


class PyramidPooling(nn.Module):
    """Pool to each bin size, project to ``c_in // len(bins)`` channels, upsample, concatenate.

    Output: (B, c_in + len(bins) * (c_in // len(bins)), h, w).
    """

    def __init__(self, c_in: int, bins: tuple[int, ...]) -> None:
        super().__init__()
        c_branch = c_in // len(bins)
        self.branches = nn.ModuleList(
            nn.Sequential(OrderedDict(
                pool=nn.AdaptiveAvgPool2d(b),
                conv=nn.Conv2d(c_in, c_branch, 1, bias=False),
                bn=nn.BatchNorm2d(c_branch),
                relu=nn.ReLU(inplace=True),
            ))
            for b in bins
        )
        self.out_channels = c_in + len(bins) * c_branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [
            F.interpolate(branch(x), size=size, mode="bilinear", align_corners=True)
            for branch in self.branches
        ]
        return torch.cat([x, *pooled], dim=1)


class PSPNet(nn.Module):
    """Semantic segmentation over ``n_classes`` (base classes + background).

    Example:
        >>> net = PSPNet(ModelConfig(arch="small", bottleneck_dim=64), n_classes=16).eval()
        >>> x = torch.zeros(2, 3, 64, 64)
        >>> net(x).shape, net.extract_features(x).shape
        (torch.Size([2, 16, 64, 64]), torch.Size([2, 64, 8, 8]))
    """

    def __init__(self, cfg: ModelConfig, n_classes: int) -> None:
        super().__init__()
        spec = TRUNKS[cfg.arch]
        spec = replace(
            spec,
            widths=cfg.widths or spec.widths,
            depths=cfg.depths or spec.depths,
            stem_width=cfg.stem_width or spec.stem_width,
        )
        self.backbone = DilatedResNet(spec, cfg.deep_stem, cfg.zero_init_residual)
        self.ppm = PyramidPooling(self.backbone.out_channels, cfg.bins)
        self.bottleneck = nn.Sequential(
            nn.Conv2d(self.ppm.out_channels, cfg.bottleneck_dim, 3, padding=1, bias=False),
            nn.BatchNorm2d(cfg.bottleneck_dim),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout2d(cfg.dropout)
        self.classifier = nn.Conv2d(cfg.bottleneck_dim, n_classes, 1)
        self.n_classes = n_classes
        self.feature_dim = cfg.bottleneck_dim

    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        """Bottleneck features (B, C, h, w), h = ceil(H / 8); not normalised, before dropout."""
        return self.bottleneck(self.ppm(self.backbone(images)))

    def classify(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Logits (B, K, *size) from bottleneck features (B, C, h, w)."""
        logits = self.classifier(self.dropout(features))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, K, H, W) for images (B, 3, H, W), upsampled to the input size."""
        return self.classify(self.extract_features(images), tuple(images.shape[-2:]))


def build_model(cfg: ModelConfig, n_classes: int) -> PSPNet:
    """A PSPNet for ``n_classes``; the trunk gets ImageNet weights if ``cfg.pretrained`` is set."""
    model = PSPNet(cfg, n_classes)
    if cfg.pretrained is not None:
        load_imagenet_weights(model.backbone, cfg.pretrained)
    return model
