"""Figures of the generalized protocol: the base/novel trade-off and one query with all its
classes coloured."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from fsstools.constants import IGNORE_INDEX
from fsstools.evaluation.views import QueryView
from fsstools.plots.style import CYCLE, colours, errors, label, new_figure, ordered, themed

SHOT_MARKERS = ("o", "s", "D", "^", "v")
"""Marker of each shot count, in increasing order."""
HM_LEVELS = (20, 40, 60, 80)
"""Harmonic means (%) drawn as dashed curves in the trade-off figure."""
IGNORE_RGB = (1.0, 1.0, 1.0)
"""Colour of pixels labelled 255 (boundaries, padding)."""


@themed
def base_novel_tradeoff(summary: pd.DataFrame, title: str | None = None) -> Figure:
    """Novel mIoU against base mIoU, one colour per method and one marker per shot count,
    95% intervals on both axes; dashed curves of equal harmonic mean.

    Args:
        summary: :func:`fsstools.evaluation.generalized_stats.summarize` rows (method,
            shots, base, novel with ``_low``/``_high``; fractions).
    """
    methods = ordered(summary["method"])
    shots = sorted(summary["shots"].unique())
    shades = colours(methods)
    fig = new_figure(6.4, 4.8)
    ax = fig.add_subplot()
    top = min(100.0, 100 * max(summary["base_high"].max(), summary["novel_high"].max()) + 5)
    base = np.linspace(0.5, 100, 400)
    for h in HM_LEVELS:
        keep = 2 * base > h
        novel = h * base[keep] / (2 * base[keep] - h)
        ax.plot(base[keep], novel, "--", color="0.75", linewidth=0.8, zorder=0)
        if h < top:  # the curve meets the diagonal at (h, h)
            ax.annotate(f"HM {h}", (h, h), xytext=(3, 3), textcoords="offset points",
                        fontsize=7, color="0.5")
    for m in methods:
        sel = summary[summary["method"] == m].sort_values("shots")
        x, y = 100 * sel["base"].to_numpy(), 100 * sel["novel"].to_numpy()
        ax.plot(x, y, "-", color=shades[m], linewidth=0.8, alpha=0.6)
        for k, (_, row) in zip(sel["shots"], sel.iterrows(), strict=True):
            one = sel[sel["shots"] == k]
            ax.errorbar(100 * row["base"], 100 * row["novel"],
                        xerr=errors(one, "base", np.array([100 * row["base"]])),
                        yerr=errors(one, "novel", np.array([100 * row["novel"]])),
                        fmt=SHOT_MARKERS[shots.index(k) % len(SHOT_MARKERS)],
                        color=shades[m], capsize=2, markersize=6)
    ax.set_xlim(-2, top)
    ax.set_ylim(-2, top)
    ax.set_xlabel("base mIoU (%)")
    ax.set_ylabel("novel mIoU (%)")
    handles = [Patch(color=shades[m], label=label(m)) for m in methods]
    handles += [ax.plot([], [], SHOT_MARKERS[i % len(SHOT_MARKERS)], color="0.3",
                        label=f"{k}-shot")[0] for i, k in enumerate(shots)]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    if title:
        ax.set_title(title)
    return fig


def class_palette(classes: Sequence[int]) -> dict[int, tuple[float, float, float]]:
    """A colour per class id: black background, a qualitative cycle for the others in the
    given order."""
    out, k = {}, 0
    for c in classes:
        if c == 0:
            out[c] = (0.0, 0.0, 0.0)
        else:
            out[c] = to_rgb(CYCLE[k % len(CYCLE)]) if k < len(CYCLE) else _hue(k)
            k += 1
    return out


def _hue(k: int) -> tuple[float, float, float]:
    import colorsys

    return colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.7, 0.95)


def paint(mask: np.ndarray, palette: dict[int, tuple[float, float, float]]) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) floats; 255 white, ids without a colour grey."""
    out = np.full((*mask.shape, 3), 0.5)
    for c, rgb in palette.items():
        out[mask == c] = rgb
    out[mask == IGNORE_INDEX] = IGNORE_RGB
    return out


@themed
def query_classes_panel(view: QueryView, title: str | None = None) -> Figure:
    """The query, its labels with every class coloured, and each method's prediction; the
    legend names every class shown, novel ones marked.

    Args:
        view: from :func:`fsstools.evaluation.generalized.query_view`.
    """
    shown = [view.target, *view.predictions.values()]
    present = sorted({int(c) for m in shown for c in np.unique(m)} - {IGNORE_INDEX})
    palette = class_palette(present)
    n = 2 + len(view.predictions)
    fig = new_figure(2.3 * n, 3.2)
    axes = fig.subplots(1, n)
    panels = [("query", view.image / 255), ("labels", paint(view.target, palette))]
    panels += [(label(m), paint(p, palette)) for m, p in view.predictions.items()]
    for ax, (name, picture) in zip(axes, panels, strict=True):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    novel = set(view.novel)
    handles = [Patch(color=palette[c], label=view.names.get(c, str(c))
                     + (" (novel)" if c in novel else "")) for c in present]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6),
               fontsize=7)
    fig.suptitle(title or f"{view.image_name}: {view.shots}-shot support set of run {view.run}",
                 fontsize=9)
    return fig
