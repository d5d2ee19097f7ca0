"""One training run: its content-keyed folder, the loop over epochs, checkpoints and resume.

What differs between the kinds of run (base training, :mod:`~fsstools.training.base`; the
episodic peers, :mod:`~fsstools.training.episodic`) comes in a :class:`Recipe`: the data,
the network, the loss, the validation and the checkpoint's extra fields.

A run lives in ``<runs>/<name>-<key>/``: ``config.yaml``, ``metrics.csv``, ``last.pt`` (full
training state, every epoch), ``best.pt`` (model selected on base-class validation mIoU;
novel classes are never looked at) and a ``done`` marker once all epochs ran. The key
covers the config (run-control keys left out, paths made absolute, ``run.amp: auto``
replaced by the precision it means on this machine), a fingerprint of every
listed training and validation image and mask, the ImageNet weights file and the code
version of this module and of the recipe's module (each with what it imports), so new data
or new code never reuses an old run, while an edit elsewhere (plots, reports, the other kind
of run) does not retrain.
A run that fails before its first checkpoint leaves no folder behind.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Subset

from fsstools import cache, paths
from fsstools import config as config_lib
from fsstools.cache import atomic_torch_save, atomic_write_text
from fsstools.data import splits, voc
from fsstools.errors import ConflictError
from fsstools.models.checkpoints import CHECKPOINT_FORMAT
from fsstools.progress import bar as progress_bar
from fsstools.training.config import RUN_CONTROL_KEYS, DataConfig, TrainConfig, with_run
from fsstools.training.epoch import (
    Objective,
    Precision,
    Trainee,
    build_trainee,
    resolve_precision,
    train_one_epoch,
)
from fsstools.training.runtime import (
    DistContext,
    InProcessLoader,
    all_reduce_sum,
    barrier,
    epoch_seed,
    gather_objects,
    init_distributed,
    param_digest,
    resolve_device,
    rng_state,
    seed_everything,
    seed_worker,
    set_rng_state,
)


@dataclass(frozen=True)
class TrainData:
    """Datasets of (image (3, H, W), mask (H, W) int64) and the base classes they encode.

    ``fingerprint`` identifies the data in the run's key (see :func:`data_fingerprint`).
    """

    train: Dataset
    val: Dataset
    classes: tuple[int, ...]
    fingerprint: str

    @property
    def n_classes(self) -> int:
        return len(self.classes) + 1  # base classes + background


Validate = Callable[[nn.Module, DataLoader, TrainData, DistContext, Precision, bool],
                    dict[str, Any]]
"""(network, validation loader, data, context, precision, channels_last) -> ``miou``,
``miou_fg`` and ``class_iou`` of the validation set."""


@dataclass(frozen=True)
class Recipe:
    """What one kind of run does its own way; :func:`train` does the rest.

    Attributes:
        code: the module computing this kind of run; its code version (with what it
            imports) keys the run, beside this module's.
        label: the run's name in messages, e.g. "base model".
        data: (config, context) -> the training and validation sets.
        model: config -> the network to train, or None for the PSPNet of ``config.model``.
        objective: config -> the loss on a batch, or None for cross-entropy.
        validate: see :data:`Validate`.
        checkpoint_fields: (network, config) -> what a checkpoint holds besides the weights.
        key_settings: (config, settings) -> the config part of the run's key.
    """

    code: str
    label: Callable[[TrainConfig], str]
    data: Callable[[TrainConfig, DistContext], TrainData]
    model: Callable[[TrainConfig], nn.Module | None]
    objective: Callable[[TrainConfig], Objective | None]
    validate: Validate
    checkpoint_fields: Callable[[nn.Module, TrainConfig], dict[str, Any]]
    key_settings: Callable[[TrainConfig, dict[str, Any]], dict[str, Any]]


def data_fingerprint(cfg: DataConfig) -> str:
    """Fingerprint of every image and mask the training and validation lists name."""
    parts = {}
    for split, list_file in (("train", cfg.train_list), ("val", cfg.val_list)):
        pairs = voc.read_pairs(cfg.root, list_file)
        parts[split] = [list_file, cache.fingerprint_pairs(cfg.root, pairs)]
    return cache.cache_key(**parts)


def run_key(cfg: TrainConfig, recipe: Recipe, data_key: str | None = None) -> str:
    """Key of the run of ``cfg``: what shapes the trained weights (see the module doc).

    Args:
        cfg: the config; run-control keys are left out, so a run resumed on another device
            or with more workers is the same run.
        recipe: the kind of run.
        data_key: the data's fingerprint; default :func:`data_fingerprint` of ``cfg.data``.
    """
    if cfg.run.amp == "auto":  # key the precision this machine trains in, not the request
        cfg = resolve_precision(cfg, resolve_device(cfg.run.device))[0]
    settings = config_lib.to_dict(cfg)
    for key in RUN_CONTROL_KEYS:
        settings["run"].pop(key)
    settings["data"]["root"] = str(paths.resolve(cfg.data.root))
    pretrained = cfg.model.pretrained
    if pretrained is not None:
        settings["model"]["pretrained"] = str(paths.resolve(pretrained))
    settings = recipe.key_settings(cfg, settings)
    return cache.cache_key(
        stage="base_model" if cfg.mode == "base" else "episodic_model",
        config=settings,
        data=data_key if data_key is not None else data_fingerprint(cfg.data),
        pretrained=cache.fingerprint_file(pretrained),
        code=cache.code_version(__name__, recipe.code),
    )


def run_directory(cfg: TrainConfig, recipe: Recipe, data_key: str | None = None) -> Path:
    """``<out_dir>/<name>-<run key>``; ``out_dir`` defaults to ``paths.runs_dir()``."""
    parent = paths.resolve(cfg.run.out_dir) if cfg.run.out_dir else paths.runs_dir()
    return parent / f"{cfg.run.name}-{run_key(cfg, recipe, data_key)}"


def _loaders(data: TrainData, cfg: TrainConfig, ctx: DistContext
             ) -> tuple[DataLoader | InProcessLoader, DataLoader, torch.Generator]:
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
    if not cfg.run.workers and cfg.run.worker_streams:
        train = InProcessLoader(train)  # the batches one worker process would give
    # Each process scores a disjoint slice; confusion matrices are summed, so no duplicates.
    val_part = Subset(data.val, range(ctx.rank, len(data.val), ctx.world_size))
    val = DataLoader(val_part, batch_size=cfg.run.val_batch_size, shuffle=False,
                     num_workers=cfg.run.workers, pin_memory=pin, worker_init_fn=seed_worker)
    if len(train) == 0:
        raise config_lib.ConfigError(
            f"{len(data.train)} training images cannot fill one batch of {batch}; lower "
            f"optim.batch_size or check data.train_list"
        )
    return train, val, generator


def _payload(model: nn.Module, cfg: TrainConfig, recipe: Recipe, data: TrainData, epoch: int,
             metrics: dict[str, Any], run_dir_key: str) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "model_config": config_lib.to_dict(cfg.model),
        "n_classes": data.n_classes,
        "classes": list(data.classes),
        "config": config_lib.to_dict(cfg),
        "run_key": run_dir_key,
        "epoch": epoch,
        "metrics": metrics,
        **recipe.checkpoint_fields(model, cfg),
    }


def _save_epoch(run_dir: Path, cfg: TrainConfig, recipe: Recipe, data: TrainData, t: Trainee,
                metrics: dict[str, Any], best: dict[str, Any], rngs: list[Any]) -> dict[str, Any]:
    """Write best.pt (if improved), metrics.csv and last.pt; returns the updated best."""
    epoch = metrics["epoch"]
    payload = _payload(t.model, cfg, recipe, data, epoch, metrics,
                       run_dir.name.rsplit("-", 1)[-1])
    score = metrics.get(f"val_{cfg.run.select_on}", float("nan"))
    if score > best["score"]:  # NaN (no validation this epoch) never wins
        best = {"epoch": epoch, "score": score}
        atomic_torch_save(payload, run_dir / "best.pt")
    write_metrics_row(run_dir / "metrics.csv", metrics)
    # last.pt goes last: if killed before it, the resumed run redoes this epoch identically.
    atomic_torch_save({**payload, **t.state_dict(), "rng": rngs, "best": best},
                      run_dir / "last.pt")
    return best


def _log_line(metrics: dict[str, Any], epochs: int) -> str:
    nan = float("nan")
    return (f"epoch {metrics['epoch']}/{epochs} loss {metrics['train_loss']:.4f} "
            f"val mIoU {metrics.get('val_miou', nan):.4f} "
            f"(fg {metrics.get('val_miou_fg', nan):.4f}) "
            f"{metrics['images_per_s']:.1f} img/s {metrics['time_s']:.1f}s")


def train(cfg: TrainConfig, recipe: Recipe, data: TrainData | None = None) -> Path:
    """Train (or resume, or skip if done) the run of ``cfg``; returns its folder.

    Args:
        cfg: the resolved configuration.
        recipe: the kind of run.
        data: datasets to use instead of the recipe's (tests, notebooks); their
            ``fingerprint`` stands for the data in the run's key.

    Raises:
        ConfigError: an unknown fold, split scheme or device, before anything is read.
    """
    splits.check_split(cfg.data.dataset, cfg.data.fold, cfg.data.scheme)
    ctx = init_distributed(cfg.run.device)
    cfg, precision_line = resolve_precision(cfg, ctx.device)  # config.yaml shows it resolved
    run_dir = run_directory(cfg, recipe, None if data is None else data.fingerprint)
    # A second process asking for the same run (two notebooks, say) waits, then reuses it.
    lock = cache.locked(f"run-{run_dir.name}") if ctx.is_main else contextlib.nullcontext()
    with lock:
        try:
            return _run(cfg, recipe, data, ctx, run_dir, precision_line)
        except BaseException:
            if ctx.is_main and not (run_dir / "last.pt").is_file():
                shutil.rmtree(run_dir, ignore_errors=True)  # nothing to resume: leave no trace
            raise


def _run(cfg: TrainConfig, recipe: Recipe, data: TrainData | None, ctx: DistContext,
         run_dir: Path, precision_line: str) -> Path:
    if (run_dir / "done").is_file():
        if cfg.run.progress and ctx.is_main:
            cache.announce_reuse(f"{recipe.label(cfg)} {cfg.run.name}", run_dir / "best.pt")
        return run_dir
    last = run_dir / "last.pt"
    if last.is_file() and not cfg.run.resume:
        raise ConflictError(
            f"{run_dir} holds an interrupted run; continue it with --resume "
            f"(run.resume=true) or delete the folder to start over"
        )
    if cfg.run.threads is not None:
        torch.set_num_threads(cfg.run.threads)
    seed_everything(cfg.run.seed + ctx.rank)
    if data is None:
        data = recipe.data(cfg, ctx)
    train_loader, val_loader, generator = _loaders(data, cfg, ctx)
    t = build_trainee(cfg, data.n_classes, len(train_loader), ctx, recipe.model(cfg))
    objective = recipe.objective(cfg)
    start_epoch, best = 0, {"epoch": 0, "score": -1.0}
    if last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=True)
        t.model.load_state_dict(state["model"])
        t.load_state_dict(state)
        start_epoch, best, rngs = state["epoch"], state["best"], state["rng"]
        set_rng_state(rngs[ctx.rank] if ctx.rank < len(rngs) else rngs[0])
    if ctx.is_main:
        config_lib.save_yaml(cfg, run_dir / "config.yaml")
        atomic_write_text(run_dir / "data_fingerprint.txt", data.fingerprint + "\n")
    net = t.model
    if ctx.distributed:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        net = DistributedDataParallel(t.model, device_ids=ids)
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes; GPU runs are not bitwise anyway
    if ctx.is_main and cfg.run.progress:
        print(precision_line, file=sys.stderr)
    # One bar over every epoch left: its refreshes are bounded (see fsstools.progress), so a
    # long run in a notebook kernel does not flood the kernel's output channel.
    bar = progress_bar(total=(cfg.run.epochs - start_epoch) * len(train_loader), unit="step",
                       desc=f"train {cfg.run.name}", leave=False,
                       disable=not (cfg.run.progress and ctx.is_main))
    with bar:
        for epoch in range(start_epoch + 1, cfg.run.epochs + 1):
            tic = time.perf_counter()
            # Data order and worker seeds depend on (seed, epoch, rank) only: resuming is exact.
            generator.manual_seed(epoch_seed(cfg.run.seed, epoch, ctx.rank))
            if isinstance(train_loader.sampler, DistributedSampler):
                train_loader.sampler.set_epoch(epoch)
            stats = train_one_epoch(net, train_loader, t.optimizer, t.scheduler, t.scaler,
                                    cfg.optim.label_smoothing, ctx.device, t.precision,
                                    cfg.run.channels_last, bar, objective)
            sums = all_reduce_sum(torch.tensor([stats["loss"], stats["images"]],
                                               dtype=torch.float64, device=ctx.device),
                                  ctx).cpu()
            metrics = {"epoch": epoch, "train_loss": float(sums[0]) / ctx.world_size,
                       "lr": t.scheduler.get_last_lr()[0],  # at the end of the epoch
                       "images_per_s": float(sums[1]) / stats["seconds"]}
            if epoch % cfg.run.val_every == 0 or epoch == cfg.run.epochs:
                val = recipe.validate(net, val_loader, data, ctx, t.precision,
                                      cfg.run.channels_last)
                metrics.update(val_miou=val["miou"], val_miou_fg=val["miou_fg"],
                               val_class_iou=val["class_iou"])
            metrics["time_s"] = time.perf_counter() - tic
            rngs = gather_objects(rng_state(), ctx)
            if ctx.is_main:
                best = _save_epoch(run_dir, cfg, recipe, data, t, metrics, best, rngs)
                if cfg.run.progress:
                    bar.write(_log_line(metrics, cfg.run.epochs), file=sys.stderr)
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


def ensure_trained(cfg: TrainConfig, recipe: Recipe, data: TrainData | None = None,
                   force: bool = False) -> Path:
    """Path of the best checkpoint of ``cfg``'s run: reused if finished (announced), resumed
    if interrupted, trained otherwise; ``force`` trains it again from scratch."""
    run_dir = run_directory(cfg, recipe, None if data is None else data.fingerprint)
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    if (run_dir / "done").is_file():
        cache.announce_reuse(f"{recipe.label(cfg)} {cfg.run.name}", run_dir / "best.pt")
    else:
        run_dir = train(with_run(cfg, resume=True, stop_after_epoch=None), recipe, data)
    return run_dir / "best.pt"


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
    atomic_write_text(path, "\n".join(lines) + "\n")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return str(v)
