"""Training configuration: data, model, optimiser, run control and the episodic mode, as frozen
dataclasses loaded in layers (defaults, a YAML file, ``key=value`` overrides; see
:mod:`fsstools.config`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from fsstools.constants import FeatureDtype
from fsstools.data.splits import Dataset, Scheme
from fsstools.models import ModelConfig
from fsstools.models.panet import PANetConfig
from fsstools.models.pfenet import PFENetConfig


@dataclass(frozen=True)
class DataConfig:
    """Where the images are and how base-training samples are made."""

    dataset: Dataset = "pascal"
    root: str = "data/pascal"
    train_list: str = "lists/train.txt"
    val_list: str = "lists/val.txt"
    fold: int = 0
    scheme: Scheme = "interleaved"
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
    """Parent of run folders; None means ``<outputs>/runs`` (see :mod:`fsstools.paths`)."""
    seed: int = 0
    epochs: int = 100
    device: str = "auto"
    """"auto" (cuda if available, else cpu), "cpu", "cuda" ..."""
    amp: Literal["auto", "fp32", "bf16", "fp16"] = "bf16"
    """Autocast dtype ("fp32" turns it off); on CPU "bf16" or "fp32" (CPUs without bf16
    instructions run bf16 slower than fp32: measure with bench/train.py). "auto" is "bf16"
    where the device computes in bf16 natively (a CUDA device that supports it; a CPU with
    AVX512-BF16 or AMX-BF16) and "fp32" elsewhere. It is resolved before the run's key is
    made, so the key, the saved config.yaml and the checkpoints hold the precision used: an
    "auto" run on another kind of machine is another run (set the precision to continue it
    there)."""
    workers: int = 4
    """DataLoader worker processes; 0 loads in the training process (see
    ``worker_streams``). 2 or more give each worker its own random stream, so other
    augmentations than 0 or 1."""
    worker_streams: bool = True
    """With ``workers: 0``, draw the training data's randomness from the streams a single
    worker would (:class:`~fsstools.training.runtime.InProcessLoader`), so 0 and 1 workers
    train on the same batches; false: from the training process's own stream."""
    threads: int | None = None
    """torch.set_num_threads for this process; None leaves torch's default."""
    channels_last: bool = False
    preload: bool = False
    """Decode the training and validation images once into memory (small datasets)."""
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
class EpisodicConfig:
    """Episodic training (``mode: episodic``): tasks of base classes, a meta-learned peer.

    An epoch is ``episodes_per_epoch`` random tasks (``optim.batch_size`` tasks a step);
    validation scores a fixed set of ``val_episodes`` base-class tasks of ``data.val_list``
    drawn from ``val_seed`` with the class-IoU protocol (mIoU over base classes), and the
    checkpoint is selected on it. ``optim.label_smoothing`` applies to the peers' losses
    (the papers use none: set it to 0).
    """

    model: Literal["panet", "pfenet"] = "panet"
    """"panet": end to end from ``model`` (as base training); "pfenet": a head on the frozen
    trunk of ``trunk``, trained on cached trunk features of ``data.train_list`` at
    ``data.val_size`` (no augmentation then)."""
    shots: int = 1
    episodes_per_epoch: int = 1000
    val_episodes: int = 500
    val_seed: int = 0
    trunk: str | None = None
    """pfenet: the fold's base checkpoint (a best.pt of base training on the same fold); its
    architecture replaces ``model``, its bytes are part of the run's key."""
    feature_dtype: FeatureDtype = "float16"
    """pfenet: storage of the cached trunk features."""
    panet: PANetConfig = field(default_factory=PANetConfig)
    pfenet: PFENetConfig = field(default_factory=PFENetConfig)


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    mode: Literal["base", "episodic"] = "base"
    """"base": cross-entropy on base classes (PSPNet); "episodic": see ``episodic``."""
    episodic: EpisodicConfig = field(default_factory=EpisodicConfig)


RUN_CONTROL_KEYS = ("out_dir", "device", "workers", "threads", "resume", "stop_after_epoch",
                    "progress", "val_batch_size", "preload")


def with_run(cfg: TrainConfig, **changes: Any) -> TrainConfig:
    """``cfg`` with some ``run`` fields replaced."""
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, **changes))


def with_episodic(cfg: TrainConfig, **changes: Any) -> TrainConfig:
    """``cfg`` with some ``episodic`` fields replaced (e.g. ``trunk=str(best_pt)``)."""
    return dataclasses.replace(cfg, episodic=dataclasses.replace(cfg.episodic, **changes))
