"""Dilated ResNet trunks (output stride 8) and ImageNet weight loading from a local file.

Parameter names follow torchvision's ResNet (``conv1``, ``bn1``, ``layer1.0.conv2`` ...), and the
deep stem adds ``conv2/bn2/conv3/bn3`` as in the PSPNet reference ResNet, so both kinds of
ImageNet state dict load without renaming.

Dilation follows the PSPNet reference: every block of layer3 uses dilation 2 and every block of
layer4 dilation 4. torchvision's ``replace_stride_with_dilation`` instead keeps the previous
dilation (1, then 2) in the first block of each dilated stage; the reference checkpoints were
trained with the former, so we build that.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from fsstools.errors import ConfigError, DataError, MissingError

log = logging.getLogger(__name__)

BlockKind = Literal["basic", "bottleneck"]


@dataclass(frozen=True)
class TrunkSpec:
    """Shape of a ResNet trunk: block type, blocks per stage, stage widths, stem width."""

    block: BlockKind
    depths: tuple[int, int, int, int]
    widths: tuple[int, int, int, int]
    stem_width: int


TRUNKS: dict[str, TrunkSpec] = {
    "resnet18": TrunkSpec("basic", (2, 2, 2, 2), (64, 128, 256, 512), 64),
    "resnet34": TrunkSpec("basic", (3, 4, 6, 3), (64, 128, 256, 512), 64),
    "resnet50": TrunkSpec("bottleneck", (3, 4, 6, 3), (64, 128, 256, 512), 64),
    "resnet101": TrunkSpec("bottleneck", (3, 4, 23, 3), (64, 128, 256, 512), 64),
    # A narrow trunk that base-trains from scratch in minutes on two CPU cores.
    "small": TrunkSpec("basic", (1, 1, 1, 1), (32, 64, 96, 128), 32),
}

STAGE_STRIDES = (1, 2, 1, 1)
STAGE_DILATIONS = (1, 1, 2, 4)
OUTPUT_STRIDE = 8
"""stem conv (2) x max-pool (2) x layer2 (2); layer3/4 dilate instead of striding."""


def _conv3x3(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34), dilation allowed."""

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(c_in, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided/dilated) -> 1x1 residual block (ResNet-50/101, stride on the 3x3)."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class DilatedResNet(nn.Module):
    """ResNet trunk without pooling/fc, output stride 8.

    Args:
        spec: block type, depths, widths and stem width.
        deep_stem: three 3x3 convolutions (3 -> w -> w -> 2w) instead of one 7x7 (3 -> w).
        zero_init_residual: start each residual branch at zero (last BN weight 0), which helps
            training from scratch; ImageNet weights overwrite it.

    Example:
        >>> net = DilatedResNet(TRUNKS["small"])
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 128, 8, 8])
    """

    def __init__(self, spec: TrunkSpec, deep_stem: bool = False,
                 zero_init_residual: bool = False) -> None:
        super().__init__()
        block = BasicBlock if spec.block == "basic" else Bottleneck
        w = spec.stem_width
        self.deep_stem = deep_stem
        if deep_stem:
            self.conv1 = _conv3x3(3, w, stride=2)
            self.bn1 = nn.BatchNorm2d(w)
            self.conv2 = _conv3x3(w, w)
            self.bn2 = nn.BatchNorm2d(w)
            self.conv3 = _conv3x3(w, 2 * w)
            self.bn3 = nn.BatchNorm2d(2 * w)
            c_in = 2 * w
        else:
            self.conv1 = nn.Conv2d(3, w, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(w)
            c_in = w
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages = []
        for planes, depth, stride, dilation in zip(
            spec.widths, spec.depths, STAGE_STRIDES, STAGE_DILATIONS, strict=True
        ):
            stages.append(_make_stage(block, c_in, planes, depth, stride, dilation))
            c_in = planes * block.expansion
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels = c_in
        _init_weights(self, zero_init_residual)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        if self.deep_stem:
            x = self.relu(self.bn2(self.conv2(x)))
            x = self.relu(self.bn3(self.conv3(x)))
        return self.maxpool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images (B, 3, H, W) to trunk features (B, out_channels, ~H/8, ~W/8)."""
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _make_stage(block: type[BasicBlock] | type[Bottleneck], c_in: int, planes: int,
                depth: int, stride: int, dilation: int) -> nn.Sequential:
    c_out = planes * block.expansion
    downsample = None
    if stride != 1 or c_in != c_out:
        downsample = nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
        )
    blocks = [block(c_in, planes, stride, dilation, downsample)]
    blocks += [block(c_out, planes, 1, dilation) for _ in range(depth - 1)]
    return nn.Sequential(*blocks)


def _init_weights(net: nn.Module, zero_init_residual: bool) -> None:
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in net.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)


@dataclass(frozen=True)
class LoadReport:
    """What a non-strict state-dict load left out."""

    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[str, ...]


def load_imagenet_weights(trunk: DilatedResNet, path: str | Path) -> LoadReport:
    """Load an ImageNet classification state dict in torchvision's key layout into ``trunk``.

    The classifier (``fc.*``) is dropped; a ``module.`` prefix or a ``{"state_dict": ...}``
    wrapper is accepted. Keys of the wrong shape are skipped and reported, never loaded.
    Nothing is ever downloaded.

    Raises:
        MissingError: ``path`` does not exist (the message says how to fix it).
        DataError: the file cannot be read as a state dict.
        ConfigError: the file's stem and ``trunk.deep_stem`` (``model.deep_stem``) disagree.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingError(
            f"ImageNet weights file {path} does not exist. Put torchvision's ResNet weights "
            f"there (e.g. resnet50-0676ba61.pth from the torchvision model zoo, downloaded by "
            f"hand) or set model.pretrained=null to train from scratch."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
        raise DataError(f"ImageNet weights file {path} cannot be read as a PyTorch state dict "
                        f"({str(err).strip().splitlines()[0]}); copy it again") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise DataError(f"ImageNet weights file {path} holds a {type(state).__name__}, not a "
                        "state dict; pass a ResNet state dict (torchvision's resnet50-*.pth)")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    check_stem(state, trunk.deep_stem, path)
    own = trunk.state_dict()
    mismatched = tuple(k for k, v in state.items() if k in own and own[k].shape != v.shape)
    result = trunk.load_state_dict(
        {k: v for k, v in state.items() if k not in mismatched}, strict=False
    )
    report = LoadReport(tuple(result.missing_keys), tuple(result.unexpected_keys), mismatched)
    if report.missing or report.unexpected or report.mismatched:
        log.warning(
            "ImageNet weights %s: %d missing keys %s, %d unexpected keys %s, %d shape "
            "mismatches %s", path, len(report.missing), list(report.missing[:5]),
            len(report.unexpected), list(report.unexpected[:5]), len(report.mismatched),
            list(report.mismatched[:5]),
        )
    return report


def check_stem(state: dict[str, torch.Tensor], deep_stem: bool, path: str | Path) -> None:
    """Refuse ImageNet weights whose stem is not the configured one.

    A deep-stem file (PSPNet's ``resnet50_v2.pth``: stem ``conv1``/``conv2``/``conv3``, 3x3)
    in a 7x7-stem trunk, or the reverse, would load with its stem (and the first block's
    input convolutions) skipped by shape: random weights in a run that looks pretrained.

    Raises:
        ConfigError: the stems disagree (key ``model.deep_stem``).
    """
    if "conv1.weight" not in state:
        return  # not a ResNet state dict: the load report lists what is missing
    deep_file = "conv3.weight" in state  # the blocks' conv3 are layerN.M.conv3
    if deep_file == deep_stem:
        return
    has = ("a deep stem (three 3x3 convolutions, as PSPNet's resnet50_v2.pth)" if deep_file
           else "a 7x7 stem (one convolution, as torchvision's resnet50-*.pth)")
    raise ConfigError(
        f"ImageNet weights {path} have {has} but model.deep_stem is "
        f"{str(deep_stem).lower()}: set model.deep_stem: {str(deep_file).lower()} (or --set "
        f"model.deep_stem={str(deep_file).lower()}) to use this file, or give model.pretrained "
        "a file with the other stem",
        key="model.deep_stem",
    )


def feature_size(n: int) -> int:
    """Feature-grid length for an input side of ``n`` pixels (each stride-2 step rounds up).

    Example:
        >>> feature_size(417), feature_size(128)
        (53, 16)
    """
    for _ in range(3):  # stem conv, max-pool, layer2: kernel 3 (or 7), padding k // 2, stride 2
        n = (n + 1) // 2
    return n
