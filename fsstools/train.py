"""Base training of PSPNet with cross-entropy on the base classes of a fold.

One entry point for one process and for torchrun::

    fsstools train --config configs/synth/fold0.yaml [--set run.epochs=2 ...] [--resume]
    torchrun --nproc_per_node=4 -m fsstools.train --config configs/pascal/fold0.yaml

A run lives in ``<out_dir>/<name>-<hash>/`` (hash of the config without run-control keys):
``config.yaml``, ``metrics.csv``, ``last.pt`` (full training state, every epoch), ``best.pt``
(model selected on base-class validation mIoU; novel classes are never looked at) and a
``done`` marker once all epochs ran.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Subset
from tqdm.auto import tqdm

from fsstools import config as config_lib
from fsstools.constants import IGNORE_INDEX
from fsstools.models import PSPNet, build_model
from fsstools.models.checkpoints import CHECKPOINT_FORMAT
from fsstools.train_utils import (
    DataConfig,
    DistContext,
    OptimConfig,
    RunConfig,
    TrainConfig,
    all_reduce_sum,
    barrier,
    confusion_matrix,
    cosine_lambda,
    epoch_seed,
    gather_objects,
    init_distributed,
    iou_from_confusion,
    rng_state,
    run_directory,
    run_hash,
    run_lock,
    seed_everything,
    seed_worker,
    set_rng_state,
    with_run,
    write_metrics_row,
)

__all__ = [
    "DataConfig", "OptimConfig", "RunConfig", "TrainConfig", "TrainData", "Trainee",
    "build_data", "build_optimizer", "build_trainee", "cli", "ensure_trained", "evaluate",
    "load_config", "main", "run_directory", "run_hash", "train_one_epoch",
]  # fmt: skip


@dataclass(frozen=True)
class TrainData:
    """Datasets of (image (3, H, W), mask (H, W) int64) and the base classes they encode."""

    train: Dataset
    val: Dataset
    classes: tuple[int, ...]

    @property
    def n_classes(self) -> int:
        return len(self.classes) + 1  # base classes + background


def build_data(cfg: DataConfig) -> TrainData:
    """Base-class training and validation sets of ``cfg.fold``."""
    from fsstools.data.datasets import BaseTrainDataset
    from fsstools.data.transforms import test_transform, train_transform

    common = dict(root=cfg.root, dataset=cfg.dataset, fold=cfg.fold, scheme=cfg.scheme,
                  min_fg=cfg.min_fg)
    train = BaseTrainDataset(list_file=cfg.train_list, **common,
                             transform=train_transform(cfg.crop_size, cfg.scale, cfg.rotation))
    val = BaseTrainDataset(list_file=cfg.val_list, **common, transform=test_transform(cfg.val_size))
    return TrainData(train, val, tuple(train.base_classes))


# ----------------------------------------------------------------------------- loop


@dataclass(frozen=True)
class Precision:
    """Autocast dtype (None = float32) and whether a GradScaler is needed (fp16)."""

    dtype: torch.dtype | None

    @classmethod
    def choose(cls, amp: str, device: torch.device) -> Precision:
        if device.type != "cuda" or amp == "fp32":
            return cls(None)
        return cls(torch.bfloat16 if amp == "bf16" else torch.float16)

    def autocast(self, device: torch.device) -> torch.autocast:
        return torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype is not None)


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
    progress: bool = False,
) -> dict[str, float]:
    """One pass over ``loader``; the lr schedule steps every iteration.

    Returns:
        ``loss`` (mean over this process's batches), ``images`` seen, ``seconds``.
    """
    precision = precision or Precision(None)
    model.train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    total, n_batches, n_images = torch.zeros((), dtype=torch.float64), 0, 0
    start = time.perf_counter()
    # tqdm.auto calls iter() on an iterable it is given, which for a DataLoader would fork a
    # second, unused set of workers each epoch; hand it the one iterator instead.
    batches = tqdm(iter(loader), total=len(loader), disable=not progress, leave=False,
                   desc="train")
    for images, masks in batches:
        images = images.to(device, non_blocking=True, memory_format=fmt)  # (B, 3, H, W)
        masks = masks.to(device, non_blocking=True)  # (B, H, W)
        with precision.autocast(device):
            logits = model(images)  # (B, K, H, W)
        loss = F.cross_entropy(logits.float(), masks, ignore_index=IGNORE_INDEX,
                               label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        total += loss.detach().double().cpu()
        n_batches += 1
        n_images += images.shape[0]
    return {"loss": float(total) / max(1, n_batches), "images": n_images,
            "seconds": time.perf_counter() - start}


@torch.no_grad()
def evaluate(
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


# ----------------------------------------------------------------------------- setup


def _loaders(data: TrainData, cfg: TrainConfig, ctx: DistContext
             ) -> tuple[DataLoader, DataLoader, torch.Generator]:
    batch = cfg.optim.batch_size
    if batch % ctx.world_size:
        raise config_lib.ConfigError(
            f"optim.batch_size={batch} is not divisible by the {ctx.world_size} processes; "
            f"pick a multiple of {ctx.world_size}"
        )
    generator = torch.Generator()
    if ctx.distributed:
        sampler = DistributedSampler(data.train, ctx.world_size, ctx.rank, shuffle=True,
                                     seed=cfg.run.seed, drop_last=True)
    else:
        sampler = RandomSampler(data.train, generator=generator)
    pin = ctx.device.type == "cuda"
    train = DataLoader(data.train, batch_size=batch // ctx.world_size, sampler=sampler,
                       drop_last=True, num_workers=cfg.run.workers, pin_memory=pin,
                       worker_init_fn=seed_worker, generator=generator,
                       persistent_workers=False)
    # Each process scores a disjoint slice; confusion matrices are summed, so no duplicates.
    val_part = Subset(data.val, range(ctx.rank, len(data.val), ctx.world_size))
    val = DataLoader(val_part, batch_size=cfg.run.val_batch_size, shuffle=False,
                     num_workers=cfg.run.workers, pin_memory=pin, worker_init_fn=seed_worker)
    if len(train) == 0:
        raise ValueError(
            f"{len(data.train)} training images cannot fill one batch of {batch}; lower "
            f"optim.batch_size or check data.train_list"
        )
    return train, val, generator


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.momentum, 0.999),
                                 weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                           nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)


def _payload(model: PSPNet, cfg: TrainConfig, data: TrainData, epoch: int,
             metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "model_config": config_lib.to_dict(cfg.model),
        "n_classes": data.n_classes,
        "classes": list(data.classes),
        "config": config_lib.to_dict(cfg),
        "run_hash": run_hash(cfg),
        "epoch": epoch,
        "metrics": metrics,
    }


# ----------------------------------------------------------------------------- main


@dataclass
class Trainee:
    """The mutable objects of one run, built from its config."""

    model: PSPNet
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


def build_trainee(cfg: TrainConfig, n_classes: int, iters_per_epoch: int, ctx: DistContext
                  ) -> Trainee:
    model = build_model(cfg.model, n_classes).to(ctx.device)
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


def _save_epoch(run_dir: Path, cfg: TrainConfig, data: TrainData, t: Trainee,
                metrics: dict[str, Any], best: dict[str, Any], rngs: list[Any]) -> dict[str, Any]:
    """Write best.pt (if improved), metrics.csv and last.pt; returns the updated best."""
    from fsstools.artifacts import atomic_torch_save

    epoch = metrics["epoch"]
    payload = _payload(t.model, cfg, data, epoch, metrics)
    score = metrics.get(f"val_{cfg.run.select_on}", float("nan"))
    if score > best["score"]:  # NaN (no validation this epoch) never wins
        best = {"epoch": epoch, "score": score}
        atomic_torch_save(payload, run_dir / "best.pt")
    write_metrics_row(run_dir / "metrics.csv", metrics)
    # last.pt goes last: if killed before it, the resumed run redoes this epoch identically.
    atomic_torch_save({**payload, **t.state_dict(), "rng": rngs, "best": best},
                      run_dir / "last.pt")
    return best


def _log(metrics: dict[str, Any], epochs: int) -> None:
    nan = float("nan")
    print(f"epoch {metrics['epoch']}/{epochs} loss {metrics['train_loss']:.4f} "
          f"val mIoU {metrics.get('val_miou', nan):.4f} (fg {metrics.get('val_miou_fg', nan):.4f}) "
          f"{metrics['images_per_s']:.1f} img/s {metrics['time_s']:.1f}s", file=sys.stderr)


def main(cfg: TrainConfig, data: TrainData | None = None) -> Path:
    """Train (or resume, or skip if done) the run of ``cfg``; returns its folder.

    Args:
        cfg: the resolved configuration.
        data: datasets to use instead of ``build_data(cfg.data)`` (tests, notebooks).
    """
    ctx = init_distributed(cfg.run.device)
    run_dir = run_directory(cfg)
    # A second process asking for the same run (two notebooks, say) waits, then reuses it.
    with run_lock(run_dir, enabled=ctx.is_main):
        return _run(cfg, data, ctx, run_dir)


def _run(cfg: TrainConfig, data: TrainData | None, ctx: DistContext, run_dir: Path) -> Path:
    from fsstools.artifacts import atomic_write_text

    if (run_dir / "done").is_file():
        return run_dir
    last = run_dir / "last.pt"
    if last.is_file() and not cfg.run.resume:
        raise RuntimeError(
            f"{run_dir} holds an interrupted run; continue it with --resume "
            f"(run.resume=true) or delete the folder to start over"
        )
    if cfg.run.threads is not None:
        torch.set_num_threads(cfg.run.threads)
    seed_everything(cfg.run.seed + ctx.rank)
    data = build_data(cfg.data) if data is None else data
    train_loader, val_loader, generator = _loaders(data, cfg, ctx)
    t = build_trainee(cfg, data.n_classes, len(train_loader), ctx)
    start_epoch, best = 0, {"epoch": 0, "score": -1.0}
    if last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=True)
        t.model.load_state_dict(state["model"])
        t.load_state_dict(state)
        start_epoch, best, rngs = state["epoch"], state["best"], state["rng"]
        set_rng_state(rngs[ctx.rank] if ctx.rank < len(rngs) else rngs[0])
    if ctx.is_main:
        config_lib.save_yaml(cfg, run_dir / "config.yaml")
    net = t.model
    if ctx.distributed:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        net = DistributedDataParallel(t.model, device_ids=ids)
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes; GPU runs are not bitwise anyway
    for epoch in range(start_epoch + 1, cfg.run.epochs + 1):
        tic = time.perf_counter()
        # Data order and worker seeds depend on (seed, epoch, rank) only, so resuming is exact.
        generator.manual_seed(epoch_seed(cfg.run.seed, epoch, ctx.rank))
        if isinstance(train_loader.sampler, DistributedSampler):
            train_loader.sampler.set_epoch(epoch)
        stats = train_one_epoch(net, train_loader, t.optimizer, t.scheduler, t.scaler,
                                cfg.optim.label_smoothing, ctx.device, t.precision,
                                cfg.run.channels_last, cfg.run.progress and ctx.is_main)
        sums = all_reduce_sum(torch.tensor([stats["loss"], stats["images"]], dtype=torch.float64,
                                           device=ctx.device), ctx).cpu()
        metrics = {"epoch": epoch, "train_loss": float(sums[0]) / ctx.world_size,
                   "lr": t.scheduler.get_last_lr()[0],  # at the end of the epoch
                   "images_per_s": float(sums[1]) / stats["seconds"]}
        if epoch % cfg.run.val_every == 0 or epoch == cfg.run.epochs:
            val = evaluate(net, val_loader, data.n_classes, ctx.device, ctx, t.precision,
                           cfg.run.channels_last)
            metrics.update(val_miou=val["miou"], val_miou_fg=val["miou_fg"],
                           val_class_iou=val["class_iou"])
        metrics["time_s"] = time.perf_counter() - tic
        rngs = gather_objects(rng_state(), ctx)
        if ctx.is_main:
            best = _save_epoch(run_dir, cfg, data, t, metrics, best, rngs)
            if cfg.run.progress:
                _log(metrics, cfg.run.epochs)
        barrier(ctx)
        if cfg.run.stop_after_epoch is not None and epoch >= cfg.run.stop_after_epoch:
            return run_dir
    digests = gather_objects(param_digest(t.model), ctx)
    if len(set(digests)) > 1:
        raise RuntimeError(f"replicas ended with different weights: {digests}")
    if ctx.is_main:
        atomic_write_text(run_dir / "done", json.dumps({**best, "param_digests": digests}) + "\n")
    barrier(ctx)
    return run_dir


def ensure_trained(cfg: TrainConfig, data: TrainData | None = None) -> Path:
    """Path of the best checkpoint of ``cfg``'s run: reused if finished, resumed if
    interrupted, trained otherwise."""
    run_dir = run_directory(cfg)
    if not (run_dir / "done").is_file():
        run_dir = main(with_run(cfg, resume=True, stop_after_epoch=None), data)
    return run_dir / "best.pt"


def param_digest(model: nn.Module) -> str:
    """Hash of all parameter values (replicas of one DDP run must agree on it)."""
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()
                ) -> TrainConfig:
    """Defaults, then the YAML file, then ``key=value`` overrides."""
    return config_lib.load(TrainConfig, path, list(overrides))


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fsstools train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="YAML file, e.g. configs/synth/fold0.yaml")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="overrides, e.g. run.epochs=2 optim.lr=0.01")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    args = parser.parse_args(argv)
    overrides = [*args.set, *(["run.resume=true"] if args.resume else [])]
    cfg = load_config(args.config, overrides)
    run_dir = main(cfg)
    if torch.distributed.is_initialized():
        rank = torch.distributed.get_rank()
        torch.distributed.destroy_process_group()
        if rank != 0:
            return 0
    print(run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
