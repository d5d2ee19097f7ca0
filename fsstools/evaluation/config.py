"""What an evaluation runs (:class:`EvalConfig`, checked when loaded) and where its results go.

Every name and value is checked when the config is built, so a typo in a method, dataset
or fold, or a negative shot count, stops ``fsstools evaluate`` before anything is trained,
sampled or extracted. Results go to a folder named by dataset, fold, shots and a hash of
the config, so two configurations never overwrite each other; an explicit ``out_dir`` that
holds another configuration's results is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from fsstools import config as config_lib
from fsstools import paths
from fsstools.constants import FEATURE_DTYPES, FeatureDtype
from fsstools.data import splits
from fsstools.data.episodes import EpisodeList
from fsstools.data.splits import Dataset, Scheme
from fsstools.data.transforms import FEATURE_STRIDE
from fsstools.errors import ConfigError, ConflictError, did_you_mean
from fsstools.inference import resolve_methods

DEFAULT_METHODS = ("inductive", "ce_support", "prototype", "ce", "ce_h", "ce_kl", "repri",
                   "oracle_repri")
CONFIG_NAME = "config.yaml"
"""The resolved config written next to every result."""
RESULTS_HASH_LENGTH = 8


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate: which data, which episodes, which methods.

    Checked when built, so when loaded, before any expensive step: the names (dataset, fold,
    scheme, methods, device), positive shots, episode counts and sizes (:class:`ConfigError`
    naming the key, the value and the valid choices).

    Attributes:
        dataset: "synth", "pascal" or "coco" (the class table of the test data).
        root: data root holding the test list.
        list_file: image list of the test split, relative to ``root``.
        fold, scheme: which classes are novel.
        coco_to_pascal: test PASCAL classes absent from COCO fold ``fold``'s training classes.
        size: test-time image size (longer side, then padded square).
        shots, seeds, n_episodes: one episode list per (shots, seed), sampled and cached.
        skip_small: leave out (with a warning) test classes held by too few images for the
            shots, instead of stopping.
        episodes: saved episode files (``fsstools episodes``) to score instead of sampling:
            they must hold episodes of ``dataset`` / ``fold``, their own shots and seeds
            replace ``shots``, ``seeds`` and ``n_episodes``, their data root replaces
            ``root``, and features cover their images, the very features ``fsstools
            extract`` caches for the same files, checkpoint, size and dtype.
        methods: names from ``fsstools.inference.METHODS`` or variants: mappings with a
            ``name`` (the label), optionally a ``base`` method and any MethodConfig field,
            e.g. ``{name: repri_tpi2, base: repri, t_pi: [2]}``.
        reference: run every method in its reference-compatible variant.
        checkpoint: explicit base-model checkpoint; else ``train_config`` is trained (cached).
        train_config, train_overrides: training config producing the checkpoint.
        device, feature_dtype, batch_tasks: where and how to compute (results do not depend
            on batch_tasks).
        n_boot: bootstrap resamples for the intervals.
        out_dir: where CSVs and the resolved config go (relative: to the working folder);
            None: a folder of ``<outputs>/eval`` named by dataset, fold, shots and a hash of
            this config (:func:`results_dir`), so runs never overwrite each other.
    """

    dataset: Dataset = "synth"
    root: str = "data/synth/A"
    list_file: str = "lists/val.txt"
    fold: int = 0
    scheme: Scheme = "interleaved"
    coco_to_pascal: bool = False
    size: int = 128
    shots: tuple[int, ...] = (1, 5)
    seeds: tuple[int, ...] = (0,)
    n_episodes: int = 1000
    skip_small: bool = False
    episodes: tuple[str, ...] = ()
    methods: tuple[str | dict[str, Any], ...] = DEFAULT_METHODS
    reference: bool = False
    checkpoint: str | None = None
    train_config: str | None = "configs/synth/fold0.yaml"
    train_overrides: tuple[str, ...] = ()
    device: str = "cpu"
    feature_dtype: FeatureDtype = "float32"
    batch_tasks: int | None = None
    n_boot: int = 1000
    out_dir: str | None = None

    def __post_init__(self) -> None:
        # Plain, comparable values whatever the caller passed (lists, MethodConfigs), so a
        # config written next to its results loads back equal.
        for key in ("shots", "seeds", "episodes", "train_overrides"):
            object.__setattr__(self, key, tuple(getattr(self, key)))
        methods = (self.methods,) if isinstance(self.methods, (str, Mapping)) else self.methods
        object.__setattr__(self, "methods", tuple(
            m if isinstance(m, str) else config_lib.to_dict(m) for m in methods
        ))
        check_config(self)


