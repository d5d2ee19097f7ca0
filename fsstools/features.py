"""Backbone features for an episode list, extracted once per checkpoint and cached.

Episodes share images (a val image is query in one task and support in many others), so
features are computed per unique image, stored as arrays, and gathered per task batch.
The cache key covers the checkpoint's bytes, the network that reads it, the list of images
with the fingerprints of their files (regenerated or edited images and masks are extracted
again), the preprocessing and the code version, so any inference variant re-reads the same
features instead of running the backbone again, and nothing stale is ever served.

The same cache serves the PFENet-style head's training: its trunk never changes, so the
trunk runs once per training and validation image (``model=`` a PFENet around the trunk,
``normalize=False``) and the head trains on the stored arrays.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fsstools import cache, paths
from fsstools.cache import atomic_dir, file_hash
from fsstools.data import splits, voc
from fsstools.data.episodes import EpisodeList, episode_mask
from fsstools.data.transforms import TestTransform
from fsstools.errors import MissingError
from fsstools.progress import bar as progress_bar


@dataclass
class FeatureStore:
    """Per-image features and masks on the feature grid and at the padded image size.

    Attributes:
        feats: (N, C, h, w) L2-normalised over C (float16 or float32, possibly memory-mapped).
        masks_small: (N, h, w) uint8 class ids downsampled by nearest neighbour, 255 kept.
        valid_small: (N, h, w) bool, False on padding.
        masks_full: (N, H, W) uint8 padded class-id masks (padding 255) for scoring.
        valid_full: (N, H, W) bool, False on padding.
        index: image relative path -> row.
        key: the cache key these arrays were stored under.
    """

    feats: np.ndarray
    masks_small: np.ndarray
    valid_small: np.ndarray
    masks_full: np.ndarray
    valid_full: np.ndarray
    index: dict[str, int]
    key: str


@dataclass
class TaskBatch:
    """A batch of B tasks gathered from a FeatureStore (tensors on the requested device)."""

    support_feats: torch.Tensor  # (B, S, C, h, w)
    support_masks: torch.Tensor  # (B, S, h, w) in {0, 1, 255}
    query_feats: torch.Tensor  # (B, C, h, w)
    query_mask_small: torch.Tensor  # (B, h, w) in {0, 1, 255}; analysis and oracle only
    query_valid_small: torch.Tensor  # (B, h, w) bool, False on padding
    query_mask: torch.Tensor  # (B, H, W) in {0, 1, 255}; scoring only
    class_id: torch.Tensor  # (B,)
    episode_idx: torch.Tensor  # (B,) positions in the episode list


def episode_images(episodes: EpisodeList) -> list[tuple[str, str]]:
    """Unique (image, mask) pairs used by the episodes, in first-use order."""
    seen: dict[str, str] = {}
    for ep in episodes.episodes:
        for img, mask in (ep.query, *ep.supports):
            seen.setdefault(img, mask)
    return list(seen.items())


@dataclass(frozen=True)
class FeatureSettings:
    """How features are extracted; with the checkpoint and the images, what keys them.

    Attributes:
        size: the images' side after resizing and padding (the test transform).
        dtype: storage of the features, "float32" or "float16".
        normalize: unit-length features per pixel (what inference reads); False keeps the
            network's own scale (what the PFENet-style head trains on).
    """

    size: int
    dtype: str = "float32"
    normalize: bool = True


def features_key(checkpoint: Path, pairs: Sequence[tuple[str, str]], root: Path,
                 settings: FeatureSettings, extractor: str = "checkpoint") -> str:
    """Key of the features of ``pairs`` under ``checkpoint`` (see the module doc)."""
    return cache.cache_key(
        stage="features",
        checkpoint=file_hash(checkpoint, 16),
        extractor=extractor,
        images=[p[0] for p in pairs],
        files=cache.fingerprint_pairs(root, pairs),
        settings=asdict(settings),
        code=cache.code_version(__name__),
    )


def _chunks(items: Iterable, n: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def to_grid(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(N, H, W) masks -> (N, h, w) on the feature grid by nearest neighbour."""
    return F.interpolate(x[:, None].float(), size=hw, mode="nearest")[:, 0]


