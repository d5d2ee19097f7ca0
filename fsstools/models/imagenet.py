"""A dilated ResNet trunk with ImageNet weights, as a feature extractor without base training.

A torchvision ResNet state dict (``conv1.weight``, ``layer1.0.conv1.weight``, ..., ``fc.*``)
read from a local file gives the trunk's shape (block kind, blocks per stage, widths, stem),
so any ResNet-18/34/50/101 file works without naming its architecture. The features are
the trunk's last stage at output stride 8 (2048 channels for ResNet-50), which RePRI can
use directly: nothing was trained on base classes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from fsstools.errors import DataError
from fsstools.models.backbones import DilatedResNet, TrunkSpec


def imagenet_state(ckpt: object) -> dict[str, torch.Tensor] | None:
    """The trunk weights of a torchvision-layout ImageNet ResNet state dict (``module.``
    prefix, ``{"state_dict": ...}`` wrapper and ``fc.*`` dropped), or None for anything else."""
    if not isinstance(ckpt, Mapping):
        return None
    state = ckpt.get("state_dict", ckpt)
    if not isinstance(state, Mapping):
        return None
    state = {str(k).removeprefix("module."): v for k, v in state.items()}
    if "conv1.weight" not in state or "layer4.0.conv1.weight" not in state:
        return None
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def trunk_spec(state: Mapping[str, torch.Tensor]) -> tuple[TrunkSpec, bool]:
    """The trunk shape and whether it has the deep (three-convolution) stem."""
    block = "bottleneck" if "layer1.0.conv3.weight" in state else "basic"
    depths = tuple(len({int(m[1]) for k in state if (m := re.match(rf"layer{i}\.(\d+)\.", k))})
                   for i in range(1, 5))
    widths = tuple(int(state[f"layer{i}.0.conv1.weight"].shape[0]) for i in range(1, 5))
    deep = "conv3.weight" in state
    stem = int(state["conv1.weight"].shape[0])
    return TrunkSpec(block, depths, widths, stem), deep


class TrunkFeatures(nn.Module):
    """A trunk whose ``extract_features(images) -> (B, C, h, w)`` is its last stage."""

    def __init__(self, trunk: DilatedResNet) -> None:
        super().__init__()
        self.trunk = trunk
        self.feature_dim = trunk.out_channels

    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk(images)


def imagenet_extractor(state: Mapping[str, torch.Tensor], path: str | Path) -> TrunkFeatures:
    """The trunk of ``state`` (see :func:`imagenet_state`) with its weights, in eval mode.

    Raises:
        DataError: the weights do not fit the trunk their shapes describe.
    """
    spec, deep = trunk_spec(state)
    trunk = DilatedResNet(spec, deep_stem=deep)
    try:
        result = trunk.load_state_dict(dict(state), strict=False)
    except RuntimeError as err:
        raise DataError(f"ImageNet weights {path} do not fit a ResNet trunk "
                        f"({str(err).strip().splitlines()[0]}); pass a torchvision ResNet "
                        "state dict") from err
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise DataError(f"ImageNet weights {path} lack {missing[:5]} or hold unknown keys "
                        f"{result.unexpected_keys[:5]}; pass a torchvision ResNet state dict")
    return TrunkFeatures(trunk).eval()
