"""Frozen-trunk features of training and validation images, cached, and the episodic tasks
the PFENet-style head trains on.

The head of :class:`~fsstools.models.pfenet.PFENet` never changes its trunk, so the trunk
runs once per image (at the test-time preprocessing, ``TestTransform(size)``) and the head
trains on the stored arrays: an epoch costs the head alone. Random augmentation is then not
possible (each image has one stored view), which PFENet's end-to-end recipe would have.

The cache mirrors :mod:`fsstools.features` (which sits above training and serves the test
images): arrays written chunk by chunk into memory-mapped ``.npy`` files inside a temporary
folder renamed into place, under a key of the trunk checkpoint's bytes, the images and the
fingerprints of their files, the size, the dtype and the code version; reuse is announced.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from fsstools import cache, paths
from fsstools.artifacts import atomic_dir
from fsstools.data import splits, voc
from fsstools.data.episodes import EpisodeList
from fsstools.data.episodic import BaseEpisodeSampler, task_label_map
from fsstools.data.transforms import TestTransform
from fsstools.models.pfenet import PFENet

ARRAYS = ("feats", "masks_small", "masks_full")


@dataclass
class FrozenStore:
    """Trunk features and class-id masks of a list of images (arrays possibly memory-mapped).

    Attributes:
        feats: (N, C, h, w) from ``PFENet.extract_features``.
        masks_small: (N, h, w) uint8 class ids at the feature grid (nearest neighbour).
        masks_full: (N, H, W) uint8 class ids at the padded image size (padding 255).
        index: image relative path -> row.
        key: the cache key.
    """

    feats: np.ndarray
    masks_small: np.ndarray
    masks_full: np.ndarray
    index: dict[str, int]
    key: str


def frozen_key(trunk_hash: str, root: Path, pairs: Sequence[tuple[str, str]], size: int,
               dtype: str) -> str:
    """Cache key of the trunk features of ``pairs`` (see the module doc)."""
    return cache.cache_key(
        stage="frozen_features",
        trunk=trunk_hash,
        images=[p[0] for p in pairs],
        files=cache.fingerprint_pairs(root, pairs),
        size=size,
        dtype=dtype,
        code=cache.code_version(__name__),
    )


@torch.no_grad()
def _extract(model: PFENet, root: Path, pairs: Sequence[tuple[str, str]], n_classes: int,
             size: int, out_dir: Path, device: torch.device, dtype: str, batch_size: int,
             progress: bool) -> None:
    transform = TestTransform(size)
    arrays: dict[str, np.ndarray] = {}
    row = 0
    bar = tqdm(total=len(pairs), desc="trunk features", unit="img", disable=not progress)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        samples = [transform(*voc.load_pair(root, img, mask, n_classes)) for img, mask in chunk]
        feats = model.extract_features(torch.stack([s["image"] for s in samples]).to(device))
        masks = torch.stack([s["mask"] for s in samples])  # (b, H, W)
        small = F.interpolate(masks[:, None].float(), size=feats.shape[-2:], mode="nearest")
        parts = {"feats": feats.cpu().numpy().astype(dtype),
                 "masks_small": small[:, 0].numpy().astype(np.uint8),  # (b, h, w)
                 "masks_full": masks.numpy().astype(np.uint8)}
        if not arrays:
            arrays = {name: np.lib.format.open_memmap(
                out_dir / f"{name}.npy", mode="w+", dtype=part.dtype,
                shape=(len(pairs), *part.shape[1:])) for name, part in parts.items()}
        for name, part in parts.items():
            arrays[name][row : row + len(chunk)] = part
        row += len(chunk)
        bar.update(len(chunk))
    bar.close()
    for arr in arrays.values():
        arr.flush()
    (out_dir / "index.json").write_text(json.dumps({img: i for i, (img, _) in enumerate(pairs)}))


def ensure_frozen_features(model: PFENet, trunk_hash: str, root: str | Path,
                           pairs: Sequence[tuple[str, str]], dataset: str, size: int,
                           device: torch.device | str = "cpu", dtype: str = "float16",
                           batch_size: int = 64, progress: bool = True) -> FrozenStore:
    """Trunk features of ``pairs`` (cached; see the module doc).

    Args:
        model: a PFENet holding the frozen trunk (its head is not used).
        trunk_hash: content hash of the trunk's checkpoint file (part of the key).
        root: data root of ``pairs``.
        pairs: (image, mask) paths relative to ``root``.
        dataset: sets the class count the masks are checked against.
        size: test-time image size (``TestTransform``).
        device: where the trunk runs.
        dtype: storage of the features, "float16" or "float32".
    """
    root = paths.resolve(root)
    key = frozen_key(trunk_hash, root, pairs, size, dtype)
    final = paths.cache_dir("frozen_features") / key
    with cache.locked(f"frozen-{key}"):
        if (final / "index.json").is_file():
            if progress:
                cache.announce_reuse(f"trunk features of {len(pairs)} images",
                                     final / "index.json")
        else:
            if final.exists():
                shutil.rmtree(final)  # an entry without its index is incomplete
            with atomic_dir(final) as tmp:
                _extract(model.eval().to(device), root, pairs, splits.n_classes(dataset, root), size,
                         tmp, torch.device(device), dtype, batch_size, progress)
    arrays = {name: np.load(final / f"{name}.npy", mmap_mode="r") for name in ARRAYS}
    index = json.loads((final / "index.json").read_text())
    return FrozenStore(index=index, key=key, **arrays)


def _task(store: FrozenStore, lut: np.ndarray, query: int, supports: Sequence[int],
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
    :mod:`fsstools.data.episodic` labels image tasks (novel classes 255).

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

    def __init__(self, store: FrozenStore, index: dict[int, list[int]], dataset: str,
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

    def __init__(self, store: FrozenStore, episodes: EpisodeList) -> None:
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
