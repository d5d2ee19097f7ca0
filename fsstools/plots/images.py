"""Figures of images: episodes (supports, query, masks, predictions), the walkthrough, and
the feature PCA panel."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from fsstools.constants import IGNORE_INDEX
from fsstools.evaluation.views import EpisodeView, mask_iou
from fsstools.plots.style import (
    BACKGROUND_DIM,
    CONTOUR_COLOUR,
    PROB_CMAP,
    TERM_LABELS,
    new_figure,
)


def class_mask_rgb(mask: np.ndarray) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 colours (black background, white 255)."""
    from fsstools.data.synth.sheet import class_colours

    return class_colours()[mask]


def pca_panel(images: np.ndarray, masks: np.ndarray, pca: np.ndarray) -> Figure:
    """Images, class masks and the first three principal components of their features.

    Args:
        images: (N, H, W, 3) uint8.
        masks: (N, H, W) class ids.
        pca: (N, h, w, 3) in [0, 1].
    """
    n = len(images)
    fig = new_figure(1.9 * n, 6.0)
    axes = fig.subplots(3, n, squeeze=False)
    rows = ("image", "classes", "feature PCA (RGB = PC1-3)")
    for j in range(n):
        axes[0, j].imshow(images[j])
        axes[1, j].imshow(class_mask_rgb(masks[j]), interpolation="nearest")
        axes[2, j].imshow(pca[j], interpolation="nearest")
    for (r, c), ax in np.ndenumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if c == 0:
            ax.set_ylabel(rows[r], fontsize=8)
    return fig


def overlay(image: np.ndarray, mask: np.ndarray, dim: float = BACKGROUND_DIM) -> np.ndarray:
    """``image`` (H, W, 3) uint8 as floats in [0, 1] with everything but ``mask == 1`` (or
    True) darkened, so the mask reads on any object colour; 255 pixels are greyed."""
    out = image.astype(np.float64) / 255
    m = mask.astype(np.int64)
    out[m != 1] *= dim
    ignore = m == IGNORE_INDEX
    out[ignore] = 0.5 * out[ignore] + 0.25
    return out


OUTLINE_SHARE = 1 / 64
"""Width of a mask's outline as a share of the image side (2 pixels of a 128-pixel image):
about 1.5 screen pixels in the explorer's ~100-pixel panels, so it survives the downsampling."""


def mask_boundary(fg: np.ndarray, width: int = 1) -> np.ndarray:
    """The inner boundary of a (H, W) bool mask: pixels of ``fg`` within ``width`` steps
    (4-neighbourhood) of a pixel outside it. The image border does not count as outside,
    so, like a contour, the outline stops at the frame, and a full or empty mask has none."""
    inner = fg
    for _ in range(width):
        p = np.pad(inner, 1, mode="edge")
        inner = inner & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return fg & ~inner


