"""Base training (``mode: base``): PSPNet with cross-entropy on the base classes of a fold.

The :data:`RECIPE` :func:`fsstools.training.run.train` follows: every listed image holding
a base class, augmented (:class:`~fsstools.data.transforms.TrainTransform`), novel classes
relabelled background; validation by base-class segmentation mIoU.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.utils.data import DataLoader

from fsstools.data.datasets import BaseTrainDataset
from fsstools.data.transforms import TestTransform, TrainTransform
from fsstools.training.config import DataConfig, TrainConfig
from fsstools.training.epoch import Precision, validate
from fsstools.training.run import Recipe, TrainData, data_fingerprint
from fsstools.training.runtime import DistContext


def build_data(cfg: DataConfig, preload: bool = False) -> TrainData:
    """Base-class training and validation sets of ``cfg.fold`` (decoded in memory with
    ``preload``)."""
    common = dict(root=cfg.root, dataset=cfg.dataset, fold=cfg.fold, scheme=cfg.scheme,
                  min_fg=cfg.min_fg, preload=preload)
    train = BaseTrainDataset(list_file=cfg.train_list, **common,
                             transform=TrainTransform(cfg.crop_size, cfg.scale, cfg.rotation))
    val = BaseTrainDataset(list_file=cfg.val_list, **common, transform=TestTransform(cfg.val_size))
    return TrainData(train, val, tuple(train.base_classes), data_fingerprint(cfg))


def _validate(net: nn.Module, loader: DataLoader, data: TrainData, ctx: DistContext,
              precision: Precision, channels_last: bool) -> dict[str, Any]:
    return validate(net, loader, data.n_classes, ctx.device, ctx, precision, channels_last)


def _key_settings(cfg: TrainConfig, settings: dict[str, Any]) -> dict[str, Any]:
    del settings["mode"], settings["episodic"]  # not read by base training
    return settings


RECIPE = Recipe(
    code=__name__,
    label=lambda cfg: "base model",
    data=lambda cfg, ctx: build_data(cfg.data, cfg.run.preload),
    model=lambda cfg: None,
    objective=lambda cfg: None,
    validate=_validate,
    checkpoint_fields=lambda model, cfg: {},
    key_settings=_key_settings,
)
