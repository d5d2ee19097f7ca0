"""Pieces of base training that are not the loop: configs, run folders, seeding, RNG state,
distributed setup, the segmentation confusion matrix and the metrics CSV."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from fsstools import artifacts
from fsstools.config import config_hash, to_dict
from fsstools.constants import IGNORE_INDEX
from fsstools.models import ModelConfig


@dataclass(frozen=True)
class DataConfig:
    """Where the images are and how base-training samples are made."""

    dataset: Literal["pascal", "coco", "synth"] = "pascal"
    root: str = "data/pascal"
    train_list: str = "lists/train.txt"
    val_list: str = "lists/val.txt"
    fold: int = 0
    scheme: Literal["interleaved", "contiguous"] = "interleaved"
    crop_size: int = 417
    val_size: int = 417
    scale: tuple[float, float] = (0.5, 2.0)
    rotation: float = 10.0
    min_fg: int | None = None
    """Pixels a base class must cover to keep an image; None scales the 2048-pixel rule."""


@dataclass(frozen=True)
class OptimConfig:
    """SGD with a per-iteration cosine schedule; defaults are the PASCAL recipe."""

    name: Literal["sgd", "adamw"] = "sgd"
    """"adamw" (momentum is beta1; nesterov ignored) converges faster in short runs from scratch."""
    lr: float = 0.0025
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    batch_size: int = 12
    """Global batch; split evenly across processes under torchrun."""
    warmup_epochs: float = 0.0
    """Linear warm-up from 0 before the cosine decay (0 = the reference's plain cosine)."""


@dataclass(frozen=True)
class RunConfig:
    """Run control. Keys in ``RUN_CONTROL_KEYS`` do not change the result and stay out of
    the run's hash, so a run resumed on another device or with more workers is the same run."""

    name: str = "pspnet"
    out_dir: str | None = None
    """Parent of run folders; None means ``<FSSTOOLS_OUTPUTS or outputs>/runs``."""
    seed: int = 0
    epochs: int = 100
    device: str = "auto"
    """"auto" (cuda if available, else cpu), "cpu", "cuda" ..."""
    amp: Literal["fp32", "bf16", "fp16"] = "bf16"
    """Autocast dtype on CUDA ("fp32" turns it off); CPU always runs float32."""
    workers: int = 4
    threads: int | None = None
    """torch.set_num_threads for this process; None leaves torch's default."""
    channels_last: bool = False
    sync_bn: bool = True
    """Convert BN to SyncBatchNorm under torchrun (as the reference does)."""
    val_every: int = 1
    select_on: Literal["miou", "miou_fg"] = "miou"
    """Checkpoint selection on base-class validation mIoU, with or without background."""
    val_batch_size: int = 16
    resume: bool = False
    stop_after_epoch: int | None = None
    """Stop (as if killed) after this epoch; for tests and for splitting long runs."""
    progress: bool = True


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


RUN_CONTROL_KEYS = ("out_dir", "device", "workers", "threads", "resume", "stop_after_epoch",
                    "progress", "val_batch_size")


def run_hash(cfg: TrainConfig) -> str:
    """Hash of everything that shapes the trained weights (run-control keys left out)."""
    data = to_dict(cfg)
    for key in RUN_CONTROL_KEYS:
        data["run"].pop(key)
    return config_hash(data)


def run_directory(cfg: TrainConfig) -> Path:
    """``<out_dir>/<name>-<hash>``."""
    parent = Path(cfg.run.out_dir) if cfg.run.out_dir else artifacts.OUTPUTS / "runs"
    return parent / f"{cfg.run.name}-{run_hash(cfg)}"


@contextlib.contextmanager
def run_lock(run_dir: Path, enabled: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` (POSIX ``flock``; a no-op where unavailable)."""
    if not enabled or fcntl is None:
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def with_run(cfg: TrainConfig, **changes: Any) -> TrainConfig:
    """``cfg`` with some ``run`` fields replaced."""
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, **changes))


# ----------------------------------------------------------------------------- seeding


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """Seed of the data order and worker RNGs of one epoch: a pure function of its inputs, so
    a resumed run draws the very same batches as an uninterrupted one."""
    return (seed * 1_000_003 + epoch * 7919 + rank) % 2**63


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: torch seeds each worker; derive numpy/random from it."""
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


def rng_state() -> dict[str, Any]:
    """This process's RNG states in a form ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``rng_state``."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state({
        "bit_generator": "MT19937",
        "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
        "has_gauss": np_state["has_gauss"],
        "gauss": np_state["gauss"],
    })  # fmt: skip
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def init_distributed(device: str) -> DistContext:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on CUDA, gloo on CPU)."""
    dev = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(0, 1, dev)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), dev)


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.distributed:
        dist.all_reduce(t)
    return t


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


# ----------------------------------------------------------------------------- schedule


def cosine_lambda(total_iters: int, warmup_iters: int = 0):
    """Multiplier of the base lr at iteration ``it``: linear warm-up, then cosine to 0."""

    def factor(it: int) -> float:
        if it < warmup_iters:
            return (it + 1) / warmup_iters
        progress = (it - warmup_iters) / max(1, total_iters - warmup_iters)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


# ----------------------------------------------------------------------------- metrics


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


METRIC_COLUMNS = ("epoch", "train_loss", "val_miou", "val_miou_fg", "lr", "time_s",
                  "images_per_s")


def write_metrics_row(path: Path, row: dict[str, Any]) -> None:
    """Add the row of ``row["epoch"]`` to the CSV, dropping rows of that epoch or later
    (left by a run killed after writing them), and rewrite the file atomically."""
    rows = []
    if path.is_file():
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < row["epoch"]]
    rows.append({k: row.get(k, "") for k in METRIC_COLUMNS})
    lines = [",".join(METRIC_COLUMNS)]
    lines += [",".join(_fmt(r[k]) for k in METRIC_COLUMNS) for r in rows]
    artifacts.atomic_write_text(path, "\n".join(lines) + "\n")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return str(v)
