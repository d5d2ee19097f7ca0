"""One episode as plain data, for figures and the explorer: images as the model saw them,
masks, the prototype's cosine map, initial and final predictions and traces; and a PCA of
features.

Example:
    >>> view = episode_view(study.store, study.episode_lists[1, 0], index=0)  # doctest: +SKIP
    >>> view.traces["pi"][0], view.true_share  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fsstools.constants import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from fsstools.data import splits, voc
from fsstools.data.episodes import EpisodeList, episode_mask
from fsstools.data.transforms import TestTransform
from fsstools.features import FeatureStore, task_batch
from fsstools.inference import (
    METHODS,
    MethodConfig,
    fg_probs,
    oracle_prior,
    query_valid_mask,
    run_method,
)


@dataclass
class EpisodeView:
    """Everything the walkthrough shows about one task (images at the padded test size).

    Attributes:
        class_id, class_name, shots, index: which task.
        query_image: (H, W, 3) uint8; padding black.
        query_mask: (H, W) {0, 1, 255}.
        support_images: (S, H, W, 3) uint8; support_masks: (S, H, W) {0, 1, 255}.
        cosine: (h, w) cosine of the query features with the support prototype.
        initial: (H, W) bool prediction of the initial classifier (no step).
        prediction: (H, W) bool prediction after the method's steps.
        probs: (h, w) final foreground probabilities on the feature grid.
        traces: name -> (T,) per-iteration values of the method.
        true_share: foreground share of the query's labelled valid pixels (feature grid).
        method: the method that produced ``prediction``.
    """

    class_id: int
    class_name: str
    shots: int
    index: int
    query_image: np.ndarray
    query_mask: np.ndarray
    support_images: np.ndarray
    support_masks: np.ndarray
    cosine: np.ndarray
    initial: np.ndarray
    prediction: np.ndarray
    probs: np.ndarray
    traces: dict[str, np.ndarray]
    true_share: float
    method: MethodConfig

    @property
    def initial_iou(self) -> float:
        """Foreground IoU of the initial prediction against the query mask."""
        return mask_iou(self.initial, self.query_mask)

    @property
    def final_iou(self) -> float:
        """Foreground IoU of the final prediction against the query mask."""
        return mask_iou(self.prediction, self.query_mask)


@dataclass(frozen=True)
class QueryView:
    """One query of a generalized run (:func:`fsstools.evaluation.generalized.query_view`)
    with its labels and each method's prediction, for a figure.

    Attributes:
        image: (H, W, 3) uint8 as the model saw it (padding black).
        target: (H, W) dataset class ids, 255 ignored (padding included).
        predictions: method -> (H, W) dataset class ids (255 on padding).
        names: dataset class id -> name, for every class of the classifier.
        base, novel: the fold's base and novel classes.
        image_name, shots, run: which query and support set.
    """

    image: np.ndarray
    target: np.ndarray
    predictions: dict[str, np.ndarray]
    names: dict[int, str]
    base: tuple[int, ...]
    novel: tuple[int, ...]
    image_name: str
    shots: int
    run: int


def display_image(root: str | Path, image: str, mask: str, dataset: str, size: int) -> np.ndarray:
    """An image as the model saw it (test transform, padding black): (size, size, 3) uint8."""
    sample = TestTransform(size)(*voc.load_pair(root, image, mask, splits.n_classes(dataset, root)))
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    img = (sample["image"] * std + mean).clamp(0, 1) * sample["valid"]  # (3, H, W)
    return (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # (H, W, 3)


def episodes_of_class(episodes: EpisodeList, class_id: int) -> list[int]:
    """Positions of the episodes of ``class_id`` in ``episodes``."""
    return [i for i, ep in enumerate(episodes.episodes) if ep.class_id == class_id]


def episode_view(
    store: FeatureStore,
    episodes: EpisodeList,
    index: int,
    method: MethodConfig | None = None,
    images: bool = True,
) -> EpisodeView:
    """Run ``method`` (default RePRI) on one task with traces and collect what to show.

    Args:
        store: features of the episodes' images.
        episodes: the list holding the task; its ``root`` and ``dataset`` locate the images.
        index: position of the task in ``episodes``.
        images: load the images from disk (False: zeros, for cheap redraws of masks only).
    """
    method = method or METHODS["repri"]
    el = episodes
    ep = el.episodes[index]
    shots = len(ep.supports)
    tb = task_batch(store, el, [index])
    valid = query_valid_mask(tb.query_mask_small, tb.query_valid_small, method.reference)
    size = tuple(tb.query_mask.shape[-2:])
    common = dict(query_mask=tb.query_mask_small)
    init = run_method(
        dataclasses.replace(method, iterations=0),
        tb.support_feats,
        tb.support_masks,
        tb.query_feats,
        valid,
        **common,
    )
    out = run_method(
        method, tb.support_feats, tb.support_masks, tb.query_feats, valid, trace=True, **common
    )
    proto = torch.nn.functional.normalize(init.prototype, dim=1)  # (1, C)
    qf = torch.nn.functional.normalize(tb.query_feats, dim=1)
    cosine = torch.einsum("bchw,bc->bhw", qf, proto)[0]  # (h, w)

    def picture(pair: tuple[str, str]) -> np.ndarray:
        if images:
            return display_image(el.root, pair[0], pair[1], el.dataset, size[-1])
        return np.zeros((*size, 3), dtype=np.uint8)

    return EpisodeView(
        class_id=ep.class_id,
        class_name=splits.class_name(el.dataset, ep.class_id, el.root),
        shots=shots,
        index=index,
        query_image=picture(ep.query),
        query_mask=tb.query_mask[0].numpy(),
        support_images=np.stack([picture(p) for p in ep.supports]),
        support_masks=np.stack(
            [
                episode_mask(
                    np.asarray(store.masks_full[store.index[img]]), ep.class_id
                )
                for img, _ in ep.supports
            ]
        ),
        cosine=cosine.numpy(),
        initial=(fg_probs(init.logits, size) > 0.5)[0].numpy(),
        prediction=(fg_probs(out.logits, size) > 0.5)[0].numpy(),
        probs=torch.sigmoid(out.logits[0]).numpy(),
        traces={k: v[:, 0].double().numpy() for k, v in out.traces.items()},
        true_share=float(oracle_prior(tb.query_mask_small.flatten(1), valid.flatten(1))[0]),
        method=method,
    )


def mask_iou(pred: np.ndarray, mask: np.ndarray) -> float:
    """Foreground IoU of a (H, W) bool prediction against a {0, 1, 255} mask."""
    scored = mask != IGNORE_INDEX
    inter = (pred & (mask == 1) & scored).sum()
    union = ((pred | (mask == 1)) & scored).sum()
    return float(inter / union) if union else float("nan")


def feature_pca(feats: np.ndarray, n_components: int = 3) -> np.ndarray:
    """Project features on their top principal components, scaled to [0, 1] per component.

    Args:
        feats: (N, C, h, w) features of a few images (fitted jointly, so colours compare).

    Returns:
        (N, h, w, n_components) float in [0, 1].
    """
    n, c, h, w = feats.shape
    x = torch.from_numpy(np.ascontiguousarray(feats)).double().permute(0, 2, 3, 1)
    x = x.reshape(-1, c)  # (N*h*w, C)
    x = x - x.mean(0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    proj = x @ v[:n_components].T  # (N*h*w, k)
    lo, hi = proj.quantile(0.01, dim=0), proj.quantile(0.99, dim=0)
    proj = ((proj - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)
    return proj.reshape(n, h, w, n_components).numpy()
