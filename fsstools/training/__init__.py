"""Base training of PSPNet with cross-entropy on the base classes of a fold, and episodic
training of the meta-learned peers (``mode: episodic``, :mod:`~fsstools.training.episodic`).

One entry point for one process and for torchrun::

    fsstools train --config configs/synth/fold0.yaml [--set run.epochs=2] [--resume]
    torchrun --nproc_per_node=4 -m fsstools.cli train --config configs/pascal/fold0.yaml

:mod:`~fsstools.training.config` holds the config schema, :mod:`~fsstools.training.epoch`
the epoch and validation passes, :mod:`~fsstools.training.runtime` seeding, RNG state and
the distributed context, :mod:`~fsstools.training.run` one run's folder and epochs, and
:mod:`~fsstools.training.base` and :mod:`~fsstools.training.episodic` the two kinds of run.
The functions below pick the kind from ``cfg.mode``.
"""

from pathlib import Path

from fsstools.training import base, episodic, run
from fsstools.training.base import build_data
from fsstools.training.config import (
    DataConfig,
    EpisodicConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    with_episodic,
    with_run,
)
from fsstools.training.epoch import train_one_epoch, validate
from fsstools.training.run import Recipe, TrainData, data_fingerprint


def recipe(cfg: TrainConfig) -> Recipe:
    """The kind of run ``cfg.mode`` names."""
    return base.RECIPE if cfg.mode == "base" else episodic.RECIPE


def main(cfg: TrainConfig, data: TrainData | None = None) -> Path:
    """Train (or resume, or skip if done) the run of ``cfg``; returns its folder
    (:func:`fsstools.training.run.train`)."""
    return run.train(cfg, recipe(cfg), data)


def ensure_trained(cfg: TrainConfig, data: TrainData | None = None, force: bool = False
                   ) -> Path:
    """Best checkpoint of ``cfg``'s run, trained if needed
    (:func:`fsstools.training.run.ensure_trained`)."""
    return run.ensure_trained(cfg, recipe(cfg), data, force)


def run_key(cfg: TrainConfig, data_key: str | None = None) -> str:
    """Key of ``cfg``'s run (:func:`fsstools.training.run.run_key`)."""
    return run.run_key(cfg, recipe(cfg), data_key)


def run_directory(cfg: TrainConfig, data_key: str | None = None) -> Path:
    """Folder of ``cfg``'s run (:func:`fsstools.training.run.run_directory`)."""
    return run.run_directory(cfg, recipe(cfg), data_key)


__all__ = [
    "DataConfig",
    "EpisodicConfig",
    "OptimConfig",
    "Recipe",
    "RunConfig",
    "TrainConfig",
    "TrainData",
    "build_data",
    "data_fingerprint",
    "ensure_trained",
    "main",
    "recipe",
    "run_directory",
    "run_key",
    "train_one_epoch",
    "validate",
    "with_episodic",
    "with_run",
]
