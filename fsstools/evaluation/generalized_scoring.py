"""Scoring one run of the generalized protocol: DIaM's inference on cached features, then
every class's intersection and union summed over all the run's queries.

This module computes the per-class rows :mod:`fsstools.evaluation.generalized` caches; their
key (:func:`scores_key`) holds this module's code version, which covers the inference, the
support sets and the feature store it reads, and nothing of the pipeline around it.

Scoring follows the authors: the query's class probabilities (not its logits) are upsampled
bilinearly (``align_corners=True``) to the padded image size, each pixel takes the most
probable class, and the confusion with the labels (255 ignored, padding included) is summed
over the queries. A class whose summed union is 0 has no IoU.

Example:
    >>> pred = torch.tensor([[[0, 1], [2, 2]]])
    >>> target = torch.tensor([[[0, 1], [1, 255]]])
    >>> confusion(pred, target, 3).tolist()
    [[1, 0, 0], [0, 1, 1], [0, 0, 0]]
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from fsstools import cache
from fsstools import config as config_lib
from fsstools.constants import IGNORE_INDEX
from fsstools.data.generalized import SupportDraw, class_order, label_lut
from fsstools.features import FeatureStore, restore_lost_foreground
from fsstools.inference.generalized import GFSSConfig, run_gfss
from fsstools.inference.layout import map_single_threaded, spans

BASE_MODEL = "base_model"
"""Label of the base model alone (its own classifier, no novel class): what the base
classes score before any novel class competes for their pixels."""
UPSAMPLE_ELEMENTS = 1 << 25
"""Probabilities upsampled at a time (128 MiB in float32), so a batch of large images with
many classes never holds all its full-size maps at once."""
QUERY_ELEMENTS = 1 << 24
"""Query features fitted together on a CPU (64 MiB in float32): a batch is a few hundred
queries of the embedded benchmark, a dozen of PASCAL's at 417 pixels."""
QUERY_ELEMENTS_ACCELERATOR = 1 << 27
"""The same on a GPU (512 MiB): ~90 PASCAL queries, near the authors' 200 at a time."""
ROW_COLUMNS = ("class_index", "class_id", "kind", "inter", "union", "target")
KINDS = ("background", "base", "novel")


@dataclass(frozen=True)
class BaseClassifier:
    """The base model's 1x1 classifier and the classes of its outputs.

    Attributes:
        weight: (K_b, C), background first; bias: (K_b,).
        classes: the base class ids (dataset ids) of outputs 1..K_b - 1, in that order.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    classes: tuple[int, ...]


def scores_key(features: str, draw: str, run: int, method: GFSSConfig | None,
               device: str | torch.device) -> str:
    """Key of the rows of ``method`` (None: the base model alone) on run ``run`` of the
    support draw hashed ``draw``, over the features keyed ``features``: a feature store's
    key, or a query stream's (:mod:`fsstools.evaluation.generalized_stream`); both hold
    the checkpoint's bytes, hence its classifier."""
    settings = (BASE_MODEL if method is None
                else config_lib.to_dict(dataclasses.replace(method, name="")))
    return cache.cache_key(stage="gfss_scores", features=features, draw=draw, run=run,
                           method=settings, device=torch.device(device).type,
                           code=cache.code_version(__name__))


