"""Episodic (meta-learning) training data: base-class tasks drawn at random, and fixed
base-class validation tasks.

A training task is drawn like an evaluation episode (:mod:`fsstools.data.episodes`), but
among the fold's **base** classes only: a query image holding at least one base class
(``min_fg`` rule), a base class it holds, and K other images holding that class. Its masks
are binary task masks:

- 1 on the task's class (the foreground),
- 0 on background and on every *other base* class,
- 255 (ignored) on every *novel* class and on pixels already 255 (borders, padding).

Novel-class pixels are never foreground and never background: the peers' public code turns
them into background, which teaches the model that those objects are background; here they
are ignored, as in our base training. Validation tasks come from the validation list, are
drawn once from a seed (:func:`fsstools.data.episodes.sample_episodes` restricted to the base
classes) and use the same labelling; novel classes are never validated on.

Randomness comes from torch's global generator (as the training augmentation's does), so a
DataLoader seeded per epoch draws the same tasks again after a resume.

Items of both datasets are ``(support_imgs (S, 3, H, W), support_masks (S, H, W) int64,
query_img (3, H, W), query_mask (H, W) int64, class_id () int64)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from fsstools.constants import IGNORE_INDEX
from fsstools.data import splits, voc
from fsstools.data.datasets import Transform
from fsstools.data.episodes import EpisodeList
from fsstools.data.transforms import to_tensors
from fsstools.errors import DataError

LUT_SIZE = IGNORE_INDEX + 1
"""Mask values are uint8 class ids, so a 256-entry table relabels any mask."""


def task_label_map(dataset: str, fold: int, class_id: int, scheme: str = "interleaved",
                   root: str | Path | None = None
                   ) -> np.ndarray:
    """Lookup table uint8 (256,) from class ids to the labels of a task of ``class_id``.

    ``class_id`` -> 1; background and the other base classes -> 0; novel classes and 255
    -> 255 (see the module doc).

    Raises:
        DataError: ``class_id`` is not a base class of the fold.
    """
    base = splits.base_classes(dataset, fold, scheme, root)
    if class_id not in base:
        raise DataError(
            f"class {class_id} is not a base class of {dataset} fold {fold} (base classes: "
            f"{base}); episodic training and validation use base classes only"
        )
    lut = np.full(LUT_SIZE, IGNORE_INDEX, dtype=np.uint8)
    lut[0] = 0
    lut[base] = 0
    lut[class_id] = 1
    return lut


class BaseEpisodeSampler:
    """Draws (query, class, supports) among base classes, as row indices into a list of images.

    Args:
        index: class id -> rows of the images holding it (``voc.class_index``).
        base_classes: the fold's base classes; other classes of ``index`` are never drawn.
        shots: supports per task.

    Raises:
        DataError: no base class is held by ``shots + 1`` images.
    """

    def __init__(self, index: dict[int, Sequence[int]], base_classes: Sequence[int],
                 shots: int) -> None:
        if shots < 1:
            raise DataError(f"episodic shots must be >= 1, got {shots}; set episodic.shots")
        self.shots = shots
        self.holders = {c: torch.as_tensor(sorted(index.get(c, ())), dtype=torch.long)
                        for c in base_classes}
        self.holders = {c: rows for c, rows in self.holders.items() if len(rows) > shots}
        if not self.holders:
            raise DataError(
                f"no base class is held by {shots + 1} images (the query and {shots} "
                "supports); use fewer shots, a larger list, or a lower min_fg"
            )
        self.classes = torch.tensor(sorted(self.holders))
        rows = sorted({int(r) for held in self.holders.values() for r in held})
        self.queries = torch.tensor(rows)
        # (n_queries, n_classes) True where the query holds the class: the query's choices.
        self.holds = torch.zeros(len(rows), len(self.classes), dtype=torch.bool)
        position = {r: i for i, r in enumerate(rows)}
        for j, c in enumerate(self.classes.tolist()):
            self.holds[[position[int(r)] for r in self.holders[c]], j] = True

    def draw(self) -> tuple[int, int, list[int]]:
        """A query row (uniform over images holding a base class), a class (uniform among
        the base classes it holds) and ``shots`` distinct other rows holding that class."""
        q = int(torch.randint(len(self.queries), ()))
        choices = self.holds[q].nonzero().flatten()
        c = int(self.classes[choices[int(torch.randint(len(choices), ()))]])
        query = int(self.queries[q])
        pool = self.holders[c][self.holders[c] != query]
        chosen = pool[torch.randperm(len(pool))[: self.shots]]
        return query, c, chosen.tolist()


def _stack_task(samples: list[dict], class_id: int) -> tuple[torch.Tensor, ...]:
    """The item tuple from transformed samples, query last."""
    *supports, query = samples
    return (torch.stack([s["image"] for s in supports]),  # (S, 3, H, W)
            torch.stack([s["mask"] for s in supports]),  # (S, H, W)
            query["image"], query["mask"], torch.tensor(class_id))


class _Images:
    """Decoded images and class-id masks of a list of pairs, optionally held in memory."""

    def __init__(self, root: Path, pairs: Sequence[tuple[str, str]], n_classes: int,
                 preload: bool) -> None:
        self.root, self.pairs, self.n_classes = root, list(pairs), n_classes
        self.decoded = [self._load(i) for i in range(len(self.pairs))] if preload else None

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return voc.load_pair(self.root, *self.pairs[i], self.n_classes)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.decoded[i] if self.decoded is not None else self._load(i)


class EpisodicTrainDataset(Dataset):
    """Random base-class tasks from a training list (see the module doc).

    Args:
        root: data root the list's paths are relative to.
        list_file: image list (see ``voc.read_pairs``).
        dataset, fold, scheme: the split; only its base classes are drawn.
        shots: supports per task.
        episodes_per_epoch: the dataset's length (each item is a fresh random task).
        transform: applied to each image of a task on its own, e.g.
            ``transforms.TrainTransform(...)`` (the base training's augmentation).
        min_fg: pixels a class must cover for an image to hold it (None: scaled 2048 rule).
        preload: decode the images holding a base class once, now, into memory.
    """

    def __init__(self, root: str | Path, list_file: str | Path, dataset: str, fold: int,
                 shots: int, episodes_per_epoch: int, transform: Transform | None = None,
                 scheme: str = "interleaved", min_fg: int | None = None,
                 preload: bool = False) -> None:
        if episodes_per_epoch < 1:
            raise DataError(f"episodes_per_epoch must be >= 1, got {episodes_per_epoch}; "
                            "set episodic.episodes_per_epoch")
        self.dataset, self.fold, self.scheme = dataset, fold, scheme
        self.base_classes = splits.base_classes(dataset, fold, scheme, root)
        n_classes = splits.n_classes(dataset, root)
        pairs = list(dict.fromkeys(voc.read_pairs(root, list_file)))
        index = voc.class_index(root, pairs, n_classes, min_fg)
        keep = sorted({i for c in self.base_classes for i in index[c]})
        row = {i: r for r, i in enumerate(keep)}
        self.sampler = BaseEpisodeSampler(
            {c: [row[i] for i in index[c]] for c in self.base_classes}, self.base_classes, shots)
        self.images = _Images(Path(root), [pairs[i] for i in keep], n_classes, preload)
        self.transform = transform or to_tensors
        self.length = episodes_per_epoch
        self.luts = {c: task_label_map(dataset, fold, c, scheme, root)
                     for c in self.base_classes}

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        """A fresh random task (``i`` only counts items; the task comes from the RNG)."""
        query, c, supports = self.sampler.draw()
        samples = []
        for r in (*supports, query):
            image, mask = self.images[r]
            samples.append(self.transform(image, self.luts[c][mask]))
        return _stack_task(samples, c)


class FixedEpisodeDataset(Dataset):
    """The tasks of an episode list (e.g. seeded base-class validation episodes), with
    novel-class pixels ignored.

    Args:
        episodes: tasks whose classes are base classes of ``episodes.fold``.
        transform: e.g. ``transforms.TestTransform(size)``.
        preload: decode every image of the list once, now, into memory.
    """

    def __init__(self, episodes: EpisodeList, transform: Transform | None = None,
                 preload: bool = False) -> None:
        self.episodes = episodes
        self.luts = {c: task_label_map(episodes.dataset, episodes.fold, c, episodes.scheme,
                                       episodes.root)
                     for c in {ep.class_id for ep in episodes.episodes}}
        pairs = list(dict.fromkeys(p for ep in episodes.episodes for p in (ep.query, *ep.supports)))
        self.row = {p: r for r, p in enumerate(pairs)}
        self.images = _Images(Path(episodes.root), pairs, splits.n_classes(episodes.dataset, episodes.root),
                              preload)
        self.transform = transform or to_tensors

    def __len__(self) -> int:
        return len(self.episodes)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        ep = self.episodes.episodes[i]
        samples = []
        for pair in (*ep.supports, ep.query):
            image, mask = self.images[self.row[pair]]
            samples.append(self.transform(image, self.luts[ep.class_id][mask]))
        return _stack_task(samples, ep.class_id)