@torch.no_grad()
def feature_batches(model: torch.nn.Module, samples: Iterable[dict[str, Any]],
                    device: str | torch.device = "cpu", batch_size: int = 32,
                    normalize: bool = True) -> Iterator[dict[str, torch.Tensor]]:
    """The one feature-extraction loop: ``model.extract_features`` over ``samples`` (what a
    :class:`TestTransform` returns), ``batch_size`` at a time, samples made only as needed.

    Yields:
        Per batch of b samples, on the CPU: ``feats`` (b, C, h, w) float32 (unit length per
        pixel when ``normalize``), ``valid_full`` (b, H, W) and ``valid_small`` (b, h, w)
        bool; and, where the samples carry masks, ``masks_full`` (b, H, W) and
        ``masks_small`` (b, h, w) int64.
    """
    for chunk in _chunks(samples, batch_size):
        images = torch.stack([s["image"] for s in chunk]).to(device)
        feats = model.extract_features(images).float()  # (b, C, h, w)
        if normalize:
            feats = F.normalize(feats, dim=1)
        feats = feats.cpu()
        hw = tuple(feats.shape[-2:])
        valid = torch.stack([s["valid"] for s in chunk])  # (b, H, W)
        batch = {"feats": feats, "valid_full": valid, "valid_small": to_grid(valid, hw).bool()}
        if "mask" in chunk[0]:
            masks = torch.stack([s["mask"] for s in chunk])  # (b, H, W)
            batch.update(masks_full=masks, masks_small=to_grid(masks, hw).long())
        yield batch


def extract(
    model: torch.nn.Module,
    root: str | Path,
    pairs: Sequence[tuple[str, str]],
    n_classes: int,
    settings: FeatureSettings,
    out_dir: Path,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    progress: bool = True,
) -> None:
    """Run :func:`feature_batches` over ``pairs`` and write the arrays into ``out_dir``.

    Arrays are written chunk by chunk into memory-mapped ``.npy`` files, so memory stays
    bounded by one batch whatever the number of images.
    """
    root = Path(root)
    transform = TestTransform(settings.size)
    model.eval().to(device)
    n = len(pairs)
    samples = (transform(*voc.load_pair(root, img, mask, n_classes)) for img, mask in pairs)
    dtypes = {"feats": settings.dtype, "masks_small": np.uint8, "valid_small": bool,
              "masks_full": np.uint8, "valid_full": bool}
    arrays: dict[str, np.ndarray] = {}
    row = 0
    bar = progress_bar(total=n, desc="extract features", unit="img", disable=not progress)
    try:  # the bar is closed on an error too, so the error starts on a line of its own
        for batch in feature_batches(model, samples, device, batch_size, settings.normalize):
            parts = {name: batch[name].numpy().astype(kind) for name, kind in dtypes.items()}
            if not arrays:
                for name, part in parts.items():
                    arrays[name] = np.lib.format.open_memmap(
                        out_dir / f"{name}.npy", mode="w+", dtype=part.dtype,
                        shape=(n, *part.shape[1:]),
                    )
            b = len(batch["feats"])
            for name, part in parts.items():
                arrays[name][row : row + b] = part
            row += b
            bar.update(b)
    finally:
        bar.close()
    for arr in arrays.values():
        arr.flush()
    index = {img: i for i, (img, _) in enumerate(pairs)}
    (out_dir / "index.json").write_text(json.dumps(index))


def open_store(path: Path, key: str, mmap: bool = True) -> FeatureStore:
    mode = "r" if mmap else None
    arrays = {
        name: np.load(path / f"{name}.npy", mmap_mode=mode)
        for name in ("feats", "masks_small", "valid_small", "masks_full", "valid_full")
    }
    index = json.loads((path / "index.json").read_text())
    return FeatureStore(index=index, key=key, **arrays)


def episode_list_images(lists: Sequence[EpisodeList]) -> list[tuple[str, str]]:
    """Unique (image, mask) pairs over several episode lists, in first-use order."""
    seen: dict[str, str] = {}
    for el in lists:
        seen.update((img, mask) for img, mask in episode_images(el) if img not in seen)
    return list(seen.items())


