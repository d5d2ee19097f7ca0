"""Torch dataset of base-class training/validation images.

Base training sees base classes only. Each kept image holds at least one base class over
the min-foreground threshold; base classes are relabelled 1..n_base (sorted), background
stays 0, and novel-class pixels become 255 so they are ignored rather than taught as
background.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from fsstools.constants import IGNORE_INDEX
from fsstools.data import splits, voc
from fsstools.data.transforms import to_tensors
from fsstools.errors import DataError

Transform = Callable[[np.ndarray, np.ndarray], dict[str, Any]]


def base_label_map(dataset: str, fold: int, scheme: str = "interleaved",
                   root: str | Path | None = None) -> np.ndarray:
    """A lookup table uint8 (256,) from dataset class ids to base-training labels.

    Background 0 -> 0, base class ``base_classes[i]`` -> ``i + 1``, every novel class and
    255 -> 255.
    """
    lut = np.full(IGNORE_INDEX + 1, IGNORE_INDEX, dtype=np.uint8)
    lut[0] = 0
    for label, c in enumerate(splits.base_classes(dataset, fold, scheme, root), start=1):
        lut[c] = label
    return lut


class BaseTrainDataset(Dataset):
    """Images of a list holding a base class, with base-training labels.

    Args:
        root: data root the list's paths are relative to.
        list_file: image list (see ``voc.read_pairs``).
        dataset: "pascal", "coco" or "synth".
        fold: 0..3.
        scheme: COCO-20i split scheme.
        transform: ``transforms.TrainTransform(...)`` for training,
            ``transforms.TestTransform(...)`` for base-class validation; None only converts
            to normalised tensors at the original size.
        min_fg: pixels a base class must cover for the image to be kept; None scales the
            2048-pixel rule to each image's area.
        preload: decode every kept image and mask once, now, and serve them from memory
            (about 4 bytes per pixel; for small sets such as the embedded benchmark, where
            JPEG decoding would otherwise cost as much as a training step). DataLoader
            workers started by fork share the arrays.

    Items are ``(image (3, H, W) float, mask (H, W) int64)`` with mask values in
    0..n_base and 255.
    """

    def __init__(
        self,
        root: str | Path,
        list_file: str | Path,
        dataset: str,
        fold: int,
        scheme: str = "interleaved",
        transform: Transform | None = None,
        min_fg: int | None = None,
        preload: bool = False,
    ) -> None:
        self.root = Path(root)
        self.n_classes = splits.n_classes(dataset, root)
        self.base_classes = splits.base_classes(dataset, fold, scheme, root)
        self.lut = base_label_map(dataset, fold, scheme, root)
        self.transform = transform or to_tensors
        pairs = voc.read_pairs(root, list_file)
        index = voc.class_index(root, pairs, self.n_classes, min_fg)
        keep = sorted({i for c in self.base_classes for i in index[c]})
        if not keep:
            raise DataError(
                f"no image of {list_file} under {root} holds a base class of {dataset} fold "
                f"{fold}; check the dataset name and the list, or lower min_fg"
            )
        self.pairs = [pairs[i] for i in keep]
        self.decoded: list[tuple[np.ndarray, np.ndarray]] | None = None
        if preload:
            self.decoded = [self._load(i) for i in range(len(self.pairs))]

    @property
    def n_base(self) -> int:
        """Number of base classes; the model needs ``n_base + 1`` outputs (background)."""
        return len(self.base_classes)

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Image (H, W, 3) uint8 and its base-training labels (H, W) uint8."""
        image, mask = voc.load_pair(self.root, *self.pairs[i], self.n_classes)
        return image, self.lut[mask]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, labels = self.decoded[i] if self.decoded is not None else self._load(i)
        out = self.transform(image, labels)
        return out["image"], out["mask"]
