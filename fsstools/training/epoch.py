"""The training loop's parts: precision, one epoch, base-class validation, the optimiser and
its cosine schedule, and the objects of one run (:class:`Trainee`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fsstools.constants import IGNORE_INDEX
from fsstools.errors import ConfigError
from fsstools.models import build_model
from fsstools.training.config import OptimConfig, TrainConfig, with_run
from fsstools.training.runtime import DistContext, all_reduce_sum, auto_amp


@dataclass(frozen=True)
class Precision:
    """Autocast dtype (None = float32) and whether a GradScaler is needed (fp16)."""

    dtype: torch.dtype | None

    @classmethod
    def choose(cls, amp: str, device: torch.device) -> Precision:
        """The precision ``run.amp`` asks for on ``device`` ("auto": see :func:`auto_amp`)."""
        if amp == "auto":
            amp = auto_amp(device)[0]
        if amp == "fp32":
            return cls(None)
        if device.type == "cpu" and amp == "fp16":
            raise ConfigError("run.amp=fp16 needs a GPU (CPU autocast has no GradScaler "
                              "support here); use run.amp=auto, bf16 or fp32 on CPU")
        return cls(torch.bfloat16 if amp == "bf16" else torch.float16)

    def autocast(self, device: torch.device) -> torch.autocast:
        return torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype is not None)


def resolve_precision(cfg: TrainConfig, device: torch.device) -> tuple[TrainConfig, str]:
    """``cfg`` with ``run.amp: auto`` replaced by the precision it means on ``device``, and
    the line saying which precision trains and why ("precision bf16 (run.amp=auto: this CPU
    has AVX512-BF16)"). Other values are kept."""
    if cfg.run.amp != "auto":
        return cfg, f"precision {cfg.run.amp} (run.amp={cfg.run.amp})"
    amp, why = auto_amp(device)
    return with_run(cfg, amp=amp), f"precision {amp} (run.amp=auto: {why})"


Objective = Callable[[nn.Module, Sequence[torch.Tensor]], tuple[torch.Tensor, int]]
"""The loss of one batch (its tensors already on the device) and the images it holds."""


def ce_objective(label_smoothing: float) -> Objective:
    """Base training's objective: cross-entropy of ``model(images)`` on (images, masks)."""

    def objective(model: nn.Module, batch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, int]:
        images, masks = batch
        logits = model(images)  # (B, K, H, W)
        loss = F.cross_entropy(logits.float(), masks, ignore_index=IGNORE_INDEX,
                               label_smoothing=label_smoothing)
        return loss, images.shape[0]

    return objective


