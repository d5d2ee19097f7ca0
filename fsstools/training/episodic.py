"""The episodic training mode (``mode: episodic``): the parts that differ from base training.

:mod:`fsstools.training.run` runs both modes with the same code (config layering, the
content-keyed run folder, atomic checkpoints, exact resume, torchrun DDP, checkpoint
selection); this module's :data:`RECIPE` gives it, for the episodic mode, the data, the
model, the objective, the validation and the checkpoint fields:

- data: random tasks of base classes (:mod:`fsstools.data.base_tasks`: foreground the task's
  class, other base classes background, novel classes ignored, 255) with the base
  training's augmentation for PANet; for PFENet the same tasks over cached frozen-trunk
  features (:mod:`fsstools.features`, :mod:`fsstools.training.feature_tasks`; no augmentation). Validation: a fixed, seeded
  set of base-class tasks of the validation list; novel classes never appear;
- model: :class:`~fsstools.models.panet.PANet` from the base model's config (same
  initialisation under the same seed), or :class:`~fsstools.models.pfenet.PFENet` on the
  frozen trunk of the fold's base checkpoint (``episodic.trunk``);
- objective: the model's own loss (PANet: query CE + PAR; PFENet: final + auxiliary CE);
- validation: the few-shot class-IoU protocol (:class:`fsstools.metrics.IoUMeter`), mIoU
  over the base classes, summed over processes; the best epoch's weights go to best.pt.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fsstools import config as config_lib
from fsstools import paths
from fsstools.cache import file_hash
from fsstools.data import splits, voc
from fsstools.data.base_tasks import EpisodicTrainDataset, FixedEpisodeDataset
from fsstools.data.episodes import EpisodeList, EpisodeSettings, sample_episodes
from fsstools.data.transforms import TestTransform, TrainTransform
from fsstools.errors import ConfigError
from fsstools.features import FeatureSettings, ensure_features, episode_images
from fsstools.metrics import IoUMeter
from fsstools.models.checkpoints import PANET_FORMAT, PFENET_FORMAT, load_trunk
from fsstools.models.panet import build_panet
from fsstools.models.pfenet import PFENet
from fsstools.training.config import TrainConfig
from fsstools.training.epoch import Objective, Precision
from fsstools.training.feature_tasks import FeatureEpisodes, FixedFeatureEpisodes
from fsstools.training.run import Recipe, TrainData, data_fingerprint
from fsstools.training.runtime import DistContext, gather_objects

TRUNK_HASH_LENGTH = 16
FROZEN_BATCH = 64
"""Images per trunk pass when caching the head's training features."""


def trunk_path(cfg: TrainConfig) -> Path:
    """The base checkpoint whose trunk a PFENet run freezes.

    Raises:
        ConfigError: ``episodic.trunk`` is not set.
    """
    if cfg.episodic.trunk is None:
        raise ConfigError(
            "episodic.trunk is not set; the PFENet-style peer freezes the trunk of the fold's "
            "base model: pass its checkpoint, e.g. --set episodic.trunk=outputs/runs/"
            "synth-fold0-<key>/best.pt (from `fsstools train --config configs/synth/fold0.yaml`)"
        )
    return paths.resolve(cfg.episodic.trunk)


def trunk_hash(cfg: TrainConfig) -> str:
    """Content hash of the trunk checkpoint (part of the run's key and of the feature cache)."""
    return file_hash(trunk_path(cfg), TRUNK_HASH_LENGTH)


def validation_episodes(cfg: TrainConfig) -> EpisodeList:
    """The fixed base-class tasks validation scores: ``episodic.val_episodes`` tasks of
    ``data.val_list`` drawn from ``episodic.val_seed`` (classes too rare for
    ``shots + 1`` images are skipped with a warning)."""
    d, e = cfg.data, cfg.episodic
    return sample_episodes(d.root, d.val_list, EpisodeSettings(
        d.dataset, d.fold, e.shots, e.val_episodes, e.val_seed, scheme=d.scheme, min_fg=d.min_fg,
        skip_small=True, classes=splits.base_classes(d.dataset, d.fold, d.scheme, d.root)))


def build_frozen_trunk(cfg: TrainConfig) -> PFENet:
    """A PFENet holding the fold's frozen base trunk (its head untrained).

    Raises:
        ConfigError: the trunk was base-trained on another fold (its base classes differ),
            so it would have seen this fold's novel classes.
    """
    model_cfg, trunk, classes = load_trunk(trunk_path(cfg))
    d = cfg.data
    expected = splits.base_classes(d.dataset, d.fold, d.scheme, d.root)
    if classes != expected:
        raise ConfigError(
            f"episodic.trunk={cfg.episodic.trunk} was base-trained on classes {classes}, not "
            f"on the base classes {expected} of {d.dataset} fold {d.fold}: it has seen novel "
            "classes of this fold; give the base checkpoint of the same fold"
        )
    model = PFENet(model_cfg, cfg.episodic.pfenet)
    model.backbone.load_state_dict(trunk)
    return model


