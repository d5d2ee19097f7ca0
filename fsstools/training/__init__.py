"""Base training of PSPNet with cross-entropy on the base classes of a fold, and episodic
training of the meta-learned peers (``mode: episodic``, :mod:`~fsstools.training.episodic`).

One entry point for one process and for torchrun::

    fsstools train --config configs/synth/fold0.yaml [--set run.epochs=2] [--resume]
    torchrun --nproc_per_node=4 -m fsstools.training --config configs/pascal/fold0.yaml

:mod:`~fsstools.training.config` holds the config schema, :mod:`~fsstools.training.loop`
the epoch and validation passes, :mod:`~fsstools.training.runtime` seeding, RNG state and
the distributed context, and :mod:`~fsstools.training.run` one run's folder and epochs.
"""

from fsstools.training.config import (
    DataConfig,
    EpisodicConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    with_episodic,
    with_run,
)
from fsstools.training.loop import train_one_epoch, validate
from fsstools.training.run import (
    TrainData,
    build_data,
    data_fingerprint,
    ensure_trained,
    main,
    run_directory,
    run_key,
)

__all__ = [
    "DataConfig",
    "EpisodicConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "TrainData",
    "build_data",
    "data_fingerprint",
    "ensure_trained",
    "main",
    "run_directory",
    "run_key",
    "train_one_epoch",
    "validate",
    "with_episodic",
    "with_run",
]