def confusion(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(K, K) pixel counts, row = label, column = prediction, over pixels not labelled 255.

    Args:
        pred: (B, H, W) int64 in 0..K-1.
        target: (B, H, W) int64 in 0..K-1 or 255.
    """
    keep = target != IGNORE_INDEX
    flat = target[keep] * n_classes + pred[keep]
    return torch.bincount(flat, minlength=n_classes * n_classes).view(n_classes, n_classes)


def class_rows(conf: torch.Tensor, classes: list[int], n_base: int) -> pd.DataFrame:
    """Intersection, union and labelled pixels of each class from a confusion matrix.

    Args:
        conf: (K, K) from :func:`confusion`, summed over queries.
        classes: dataset id of each classifier index (:func:`class_order`).
        n_base: base classes (indices 1..n_base); the ones after are novel.
    """
    conf = conf.long().cpu()
    inter = conf.diag()
    union = conf.sum(0) + conf.sum(1) - inter
    kinds = ["background"] + ["base"] * n_base + ["novel"] * (len(classes) - 1 - n_base)
    return pd.DataFrame({"class_index": np.arange(len(classes)), "class_id": classes,
                         "kind": kinds, "inter": inter.numpy(), "union": union.numpy(),
                         "target": conf.sum(1).numpy()})


def predict(probs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Most probable class per pixel at image size: (B, K, h, w) probabilities -> (B, H, W)
    int64, upsampled bilinearly (align_corners=True) a few queries at a time."""
    B, K = probs.shape[:2]
    step = max(1, UPSAMPLE_ELEMENTS // (K * size[0] * size[1]))
    parts = [F.interpolate(probs[a:a + step], size=size, mode="bilinear",
                           align_corners=True).argmax(dim=1) for a in range(0, B, step)]
    return torch.cat(parts)


def support_tensors(store: FeatureStore, draw: SupportDraw, run: int, lut: np.ndarray,
                    device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The run's support set as one shared set: features (1, S, C, h, w) float32 and labels
    (1, S, h, w) int64 in classifier indices, S = novel classes x shots, class by class.

    A support whose object vanished on the feature grid gets the cell holding the largest
    share of it back (:func:`fsstools.features.restore_lost_foreground`).
    """
    supports = draw.supports(run)
    rows = np.array([store.index[img] for _, (img, _) in supports])
    cls = np.array([c for c, _ in supports])
    small = store.masks_small[rows].astype(np.int64)  # (S, h, w) dataset ids
    binary = (small == cls[:, None, None]).astype(np.int64)[:, None]  # (S, 1, h, w)
    restore_lost_foreground(binary, store.masks_full, rows[:, None], cls)
    labels = np.where(binary[:, 0] == 1, lut[cls][:, None, None], lut[small])  # (S, h, w)
    feats = torch.from_numpy(np.ascontiguousarray(store.feats[rows])).float()
    return (feats.unsqueeze(0).to(device),
            torch.from_numpy(labels).unsqueeze(0).to(device))


@dataclass(frozen=True)
class RunInputs:
    """What every query batch of one run reads: the classifier on the device, the run's
    support set and the label lookup.

    Attributes:
        classes: dataset id of each classifier index; n_base, n_novel: class counts.
        lut: (256,) dataset id -> classifier index (255 kept), on the device.
        weight: (K_b, C) and bias: (K_b,) of the base classifier, float32.
        support_feats: (1, S, C, h, w); support_labels: (1, S, h, w).
    """

    classes: list[int]
    n_base: int
    n_novel: int
    lut: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    support_feats: torch.Tensor
    support_labels: torch.Tensor


def run_inputs(store: FeatureStore, draw: SupportDraw, run: int, classifier: BaseClassifier,
               device: str | torch.device = "cpu") -> RunInputs:
    """:class:`RunInputs` of run ``run``.

    Raises:
        ValueError: the classifier's base classes are not the draw's.
    """
    if sorted(classifier.classes) != sorted(draw.base):
        raise ValueError(f"the base model's classes {list(classifier.classes)} are not the "
                         f"fold's base classes {list(draw.base)}")
    lut = label_lut(classifier.classes, draw.novel, max((*draw.base, *draw.novel)))
    s_feats, s_labels = support_tensors(store, draw, run, lut, device)
    return RunInputs(class_order(classifier.classes, draw.novel), len(classifier.classes),
                     len(draw.novel), torch.from_numpy(lut).to(device),
                     classifier.weight.to(device).float(), classifier.bias.to(device).float(),
                     s_feats, s_labels)


def predict_queries(store: FeatureStore, inputs: RunInputs, rows: np.ndarray,
                    method: GFSSConfig | None, device: str | torch.device = "cpu"
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted and true classifier indices of the queries at store ``rows``.

    Returns:
        (B, H, W) int64 predictions and (B, H, W) labels (255 ignored, padding included).

    Raises:
        ValueError: non-finite logits.
    """
    def read(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array[rows])).to(device)

    feats = read(store.feats).float()  # (B, C, h, w)
    target = inputs.lut[read(store.masks_full).long()]  # (B, H, W)
    if method is None:
        logits = (torch.einsum("kc,bchw->bkhw", inputs.weight, feats)
                  + inputs.bias.view(1, -1, 1, 1))
    else:
        small = inputs.lut[read(store.masks_small).long()] if method.needs_labels else None
        logits = run_gfss(method, inputs.weight, inputs.bias, inputs.support_feats,
                          inputs.support_labels, feats, read(store.valid_small), inputs.n_novel,
                          small).logits
    if not bool(torch.isfinite(logits).all()):
        raise ValueError(f"method {getattr(method, 'name', BASE_MODEL)!r} gave non-finite "
                         "logits: check the features and the method's lr")
    return predict(torch.softmax(logits, dim=1), tuple(target.shape[-2:])), target


def query_batch(feature_elements: int, device: str | torch.device,
                batch_queries: int | None = None) -> int:
    """Queries fitted together: ``batch_queries``, else as many as :data:`QUERY_ELEMENTS`
    (:data:`QUERY_ELEMENTS_ACCELERATOR` off the CPU) hold of ``feature_elements`` each."""
    if batch_queries is not None:
        return batch_queries
    cpu = torch.device(device).type == "cpu"
    return max(1, (QUERY_ELEMENTS if cpu else QUERY_ELEMENTS_ACCELERATOR) // feature_elements)


def query_workers(device: str | torch.device) -> int:
    """Query batches run side by side: torch's threads on a CPU, each batch on one thread
    (a hundred steps of small products split across threads spend their time at barriers),
    one at a time elsewhere."""
    return torch.get_num_threads() if torch.device(device).type == "cpu" else 1


def count_queries(store: FeatureStore, inputs: RunInputs, rows: np.ndarray,
                  method: GFSSConfig | None, device: str | torch.device = "cpu",
                  batch_queries: int | None = None) -> torch.Tensor:
    """(K, K) :func:`confusion` of ``method`` summed over the queries at store ``rows``,
    ``batch_queries`` at a time (:func:`query_batch`; the counts do not depend on it)."""
    batch = query_batch(int(np.prod(store.feats.shape[1:])), device, batch_queries)
    workers = query_workers(device)
    n_batches = max(-(-len(rows) // batch), min(workers, len(rows)))
    batches = spans(len(rows), -(-len(rows) // n_batches))
    K = len(inputs.classes)

    def count(span: tuple[int, int]) -> torch.Tensor:
        pred, target = predict_queries(store, inputs, rows[span[0]:span[1]], method, device)
        return confusion(pred, target, K)

    cpu = torch.device(device).type == "cpu"
    confs = map_single_threaded(count, batches, workers) if cpu else map(count, batches)
    return sum(confs, torch.zeros(K, K, dtype=torch.long, device=device))


def score_run(store: FeatureStore, draw: SupportDraw, run: int, classifier: BaseClassifier,
              method: GFSSConfig | None, device: str | torch.device = "cpu",
              batch_queries: int | None = None) -> pd.DataFrame:
    """Score ``method`` (None: the base model alone) on every query of run ``run`` (no cache).

    Args:
        store: unnormalised features (DIaM reads them as the model gives them) of the
            draw's images.
        classifier: the base model's classifier, whose classes order the labels.
        batch_queries: queries fitted together (the results do not depend on it); None:
            as many as :data:`QUERY_ELEMENTS` of features hold. On a CPU there are at least
            as many batches as torch threads, run side by side, each on one thread.

    Returns:
        One row per class of the classifier (background, base, novel): class_index,
        class_id, kind, inter, union, target (labelled pixels), summed over the queries.
    """
    inputs = run_inputs(store, draw, run, classifier, device)
    rows = np.array([store.index[img] for img, _ in draw.queries(run)])
    conf = count_queries(store, inputs, rows, method, device, batch_queries)
    return class_rows(conf, inputs.classes, inputs.n_base)