def _choice(key: str, value: Any, valid: Sequence[Any]) -> None:
    if value not in valid:
        raise ConfigError(
            f"{key} {value!r} is not valid{did_you_mean(value, map(str, valid))}; choose one of "
            f"{', '.join(map(str, valid))}",
            key=key,
        )


def check_size_and_device(size: int, device: str) -> None:
    """Raise :class:`ConfigError` naming the key on a test size below the feature stride or
    a device torch does not know."""
    if size < FEATURE_STRIDE:
        raise ConfigError(f"size={size}: the test size must be at least {FEATURE_STRIDE} "
                          "pixels", key="size")
    try:
        torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {device!r} is not a torch device; use cpu, cuda, "
                          "cuda:1, mps ...", key="device") from None


def check_config(cfg: EvalConfig) -> None:
    """Raise :class:`ConfigError` (with the key at fault) on names and values ``cfg`` cannot
    run with; cheap, so it runs whenever a config is built."""
    _choice("dataset", cfg.dataset, splits.DATASETS)
    _choice("scheme", cfg.scheme, splits.SCHEMES)
    splits.check_fold(cfg.fold)
    _choice("feature_dtype", cfg.feature_dtype, FEATURE_DTYPES)
    if cfg.coco_to_pascal and cfg.dataset != "pascal":
        raise ConfigError("coco_to_pascal tests PASCAL images: set dataset=pascal (the COCO "
                          "base model comes from checkpoint or train_config)", key="dataset")
    counts = {"shots": ("support images per episode", list(cfg.shots)),
              "n_episodes": ("episodes per list", cfg.n_episodes),
              "n_boot": ("bootstrap resamples", cfg.n_boot),
              "batch_tasks": ("tasks per batch, or null", 1 if cfg.batch_tasks is None
                              else cfg.batch_tasks)}
    for key, (what, value) in counts.items():
        config_lib.check_at_least(key, value, what=what)
    if not cfg.shots:
        raise ConfigError("shots is empty: give at least one shot count, e.g. shots=[1]",
                          key="shots")
    if not cfg.seeds:
        raise ConfigError("seeds is empty: give at least one sampling seed, e.g. seeds=[0]",
                          key="seeds")
    check_size_and_device(cfg.size, cfg.device)
    if not cfg.methods:
        raise ConfigError("methods is empty: list at least one method", key="methods")
    try:
        resolve_methods(cfg.methods, cfg.reference)
    except ConfigError as err:
        raise ConfigError(f"methods: {err}", key="methods") from None


def results_dir(cfg: EvalConfig, lists: Mapping[tuple[int, int], EpisodeList] | None = None
                ) -> Path:
    """Where :func:`run_evaluation` writes: ``cfg.out_dir``, else
    ``<outputs>/eval/<dataset>-fold<f>-<shots>shot-<hash>``, the hash covering the config and
    the hashes of the episode lists (so an edited episode file gets its own folder).

    Args:
        lists: the study's episode lists (their shots name the folder when they come from
            files); default ``cfg.shots``.
    """
    if cfg.out_dir:
        return paths.resolve(cfg.out_dir)
    shots = sorted({k for k, _ in lists}) if lists else list(cfg.shots)
    key = config_lib.config_hash({
        "config": config_lib.to_dict(cfg),
        "episodes": sorted(el.hash for el in lists.values()) if lists else [],
    }, RESULTS_HASH_LENGTH)
    data = "coco-to-pascal" if cfg.coco_to_pascal else cfg.dataset
    name = f"{data}-fold{cfg.fold}-{'-'.join(map(str, shots))}shot-{key}"
    return paths.outputs_dir() / "eval" / name


def check_out_dir(cfg: EvalConfig) -> None:
    """An explicit ``out_dir`` holding results of another config is refused (never
    overwritten silently).

    Raises:
        ConflictError: naming the keys that differ and the way out.
    """
    saved = results_dir(cfg) / CONFIG_NAME
    if not cfg.out_dir or not saved.is_file():
        return
    try:
        before = yaml.safe_load(saved.read_text()) or {}
    except yaml.YAMLError:
        before = {}
    now = config_lib.to_dict(cfg)
    differ = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    if differ:
        raise ConflictError(
            f"out_dir {saved.parent} holds the results of another configuration (it differs "
            f"in {', '.join(differ)}); choose another out_dir, or leave out_dir unset to get "
            "a folder per configuration"
        )