def outlined(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """:func:`overlay` with the foreground's outline painted in: (H, W, 3) floats in [0, 1].

    One picture instead of an image plus a contour set, so the explorer's redraw replaces
    pixels instead of building and laying out contour artists.
    """
    out = overlay(image, mask)
    width = max(1, round(OUTLINE_SHARE * max(mask.shape)))
    out[mask_boundary(mask.astype(np.int64) == 1, width)] = to_rgb(CONTOUR_COLOUR)
    return out


def show_mask(ax, image: np.ndarray, mask: np.ndarray, title: str | None = None) -> None:
    """Draw ``overlay(image, mask)`` with the mask outline on ``ax``."""
    ax.imshow(overlay(image, mask))
    fg = mask.astype(np.int64) == 1
    if fg.any() and not fg.all():
        ax.contour(fg, levels=[0.5], colors=[CONTOUR_COLOUR], linewidths=1.0)
    if title:
        ax.set_title(title, fontsize=9)
    _clean(ax)


def _clean(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def episode_panel(view: EpisodeView, title: str | None = None) -> Figure:
    """Supports with their masks, the query, its ground truth and the prediction."""
    s = len(view.support_images)
    shown = min(s, 5)
    fig = new_figure(2.1 * (shown + 3), 2.6)
    axes = fig.subplots(1, shown + 3)
    for i in range(shown):
        show_mask(
            axes[i],
            view.support_images[i],
            view.support_masks[i],
            f"support {i + 1}" + (f" of {s}" if s > shown else ""),
        )
    axes[shown].imshow(view.query_image)
    axes[shown].set_title("query", fontsize=9)
    _clean(axes[shown])
    show_mask(axes[shown + 1], view.query_image, view.query_mask, "ground truth")
    iou = mask_iou(view.prediction, view.query_mask)
    show_mask(
        axes[shown + 2], view.query_image, view.prediction, f"prediction (IoU {100 * iou:.0f}%)"
    )
    fig.suptitle(
        title
        or f"class {view.class_id} ({view.class_name}), {view.shots}-shot, "
        f"{view.method.name} with {view.method.steps} steps",
        fontsize=10,
    )
    return fig


def episode_walkthrough(view: EpisodeView) -> Figure:
    """One task step by step: supports, query and ground truth; the prototype's cosine map
    on the query; the initial and final predictions; the loss terms, the prior and the
    query IoU over the iterations."""
    s = min(len(view.support_images), 5)
    cols = max(s + 2, 4)
    fig = new_figure(2.3 * cols, 8.2)
    grid = fig.add_gridspec(3, cols)
    for i in range(s):
        show_mask(
            fig.add_subplot(grid[0, i]),
            view.support_images[i],
            view.support_masks[i],
            f"support {i + 1} + mask",
        )
    ax = fig.add_subplot(grid[0, s])
    ax.imshow(view.query_image)
    ax.set_title("query", fontsize=9)
    _clean(ax)
    show_mask(
        fig.add_subplot(grid[0, s + 1]), view.query_image, view.query_mask, "query ground truth"
    )

    ax = fig.add_subplot(grid[1, 0])
    im = ax.imshow(view.cosine, cmap="magma", interpolation="nearest")
    ax.set_title("cos(query, prototype)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    _clean(ax)
    for j, (pred, name) in enumerate(
        ((view.initial, "initial"), (view.prediction, "final")), start=1
    ):
        iou = mask_iou(pred, view.query_mask)
        show_mask(
            fig.add_subplot(grid[1, j]),
            view.query_image,
            pred,
            f"{name} prediction\nIoU {100 * iou:.0f}%",
        )
    ax = fig.add_subplot(grid[1, 3])
    im = ax.imshow(view.probs, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title("final p(foreground)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    _clean(ax)

    tr = view.traces
    t = np.arange(len(tr["loss"]))
    ax = fig.add_subplot(grid[2, : cols // 2])
    for term, colour in (
        ("ce", "#1f77b4"),
        ("entropy", "#17becf"),
        ("kl", "#9467bd"),
        ("loss", "black"),
    ):
        ax.plot(t, tr[term], color=colour, label=TERM_LABELS[term])
    ax.set_xlabel("iteration")
    ax.set_title("loss terms (unweighted) and weighted total", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax = fig.add_subplot(grid[2, cols // 2 :])
    ax.plot(t, tr["pi"], color="#d62728", label="prior pi")
    ax.plot(t, tr["fg_share"], color="#ff7f0e", label="p_hat foreground")
    if "iou" in tr:
        ax.plot(t, tr["iou"], color="#2ca02c", label="query IoU (feature grid)")
    ax.axhline(view.true_share, color="#d62728", linestyle=":", label="true foreground share")
    ax.set_xlabel("iteration")
    ax.set_ylim(0, 1)
    ax.set_title("prior, predicted share and IoU", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.suptitle(
        f"class {view.class_id} ({view.class_name}), {view.shots}-shot, {view.method.name}",
        fontsize=11,
    )
    return fig


def probability_maps(maps: Mapping[int, np.ndarray], view: EpisodeView) -> Figure:
    """p(foreground) on the query's feature grid after a few iterations, with the query and
    the outline of its ground truth.

    Args:
        maps: iteration t -> (h, w) foreground probabilities of the classifier after t steps.
        view: the episode (query image and mask) the maps belong to.
    """
    n = len(maps)
    fig = new_figure(2.3 * (n + 1), 2.7)
    axes = fig.subplots(1, n + 1)
    show_mask(axes[0], view.query_image, view.query_mask, "query + ground truth")
    height, width = view.query_mask.shape
    fg = view.query_mask.astype(np.int64) == 1
    image = None
    for ax, (t, probs) in zip(axes[1:], sorted(maps.items()), strict=True):
        # the grid covers the padded image: stretch it over the same extent as the mask
        image = ax.imshow(np.asarray(probs), cmap=PROB_CMAP, vmin=0, vmax=1,
                          interpolation="nearest", extent=(0, width, height, 0))
        if fg.any() and not fg.all():
            ax.contour(fg, levels=[0.5], colors=[CONTOUR_COLOUR], linewidths=0.8)
        ax.set_title(f"t = {t}", fontsize=9)
        _clean(ax)
    if image is not None:
        fig.colorbar(image, ax=list(axes[1:]), fraction=0.03, label="p(foreground)")
    fig.suptitle(f"class {view.class_id} ({view.class_name}), {view.shots}-shot: "
                 "p(foreground) of the query after t iterations", fontsize=10)
    return fig
