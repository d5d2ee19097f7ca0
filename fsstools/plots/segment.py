"""The figure of a segmentation of your own images: overlays, p(foreground) and the
explorer's loss and prior traces (with the base classes kept: overlays coloured per class
and the distillation term)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from fsstools.own_images.keep_base import overlay_classes
from fsstools.own_images.segmentation import QueryResult, overlay
from fsstools.plots.explorer import (
    EXPLORER_TRACES,
    PRIOR_COLOUR,
    SHARE_COLOUR,
    TRACE_COLOURS,
)
from fsstools.plots.style import PROB_CMAP, TERM_LABELS, new_figure, themed

MAX_SHOWN = 6
"""Queries drawn in the top row."""


def _clean(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _overlay(result: QueryResult) -> np.ndarray:
    if result.labels is None:
        return overlay(result.image, result.mask)
    colours = np.array([c.colour for c in result.classes], dtype=np.uint8)
    return overlay_classes(result.image, result.labels, colours)


@themed
def segment_panel(results: Sequence[QueryResult], supports: Sequence[tuple] = (),
                  index: int = 0) -> Figure:
    """Top row: the supports (image with its mask) and up to :data:`MAX_SHOWN` queries with
    their predicted masks; bottom row, for query ``index``: p(foreground), the loss terms
    and the prior with the predicted share over the iterations.

    Args:
        results: what :func:`fsstools.segment` returned.
        supports: (image (H, W, 3) uint8, task mask (H, W) {0, 1, 255}) pairs to show.
        index: the query whose probabilities and traces are drawn.
    """
    shown = [(overlay(img, np.asarray(mask) == 1), "support") for img, mask in supports[:2]]
    shown += [(_overlay(r), f"{r.name}: {100 * r.share:.0f}% fg") for r in results[:MAX_SHOWN]]
    cols = max(len(shown), 3)
    fig = new_figure(2.2 * cols, 4.8, layout=None)
    grid = fig.add_gridspec(2, cols, hspace=0.35, wspace=0.3)
    for j, (img, title) in enumerate(shown):
        ax = fig.add_subplot(grid[0, j])
        ax.imshow(img)
        ax.set_title(title, fontsize=8)
        _clean(ax)
    r = results[index]
    ax = fig.add_subplot(grid[1, 0])
    ax.imshow(r.probs, cmap=PROB_CMAP, vmin=0, vmax=1)
    ax.set_title(f"{r.name}: p({'novel class' if r.classes else 'foreground'})", fontsize=8)
    _clean(ax)
    split = 1 + (cols - 1) // 2
    loss_ax, share_ax = fig.add_subplot(grid[1, 1:split]), fig.add_subplot(grid[1, split:])
    if r.traces:
        t = np.arange(len(r.traces["loss"]))
        for term, colour in zip(EXPLORER_TRACES, TRACE_COLOURS, strict=True):
            loss_ax.plot(t, r.traces[term], color=colour, label=TERM_LABELS[term])
        if "pi" in r.traces:
            share_ax.plot(t, r.traces["pi"], color=PRIOR_COLOUR, label="prior pi")
            share_ax.plot(t, r.traces["fg_share"], color=SHARE_COLOUR, label="p_hat foreground")
            share_ax.set_ylim(0, max(0.05, 1.15 * max(r.traces["pi"].max(),
                                                      r.traces["fg_share"].max())))
        else:  # base classes kept: how far the base classes move from the base model's
            share_ax.plot(t, r.traces["kd"], color=PRIOR_COLOUR, label="distillation KL")
        for ax in (loss_ax, share_ax):
            ax.legend(fontsize=6, loc="upper right")
            ax.set_xlabel("iteration", fontsize=8)
    loss_ax.set_title("loss terms (unweighted), weighted total", fontsize=8)
    share_ax.set_title("distillation to the base model" if r.classes
                       else "foreground prior and predicted share", fontsize=8)
    shots = f", {len(supports)} supports" if supports else ""
    fig.suptitle(f"{len(results)} queries{shots}", fontsize=10)
    return fig