def build_data(cfg: TrainConfig, preload: bool, device: torch.device
               ) -> tuple[Dataset, Dataset, tuple[int, ...]]:
    """Training tasks, validation tasks and the base classes (see the module doc)."""
    d, e = cfg.data, cfg.episodic
    base = tuple(splits.base_classes(d.dataset, d.fold, d.scheme, d.root))
    val_eps = validation_episodes(cfg)
    if e.model == "panet":
        train = EpisodicTrainDataset(
            d.root, d.train_list, d.dataset, d.fold, e.shots, e.episodes_per_epoch,
            TrainTransform(d.crop_size, d.scale, d.rotation), d.scheme, d.min_fg, preload)
        return train, FixedEpisodeDataset(val_eps, TestTransform(d.val_size), preload), base
    with torch.random.fork_rng(devices=[]):  # building the head draws; leave the seed's stream
        model = build_frozen_trunk(cfg)
    n_classes = splits.n_classes(d.dataset, d.root)
    pairs = list(dict.fromkeys(voc.read_pairs(d.root, d.train_list)))
    index = voc.class_index(d.root, pairs, n_classes, d.min_fg)
    keep = sorted({i for c in base for i in index[c]})
    row = {i: r for r, i in enumerate(keep)}
    # The trunk runs once per image: the head trains on stored arrays (see fsstools.features).
    common = dict(checkpoint=trunk_path(cfg), model=model, root=d.root, dataset=d.dataset,
                  settings=FeatureSettings(d.val_size, e.feature_dtype, normalize=False),
                  device=device, batch_size=FROZEN_BATCH)
    train_store = ensure_features(pairs=[pairs[i] for i in keep], **common)
    val_store = ensure_features(pairs=episode_images(val_eps), **common)
    train = FeatureEpisodes(train_store, {c: [row[i] for i in index[c]] for c in base},
                            d.dataset, d.fold, e.shots, e.episodes_per_epoch, d.scheme,
                            d.root)
    return train, FixedFeatureEpisodes(val_store, val_eps), base


def build_model(cfg: TrainConfig) -> nn.Module:
    """The peer to train: PANet (same encoder and initialisation as base training) or a
    PFENet head on the frozen trunk of ``episodic.trunk``."""
    if cfg.episodic.model == "panet":
        return build_panet(cfg.model, cfg.episodic.panet)
    return build_frozen_trunk(cfg)


def objective(label_smoothing: float) -> Objective:
    """The peer's own loss on a batch of tasks; counts the images (query + supports)."""

    def loss(model: nn.Module, batch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, int]:
        support, support_masks, query, query_mask, _ = batch
        out = model(support, support_masks, query, query_mask, label_smoothing=label_smoothing)
        return out["loss"], support.shape[0] * (support.shape[1] + 1)

    return loss


@torch.no_grad()
def validate(model: nn.Module, loader: DataLoader, classes: Sequence[int],
             device: torch.device, ctx: DistContext | None = None,
             precision: Precision | None = None, channels_last: bool = False) -> dict[str, Any]:
    """Few-shot class IoU of the validation tasks (records gathered across processes).

    Returns:
        ``miou``: mean over the base classes of their IoU summed over tasks (as in
        :class:`fsstools.metrics.IoUMeter`);
        ``miou_fg``: the same number (in a binary task every class is the foreground; the
        key keeps ``run.select_on`` valid in both modes); ``class_iou``: per base class in
        ``classes`` order (NaN if never drawn).
    """
    precision = precision or Precision(None)
    model.eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    meter = IoUMeter()
    for batch in loader:
        support, support_masks, query, query_mask, class_id = (x.to(device) for x in batch)
        if query.dim() == 4 and query.is_floating_point():
            query = query.contiguous(memory_format=fmt)
        with precision.autocast(device):
            logits = model(support, support_masks, query)["logits"]  # (B, 2, h, w)
        up = F.interpolate(logits.float(), size=tuple(query_mask.shape[-2:]), mode="bilinear",
                           align_corners=True)
        meter.update(up.argmax(dim=1), query_mask, class_id)
    parts = gather_objects(meter.records.cpu(), ctx) if ctx is not None else [meter.records]
    scores = IoUMeter.from_records(torch.cat(parts)).compute()
    class_iou = [scores["class_iou"].get(c, float("nan")) for c in classes]
    return {"miou": scores["miou"], "miou_fg": scores["miou"], "class_iou": class_iou}


def checkpoint_fields(model: nn.Module, cfg: TrainConfig) -> dict[str, Any]:
    """What a checkpoint of an episodic peer holds besides the weights, so that
    :func:`fsstools.models.checkpoints.load_model` rebuilds it."""
    if cfg.episodic.model == "panet":
        return {"format": PANET_FORMAT, "model_config": config_lib.to_dict(cfg.model),
                "panet_config": config_lib.to_dict(cfg.episodic.panet)}
    return {"format": PFENET_FORMAT, "model_config": config_lib.to_dict(model.model_cfg),
            "pfenet_config": config_lib.to_dict(cfg.episodic.pfenet),
            "trunk": str(trunk_path(cfg)), "trunk_hash": trunk_hash(cfg)}


def _data(cfg: TrainConfig, ctx: DistContext) -> TrainData:
    train, val, classes = build_data(cfg, cfg.run.preload, ctx.device)
    return TrainData(train, val, classes, data_fingerprint(cfg.data))


def _validate(net: nn.Module, loader: DataLoader, data: TrainData, ctx: DistContext,
              precision: Precision, channels_last: bool) -> dict[str, Any]:
    return validate(net, loader, data.classes, ctx.device, ctx, precision, channels_last)


def _key_settings(cfg: TrainConfig, settings: dict[str, Any]) -> dict[str, Any]:
    if cfg.episodic.model == "pfenet":
        settings["episodic"]["trunk"] = trunk_hash(cfg)  # the trunk's bytes, not its path
    return settings


RECIPE = Recipe(
    code=__name__,
    label=lambda cfg: f"episodic {cfg.episodic.model} model",
    data=_data,
    model=build_model,
    objective=lambda cfg: objective(cfg.optim.label_smoothing),
    validate=_validate,
    checkpoint_fields=checkpoint_fields,
    key_settings=_key_settings,
)
