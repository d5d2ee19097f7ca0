"""Base-class IoU of a base model by object size and by whether the frame cuts the object.

For every (validation image, base class present) pair: the class's share of the image, whether
its mask touches the image border, and the IoU of the model's prediction for that class (255
pixels left out). Prints the mean IoU per size bin, cut and whole apart. A diagnostic of what a
base model has learnt on a benchmark (e.g. its small and cut objects against the objects of
the uniform-size variant).

    python bench/size_iou.py --checkpoint outputs/runs/synth-fold0-<key>/best.pt \
        --root data/synth/A --n 500
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from fsstools.constants import IGNORE_INDEX
from fsstools.data import splits, voc
from fsstools.data.transforms import TestTransform
from fsstools.models.checkpoints import checkpoint_meta, load_model

SIZE_BINS = (0.0, 0.02, 0.05, 0.15, 0.30, 1.01)
"""Edges of the share-of-image bins."""
BATCH = 50


def pair_rows(model: torch.nn.Module, classes: list[int], root: str, pairs: list, size: int,
              n_classes: int) -> np.ndarray:
    """(share, touches the frame, IoU) per (image, base class) pair; (N, 3)."""
    out_index = {c: i + 1 for i, c in enumerate(classes)}  # 0 is background
    transform = TestTransform(size)
    rows = []
    with torch.no_grad():
        for start in range(0, len(pairs), BATCH):
            samples = [transform(*voc.load_pair(root, img, mask, n_classes))
                       for img, mask in pairs[start:start + BATCH]]
            pred = model(torch.stack([s["image"] for s in samples])).argmax(1).numpy()
            for s, p in zip(samples, pred, strict=True):
                m = s["mask"].numpy()
                scored = m != IGNORE_INDEX
                for c in np.unique(m):
                    if int(c) not in out_index:
                        continue
                    gt, hit = m == c, p == out_index[int(c)]
                    union = ((gt | hit) & scored).sum()
                    cut = gt[0].any() or gt[-1].any() or gt[:, 0].any() or gt[:, -1].any()
                    rows.append((gt.mean(), cut, (gt & hit & scored).sum() / max(union, 1)))
    return np.array(rows, dtype=float)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--root", default="data/synth/A")
    p.add_argument("--list", default="lists/val.txt")
    p.add_argument("--dataset", default="synth")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--n", type=int, default=500, help="first n images of the list")
    args = p.parse_args()
    meta = checkpoint_meta(args.checkpoint)
    model = load_model(args.checkpoint).eval()
    pairs = voc.read_pairs(args.root, args.list)[: args.n]
    rows = pair_rows(model, list(meta["classes"]), args.root, pairs, args.size,
                     splits.n_classes(args.dataset))
    print(f"{len(rows)} (image, base class) pairs from {len(pairs)} images of {args.root}")
    for lo, hi in zip(SIZE_BINS[:-1], SIZE_BINS[1:], strict=True):
        for cut, name in ((0.0, "whole"), (1.0, "cut")):
            keep = (rows[:, 0] >= lo) & (rows[:, 0] < hi) & (rows[:, 1] == cut)
            if keep.any():
                print(f"share {100 * lo:4.0f}-{100 * min(hi, 1):3.0f}% {name:5s}: "
                      f"n={int(keep.sum()):4d}  mean IoU {rows[keep, 2].mean():.3f}")
    print(f"mean IoU over all pairs {rows[:, 2].mean():.3f}")


if __name__ == "__main__":
    main()
