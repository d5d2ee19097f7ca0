"""Episodic tasks over cached frozen-trunk features: what the PFENet-style head trains on.

The head of :class:`~fsstools.models.pfenet.PFENet` never changes its trunk, so the trunk
runs once per image (at the test-time preprocessing, ``TestTransform(size)``, through
:func:`fsstools.features.ensure_features`) and the head trains on the stored arrays: an
epoch costs the head alone. Random augmentation is then not possible (each image has one
stored view), which PFENet's end-to-end recipe would have.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from fsstools.data import splits
from fsstools.data.base_tasks import BaseEpisodeSampler, task_label_map
from fsstools.data.episodes import EpisodeList
from fsstools.features import FeatureStore


def _task(store: FeatureStore, lut: np.ndarray, query: int, supports: Sequence[int],
          class_id: int) -> tuple[torch.Tensor, ...]:
    rows = list(supports)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    return (t(store.feats[rows].astype(np.float32)),  # (S, C, h, w)
            t(lut[store.masks_small[rows]]).long(),  # (S, h, w)
            t(store.feats[query].astype(np.float32)),  # (C, h, w)
            t(lut[store.masks_full[query]]).long(),  # (H, W)
            torch.tensor(class_id))


class FeatureEpisodes(Dataset):
    """Random base-class tasks over cached trunk features, labelled as
    :mod:`fsstools.data.base_tasks` labels image tasks (novel classes 255).

    Items: ``(support_feats (S, C, h, w), support_masks (S, h, w) at the grid,
    query_feats (C, h, w), query_mask (H, W) at image size, class_id ())``.

    Args:
        store: features of the training images.
        index: class -> rows of ``store`` holding it (``min_fg`` rule).
        dataset, fold, scheme: the split; only base classes are drawn.
        root: the data root (a folder data set's classes are read there).
        shots: supports per task.
        episodes_per_epoch: the dataset's length (each item is a fresh random task).
    """

    def __init__(self, store: FeatureStore, index: dict[int, list[int]], dataset: str,
                 fold: int, shots: int, episodes_per_epoch: int, scheme: str = "interleaved",
                 root: str | Path | None = None) -> None:
        base = splits.base_classes(dataset, fold, scheme, root)
        self.store, self.length = store, episodes_per_epoch
        self.sampler = BaseEpisodeSampler(index, base, shots)
        self.luts = {c: task_label_map(dataset, fold, c, scheme, root) for c in base}

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        query, c, supports = self.sampler.draw()
        return _task(self.store, self.luts[c], query, supports, c)


class FixedFeatureEpisodes(Dataset):
    """The tasks of an episode list (base classes) over cached trunk features."""

    def __init__(self, store: FeatureStore, episodes: EpisodeList) -> None:
        self.store, self.episodes = store, episodes
        self.luts = {c: task_label_map(episodes.dataset, episodes.fold, c, episodes.scheme,
                                       episodes.root)
                     for c in {ep.class_id for ep in episodes.episodes}}

    def __len__(self) -> int:
        return len(self.episodes)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        ep = self.episodes.episodes[i]
        rows = [self.store.index[img] for img, _ in ep.supports]
        return _task(self.store, self.luts[ep.class_id], self.store.index[ep.query[0]], rows,
                     ep.class_id)
