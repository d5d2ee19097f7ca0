"""What ``fsstools evaluate`` runs with ``protocol: generalized`` (:class:`GFSSEvalConfig`),
checked when loaded, and where its results go.

An eval YAML with ``protocol: generalized`` scores the generalized few-shot protocol
(:mod:`fsstools.evaluation.generalized`) instead of binary episodes: one support set per
run, every other image a query with all its classes, base and novel mIoU. Without the key
a YAML is an :class:`fsstools.evaluation.config.EvalConfig`.

Example:
    >>> cfg = GFSSEvalConfig(shots=(1,), n_runs=2, methods=("diam",))
    >>> cfg.protocol, list(cfg.method_configs())
    ('generalized', ['base_model', 'diam'])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fsstools import config as config_lib
from fsstools import paths
from fsstools.constants import FEATURE_DTYPES, FeatureDtype
from fsstools.data import splits
from fsstools.data.splits import Dataset, Scheme
from fsstools.errors import ConfigError
from fsstools.evaluation.config import EvalConfig, check_size_and_device
from fsstools.evaluation.generalized_scoring import BASE_MODEL
from fsstools.evaluation.generalized_stream import FEATURE_CACHE_GB
from fsstools.inference.generalized import (
    GFSS_METHODS,
    PI_STRATEGIES,
    GFSSConfig,
    resolve_gfss_method,
)

PROTOCOL_KEY = "protocol"
"""The key of an eval YAML that selects this config."""
GENERALIZED = "generalized"


def pi_label(strategy: str) -> str:
    """Label of DIaM with the prior ``strategy`` ("self", DIaM's own, is plain "diam")."""
    return "diam" if strategy == "self" else f"diam pi={strategy}"


def method_configs(methods: Sequence[str], pi_strategies: Sequence[str] = ()
                   ) -> dict[str, GFSSConfig | None]:
    """Label -> method: the base model alone first (None), then ``methods`` (names of
    :data:`fsstools.inference.GFSS_METHODS`), then DIaM with each prior of
    ``pi_strategies`` not already listed (``diam pi=<strategy>``).

    Raises:
        ValueError: an unknown method or prior.
    """
    out: dict[str, GFSSConfig | None] = {BASE_MODEL: None}
    for name in methods:
        out[name] = resolve_gfss_method(name)
    for pi in pi_strategies:
        if pi not in PI_STRATEGIES:
            raise ValueError(f"unknown prior {pi!r}; use one of {', '.join(PI_STRATEGIES)}")
        name = pi_label(pi)
        if name not in out:
            out[name] = dataclasses.replace(GFSS_METHODS["diam"], name=name, pi=pi)
    return out


@dataclass(frozen=True)
class GFSSEvalConfig:
    """What to evaluate under the generalized protocol.

    Attributes:
        protocol: "generalized" (what selects this config in an eval YAML).
        dataset, root, list_file, fold, scheme: the test data and which classes are novel
            (supports and queries both come from ``list_file``).
        size: test-time image size.
        shots, n_runs, seed: support images per novel class, support sets per shot count,
            the seed run r draws from (with r).
        n_queries: queries per run, a seeded subset (0: every image not among the supports).
        methods: names of ``fsstools.inference.GFSS_METHODS``; the base model alone is
            always scored.
        pi_strategies: priors of DIaM's KL term to add as ``diam pi=<strategy>``.
        checkpoint, train_config, train_overrides: the base model, as in ``EvalConfig``.
        device, feature_dtype, n_boot: where to compute, how to store features, bootstrap
            resamples.
        feature_cache_gb: the most disk (GB) the queries' cached features may take; past
            it only the supports' are cached and the queries' are extracted while scoring
            (COCO-20i at 417 pixels: about 245 GB cached; PASCAL-5i: 8.8 GB).
        out_dir: where the CSVs go; None: ``<outputs>/eval/<dataset>-fold<f>-generalized-
            <shots>shot-<hash of this config>``.
    """

    protocol: Literal["generalized"] = GENERALIZED
    dataset: Dataset = "synth"
    root: str = "data/synth/A"
    list_file: str = "lists/val.txt"
    fold: int = 0
    scheme: Scheme = "interleaved"
    size: int = 128
    shots: tuple[int, ...] = (1, 5)
    n_runs: int = 5
    seed: int = 0
    n_queries: int = 0
    methods: tuple[str, ...] = ("gfss_prototypes", "diam_no_kd", "diam")
    pi_strategies: tuple[str, ...] = ()
    checkpoint: str | None = None
    train_config: str | None = "configs/synth/fold0.yaml"
    train_overrides: tuple[str, ...] = ()
    device: str = "cpu"
    feature_dtype: FeatureDtype = "float32"
    feature_cache_gb: float = FEATURE_CACHE_GB
    n_boot: int = 1000
    out_dir: str | None = None

    def __post_init__(self) -> None:
        for key in ("shots", "methods", "pi_strategies", "train_overrides"):
            value = getattr(self, key)
            object.__setattr__(self, key, (value,) if isinstance(value, str) else tuple(value))
        check(self)

    def method_configs(self) -> dict[str, GFSSConfig | None]:
        """Label -> method of :func:`method_configs`."""
        return method_configs(self.methods, self.pi_strategies)

    def base_model_config(self) -> EvalConfig:
        """The binary protocol's config of the same base model and test data: what
        resolves (or trains) the checkpoint and guards the fold."""
        return EvalConfig(
            dataset=self.dataset, root=self.root, list_file=self.list_file, fold=self.fold,
            scheme=self.scheme, size=self.size, checkpoint=self.checkpoint,
            train_config=self.train_config, train_overrides=self.train_overrides,
            device=self.device)


def check(cfg: GFSSEvalConfig) -> None:
    """Raise :class:`ConfigError` naming the key on values ``cfg`` cannot run with."""
    if cfg.protocol != GENERALIZED:
        raise ConfigError(f"protocol {cfg.protocol!r}: this config runs {GENERALIZED!r}; leave "
                          "the key out for binary episodes", key=PROTOCOL_KEY)
    splits.check_split(cfg.dataset, cfg.fold, cfg.scheme)
    if cfg.feature_dtype not in FEATURE_DTYPES:
        raise ConfigError(f"feature_dtype {cfg.feature_dtype!r}: use one of "
                          f"{', '.join(FEATURE_DTYPES)}", key="feature_dtype")
    if not cfg.shots:
        raise ConfigError("shots is empty: give at least one shot count, e.g. shots=[1]",
                          key="shots")
    for key, low in (("shots", 1), ("n_runs", 1), ("n_boot", 1), ("n_queries", 0),
                     ("seed", 0)):
        config_lib.check_at_least(key, list(getattr(cfg, key)) if key == "shots"
                                  else getattr(cfg, key), low=low)
    if not cfg.feature_cache_gb >= 0:
        raise ConfigError(f"feature_cache_gb must be >= 0 (GB), got {cfg.feature_cache_gb}; "
                          "0 streams the queries' features always", key="feature_cache_gb")
    check_size_and_device(cfg.size, cfg.device)
    for key, args in (("methods", (cfg.methods, ())), ("pi_strategies", ((), cfg.pi_strategies))):
        try:
            method_configs(*args)
        except ValueError as err:
            raise ConfigError(f"{key}: {err}", key=key) from None


def is_generalized(path: str | Path | None, overrides: Sequence[str] = ()) -> bool:
    """Whether an eval YAML (and ``--set`` overrides) selects this protocol."""
    data: Mapping[str, Any] = config_lib.read_yaml(path) if path is not None else {}
    merged = config_lib.apply_overrides(data, list(overrides))
    return merged.get(PROTOCOL_KEY) == GENERALIZED


def results_dir(cfg: GFSSEvalConfig) -> Path:
    """``cfg.out_dir``, else a folder of ``<outputs>/eval`` named by the data, fold, shots
    and a hash of ``cfg``."""
    if cfg.out_dir:
        return paths.resolve(cfg.out_dir)
    name = (f"{cfg.dataset}-fold{cfg.fold}-{GENERALIZED}-{'-'.join(map(str, cfg.shots))}shot-"
            f"{config_lib.config_hash(cfg, 8)}")
    return paths.outputs_dir() / "eval" / name
