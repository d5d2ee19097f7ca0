"""Base model: PSPNet on a dilated ResNet, and checkpoint loading."""

from fsstools.models.backbones import TRUNKS, DilatedResNet, feature_size, load_imagenet_weights
from fsstools.models.checkpoints import checkpoint_meta, load_model
from fsstools.models.pspnet import ModelConfig, PSPNet, build_model

__all__ = [
    "TRUNKS",
    "DilatedResNet",
    "ModelConfig",
    "PSPNet",
    "build_model",
    "checkpoint_meta",
    "feature_size",
    "load_imagenet_weights",
    "load_model",
]