def ensure_features(
    checkpoint: str | Path,
    root: str | Path,
    pairs: Sequence[tuple[str, str]],
    dataset: str,
    settings: FeatureSettings,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    cache_dir: Path | None = None,
    progress: bool = True,
    force: bool = False,
    model: torch.nn.Module | None = None,
) -> FeatureStore:
    """Features of the images ``pairs`` under ``checkpoint``, from the cache or extracted.

    Pass the union of the images of all episode lists of a study (``episode_list_images``)
    so that one extraction serves every shot count, seed and method. Reuse is announced;
    ``force`` extracts again. The arrays are built in a temporary folder and renamed into
    place, so an interrupted extraction leaves no partial cache entry.

    Args:
        dataset: the class table of the masks.
        model: the network to run instead of the one ``checkpoint`` holds (a PFENet around
            the checkpoint's frozen trunk); its class is part of the key.
    """
    from fsstools.models.checkpoints import load_model

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise MissingError(
            f"checkpoint {checkpoint} does not exist; train one with `fsstools train --config ...`"
        )
    extractor = "checkpoint" if model is None else type(model).__name__
    key = features_key(checkpoint, pairs, paths.resolve(root), settings, extractor)
    final = (Path(cache_dir) if cache_dir is not None else paths.cache_dir("features")) / key
    with cache.locked(f"features-{key}"):
        if (final / "index.json").is_file() and not force:
            if progress:
                cache.announce_reuse(f"features of {len(pairs)} images", final / "index.json")
            return open_store(final, key)
        if final.exists():
            shutil.rmtree(final)  # an entry without its index is incomplete
        if model is None:  # a bad checkpoint fails before any folder exists
            model = load_model(checkpoint, device)
        with atomic_dir(final) as tmp:
            n_classes = splits.n_classes(dataset, root)
            extract(model, root, pairs, n_classes, settings, tmp, device, batch_size, progress)
    return open_store(final, key)


def restore_lost_foreground(
    support_masks: np.ndarray, masks_full: np.ndarray, s_rows: np.ndarray, cls: np.ndarray
) -> int:
    """Give back a foreground cell to supports whose object vanished on the feature grid.

    Nearest-neighbour downsampling keeps one pixel per cell, so a small or thin object that
    passed the min-foreground rule can lose every pixel (more often on coarse grids). Such
    a support would leave no prototype; instead the cell holding the largest share of the
    object is marked foreground (documented fallback; counted in the return value).

    Args:
        support_masks: (B, S, h, w) binary task masks, modified in place.
        masks_full: (N, H, W) class-id masks of the store.
        s_rows: (B, S) store rows of the supports.
        cls: (B,) class of each task.

    Returns:
        Number of supports restored.
    """
    lost = ~(support_masks == 1).any(axis=(2, 3))  # (B, S)
    h, w = support_masks.shape[-2:]
    for b, s in zip(*np.nonzero(lost), strict=True):
        obj = torch.from_numpy(masks_full[s_rows[b, s]] == cls[b]).float()[None, None]
        share = F.adaptive_avg_pool2d(obj, (h, w))[0, 0]  # (h, w) object share per cell
        if float(share.max()) > 0:
            cell = int(share.flatten().argmax())
            support_masks[b, s].reshape(-1)[cell] = 1
    return int(lost.sum())


def task_batch(
    store: FeatureStore,
    episodes: EpisodeList,
    idx: Sequence[int],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> TaskBatch:
    """Gather the tasks ``idx`` of ``episodes`` from ``store`` as a TaskBatch.

    All tasks in one batch must have the same number of shots. Support objects lost by
    the downsampling to the feature grid are restored (see ``restore_lost_foreground``).
    """
    eps = [episodes.episodes[i] for i in idx]
    shots = {len(ep.supports) for ep in eps}
    if len(shots) != 1:
        raise ValueError(f"tasks {list(idx)} mix shot counts {sorted(shots)}; batch equal shots")
    q_rows = np.array([store.index[ep.query[0]] for ep in eps])
    s_rows = np.array([[store.index[img] for img, _ in ep.supports] for ep in eps])  # (B, S)
    cls = np.array([ep.class_id for ep in eps])

    def t(a: np.ndarray, dt: torch.dtype | None = None) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dt)

    support_ids = store.masks_small[s_rows.reshape(-1)].reshape(
        *s_rows.shape, *store.masks_small.shape[1:]
    )
    support_masks = episode_mask(support_ids, cls[:, None, None, None])  # (B, S, h, w)
    restore_lost_foreground(support_masks, store.masks_full, s_rows, cls)
    return TaskBatch(
        support_feats=t(store.feats[s_rows.reshape(-1)], dtype).unflatten(0, s_rows.shape),
        support_masks=t(support_masks),
        query_feats=t(store.feats[q_rows], dtype),
        query_mask_small=t(episode_mask(store.masks_small[q_rows], cls[:, None, None])),
        query_valid_small=t(store.valid_small[q_rows]),
        query_mask=t(episode_mask(store.masks_full[q_rows], cls[:, None, None])),
        class_id=t(cls),
        episode_idx=t(np.asarray(idx)),
    )
