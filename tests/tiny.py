"""Tiny hand-made studies and result rows for tests of the layers above evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fsstools import config as config_lib
from fsstools.data import splits
from fsstools.data.episodes import Episode, EpisodeList
from fsstools.evaluation.pipeline import EvalConfig, Study
from fsstools.features import FeatureStore
from fsstools.models import ModelConfig
from fsstools.models.pfenet import PFENetConfig
from fsstools.training import TrainConfig
from fsstools.training.config import DataConfig

TINY_MODEL = ModelConfig(arch="small", widths=(4, 8, 8, 8), stem_width=4, bottleneck_dim=8,
                         bins=(1, 2))
"""A PSPNet small enough to train for a few steps in a test."""
TINY_PFENET = PFENetConfig(reduce_dim=8, bins=(4, 2))
"""A PFENet-style head to match ``TINY_MODEL``."""
FEATURE_GRID = 4
IMAGE_SIZE = 16


def training_record(fold: int, dataset: str = "synth", scheme: str = "interleaved") -> dict:
    """What a trained checkpoint records of its training (``classes``: the fold's base
    classes, ``config``: a training config of that split), to add to a hand-made one."""
    cfg = TrainConfig(data=DataConfig(dataset=dataset, fold=fold, scheme=scheme))
    return {"classes": splits.base_classes(dataset, fold, scheme),
            "config": config_lib.to_dict(cfg)}


def tiny_study(shots: tuple[int, ...] = (1, 2), n_images: int = 8, channels: int = 8) -> Study:
    """A Study over a hand-made FeatureStore: images alternate between classes 1 and 2, each
    holding its class in the top-left 2x2 cells of a 4x4 grid; every image is a query once."""
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(n_images, channels, FEATURE_GRID, FEATURE_GRID)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    classes = [1 + i % 2 for i in range(n_images)]
    small = np.zeros((n_images, FEATURE_GRID, FEATURE_GRID), dtype=np.uint8)
    for i, c in enumerate(classes):
        small[i, :2, :2] = c
    scale = IMAGE_SIZE // FEATURE_GRID
    full = small.repeat(scale, axis=1).repeat(scale, axis=2)
    names = [(f"JPEGImages/{i}.jpg", f"SegmentationClass/{i}.png") for i in range(n_images)]
    store = FeatureStore(
        feats,
        small,
        np.ones_like(small, bool),
        full,
        np.ones_like(full, bool),
        {img: i for i, (img, _) in enumerate(names)},
        key="tiny",
    )
    lists = {}
    for k in shots:
        eps = []
        for q in range(n_images):
            same = [j for j in range(n_images) if classes[j] == classes[q] and j != q]
            eps.append(Episode(names[q], classes[q], tuple(names[j] for j in same[:k])))
        lists[(k, 0)] = EpisodeList(
            "/nonexistent",
            "lists/val.txt",
            "synth",
            0,
            "interleaved",
            k,
            0,
            tuple(eps),
            hash=f"tiny-{k}",
        )
    cfg = EvalConfig(
        root="/nonexistent",
        size=IMAGE_SIZE,
        shots=shots,
        n_episodes=n_images,
        checkpoint=None,
        train_config=None,
    )
    return Study(cfg, Path("none.pt"), lists, store)


def fake_rows(methods=("a", "b"), folds=(0, 1), n: int = 30, seed: int = 0) -> pd.DataFrame:
    """Per-episode rows like study.score's, with random intersections and unions."""
    rng = np.random.default_rng(seed)
    frames = []
    for m_i, m in enumerate(methods):
        for fold in folds:
            union = rng.integers(50, 100, n)
            inter = (union * (0.4 + 0.2 * m_i) + rng.integers(0, 10, n)).astype(int)
            inter = np.minimum(inter, union)
            frames.append(
                pd.DataFrame(
                    {
                        "method": m,
                        "fold": fold,
                        "shots": 1,
                        "seed": 0,
                        "episode": np.arange(n),
                        "class_id": 1 + np.arange(n) % 5 + 5 * fold,
                        "fg_inter": inter,
                        "fg_union": union,
                        "bg_inter": 900 - union,
                        "bg_union": 950 - inter,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)