def _to_device(x: torch.Tensor, device: torch.device, fmt: torch.memory_format) -> torch.Tensor:
    image_like = x.dim() == 4 and x.is_floating_point()  # (B, C, H, W) batches take ``fmt``
    return x.to(device, non_blocking=True,
                memory_format=fmt if image_like else torch.preserve_format)


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    label_smoothing: float,
    device: torch.device,
    precision: Precision | None = None,
    channels_last: bool = False,
    bar: tqdm | None = None,
    objective: Objective | None = None,
) -> dict[str, float]:
    """One pass over ``loader``; the lr schedule steps every iteration.

    Args:
        bar: a progress bar advanced once per batch (the run's one bar over all epochs,
            see :mod:`fsstools.progress`); None draws nothing.
        objective: loss of a batch; default :func:`ce_objective` of ``label_smoothing`` on
            (images, masks) batches (episodic training passes its own).

    Returns:
        ``loss`` (mean over this process's batches), ``images`` seen, ``seconds``.
    """
    precision = precision or Precision(None)
    objective = objective or ce_objective(label_smoothing)
    model.train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    total, n_batches, n_images = torch.zeros((), dtype=torch.float64), 0, 0
    start = time.perf_counter()
    for batch in loader:  # iter() once: each call starts a new set of workers
        batch = [_to_device(x, device, fmt) for x in batch]
        with precision.autocast(device):
            loss, n = objective(model, batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        total += loss.detach().double().cpu()
        n_batches += 1
        n_images += n
        if bar is not None:
            bar.update()
    return {"loss": float(total) / max(1, n_batches), "images": n_images,
            "seconds": time.perf_counter() - start}


@torch.no_grad()
def validate(
    model: nn.Module,
    loader: DataLoader,
    n_classes: int,
    device: torch.device,
    ctx: DistContext | None = None,
    precision: Precision | None = None,
    channels_last: bool = False,
) -> dict[str, Any]:
    """Base-class segmentation IoU over the whole loader (summed across processes).

    Returns:
        ``miou`` (background included), ``miou_fg`` (base classes only), ``class_iou``.
    """
    precision = precision or Precision(None)
    model.eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    conf = torch.zeros(n_classes, n_classes, dtype=torch.int64, device=device)
    for images, masks in loader:
        images = images.to(device, non_blocking=True, memory_format=fmt)
        masks = masks.to(device, non_blocking=True)
        with precision.autocast(device):
            pred = model(images).argmax(1)  # (B, H, W)
        conf += confusion_matrix(pred, masks, n_classes)
    if ctx is not None:
        all_reduce_sum(conf, ctx)
    return iou_from_confusion(conf.cpu())


def cosine_lambda(total_iters: int, warmup_iters: int = 0):
    """Multiplier of the base lr at iteration ``it``: linear warm-up, then cosine to 0."""

    def factor(it: int) -> float:
        if it < warmup_iters:
            return (it + 1) / warmup_iters
        progress = (it - warmup_iters) / max(1, total_iters - warmup_iters)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Pixel counts (K, K), rows = target class, columns = predicted; 255 targets skipped.

    Args:
        pred: predicted labels (B, H, W) int64 in 0..K-1.
        target: labels (B, H, W) int64 in 0..K-1 or IGNORE_INDEX.
    """
    keep = target != IGNORE_INDEX
    idx = target[keep] * n_classes + pred[keep]
    return torch.bincount(idx, minlength=n_classes**2).reshape(n_classes, n_classes)


def iou_from_confusion(conf: torch.Tensor) -> dict[str, Any]:
    """Per-class IoU and its means with (``miou``) and without (``miou_fg``) background 0.

    Classes absent from both target and prediction have no IoU and are left out of means.
    """
    conf = conf.double()
    inter = conf.diag()
    union = conf.sum(0) + conf.sum(1) - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.nan)
    return {
        "miou": float(iou.nanmean()),
        "miou_fg": float(iou[1:].nanmean()),
        "class_iou": [float(x) for x in iou],
    }


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimiser of the trainable parameters (a frozen trunk's are left out)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.momentum, 0.999),
                                 weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)


@dataclass
class Trainee:
    """The mutable objects of one run, built from its config."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    precision: Precision

    def state_dict(self) -> dict[str, Any]:
        """Training state besides the model weights (which checkpoints hold under "model")."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


def build_trainee(cfg: TrainConfig, n_classes: int, iters_per_epoch: int, ctx: DistContext,
                  model: nn.Module | None = None) -> Trainee:
    """The run's objects; ``model`` (an episodic peer) replaces the base PSPNet."""
    model = (build_model(cfg.model, n_classes) if model is None else model).to(ctx.device)
    if cfg.run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if ctx.distributed and cfg.run.sync_bn and ctx.device.type == "cuda":
        # SyncBatchNorm has no CPU kernel; gloo runs keep per-process statistics.
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = build_optimizer(model, cfg.optim)
    total = cfg.run.epochs * iters_per_epoch
    warmup = round(cfg.optim.warmup_epochs * iters_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_lambda(total, warmup))
    precision = Precision.choose(cfg.run.amp, ctx.device)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=precision.dtype == torch.float16)
    return Trainee(model, optimizer, scheduler, scaler, precision)
