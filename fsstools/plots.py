"""Figures of the notebooks and the summary: DataFrames (or arrays) in, Figures out.

Figures are built with ``matplotlib.figure.Figure`` and an Agg canvas, never through
pyplot: they work without a display, whatever backend a notebook uses, and nothing stays
registered once a figure is saved (``fsstools.study.save_figure``) and dropped. Scores are
fractions in the DataFrames and shown in percent.

Example:
    >>> import pandas as pd
    >>> s = pd.DataFrame({"method": ["repri"], "shots": [1], "miou": [0.6],
    ...                   "miou_low": [0.55], "miou_high": [0.65]})
    >>> bar_ci(s).axes[0].get_ylabel()
    'mIoU (%)'
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fsstools.constants import IGNORE_INDEX
from fsstools.study import METHOD_LABELS, EpisodeView, mask_iou

VALUE_LABELS = {"miou": "mIoU (%)", "fbiou": "FB-IoU (%)"}
TERM_LABELS = {
    "loss": "total loss",
    "ce": "support CE",
    "entropy": "query entropy H",
    "kl": "KL(p_hat || pi)",
    "pi": "prior pi",
    "fg_share": "p_hat foreground",
    "iou": "query IoU (feature grid)",
    "kl_weight": "KL weight",
}
METHOD_COLOURS = {
    "inductive": "#7f7f7f",
    "ce": "#1f77b4",
    "ce_h": "#17becf",
    "ce_kl": "#9467bd",
    "repri": "#d62728",
    "oracle_repri": "#2ca02c",
}
CONTOUR_COLOUR = "#ffe135"
"""Outline of foreground masks and predictions."""
BACKGROUND_DIM = 0.35
"""Brightness kept outside a mask in overlays."""
_CYCLE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]


def new_figure(width: float, height: float) -> Figure:
    """A Figure with an Agg canvas, independent of pyplot."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def label(name: object) -> str:
    """Display name of a method (or any other key)."""
    return METHOD_LABELS.get(str(name), str(name))


def colours(keys: Sequence[object]) -> dict[object, str]:
    """Fixed colours for the paper's methods, a cycle for anything else."""
    out, k = {}, 0
    for key in keys:
        if str(key) in METHOD_COLOURS:
            out[key] = METHOD_COLOURS[str(key)]
        else:
            out[key] = _CYCLE[k % len(_CYCLE)]
            k += 1
    return out


def _ordered(values: pd.Series) -> list:
    return list(dict.fromkeys(values))


def _errors(rows: pd.DataFrame, value: str, mid: np.ndarray) -> np.ndarray:
    """(2, n) error-bar lengths in percent; clipped at 0 because a percentile interval
    need not contain the full-sample estimate."""
    low = mid - 100 * rows[f"{value}_low"].to_numpy()
    high = 100 * rows[f"{value}_high"].to_numpy() - mid
    return np.clip(np.stack([low, high]), 0, None)


# ----------------------------------------------------------------------------- scores


def bar_ci(
    summary: pd.DataFrame,
    value: str = "miou",
    x: str = "method",
    hue: str = "shots",
    title: str | None = None,
) -> Figure:
    """Grouped bars of ``value`` with 95% interval error bars.

    Args:
        summary: rows with columns ``x``, ``hue``, ``value``, ``value_low``, ``value_high``.
        x: one group of bars per value (e.g. method).
        hue: one bar per value inside a group (e.g. shots).
    """
    xs, hues = _ordered(summary[x]), _ordered(summary[hue])
    fig = new_figure(max(4.5, 1.1 * len(xs) * max(1, len(hues)) ** 0.5 + 1.5), 3.6)
    ax = fig.add_subplot()
    width = 0.8 / len(hues)
    shades = colours(hues) if hue != "shots" else dict(zip(hues, _CYCLE, strict=False))
    for j, h in enumerate(hues):
        sel = summary[summary[hue] == h].set_index(x).reindex(xs)
        mid = 100 * sel[value].to_numpy()
        err = _errors(sel, value, mid)
        pos = np.arange(len(xs)) + (j - (len(hues) - 1) / 2) * width
        bars = ax.bar(
            pos,
            mid,
            width * 0.95,
            yerr=err,
            capsize=3,
            color=shades[h],
            label=f"{hue}={h}" if hue == "shots" else label(h),
        )
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2, label_type="center", color="white")
    ax.set_xticks(
        np.arange(len(xs)),
        [label(v) for v in xs],
        rotation=20 if len(xs) > 3 else 0,
        ha="right" if len(xs) > 3 else "center",
    )
    ax.set_ylabel(VALUE_LABELS.get(value, value))
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, loc="lower right")
    if title:
        ax.set_title(title)
    return fig


def shot_curves(
    summary: pd.DataFrame, values: Sequence[str] = ("miou", "fbiou"), title: str | None = None
) -> Figure:
    """``value`` against shots, one line per method, 95% interval bands."""
    methods = _ordered(summary["method"])
    shades = colours(methods)
    fig = new_figure(4.2 * len(values), 3.6)
    axes = fig.subplots(1, len(values), squeeze=False)[0]
    shots = sorted(summary["shots"].unique())
    for ax, value in zip(axes, values, strict=True):
        for m in methods:
            sel = summary[summary["method"] == m].sort_values("shots")
            k = sel["shots"].to_numpy()
            ax.plot(k, 100 * sel[value], marker="o", color=shades[m], label=label(m))
            ax.fill_between(
                k,
                100 * sel[f"{value}_low"],
                100 * sel[f"{value}_high"],
                color=shades[m],
                alpha=0.12,
                linewidth=0,
            )
        ax.set_xscale("log")
        ax.set_xticks(shots, [str(s) for s in shots])
        ax.minorticks_off()
        ax.set_xlabel("shots")
        ax.set_ylabel(VALUE_LABELS.get(value, value))
        ax.grid(alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=min(len(names), 4), fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def trace_curves(
    table: pd.DataFrame,
    terms: Sequence[str] = ("ce", "entropy", "kl", "iou"),
    title: str | None = None,
) -> Figure:
    """Per-iteration mean of each loss term, one row of panels per shot count.

    Args:
        table: from ``fsstools.study.trace_table`` (method, shots, term, iteration, mean,
            low, high).
    """
    shots = sorted(table["shots"].unique())
    methods = _ordered(table["method"])
    shades = colours(methods)
    fig = new_figure(3.2 * len(terms), 2.6 * len(shots) + 0.4)
    axes = fig.subplots(len(shots), len(terms), squeeze=False)
    for r, k in enumerate(shots):
        for c, term in enumerate(terms):
            ax = axes[r, c]
            for m in methods:
                sel = table[
                    (table["method"] == m) & (table["shots"] == k) & (table["term"] == term)
                ]
                if sel.empty:
                    continue
                ax.plot(sel["iteration"], sel["mean"], color=shades[m], label=label(m))
                ax.fill_between(
                    sel["iteration"],
                    sel["low"],
                    sel["high"],
                    color=shades[m],
                    alpha=0.12,
                    linewidth=0,
                )
            ax.set_title(f"{TERM_LABELS.get(term, term)}, {k}-shot", fontsize=9)
            ax.grid(alpha=0.3)
            if r == len(shots) - 1:
                ax.set_xlabel("iteration")
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=min(len(names), 6), fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def prior_error_hist(
    errors: pd.DataFrame, clip: tuple[float, float] = (-1.0, 2.0), bins: int = 40
) -> Figure:
    """Histograms of the relative prior error ``pi / true - 1`` per stage, one panel per
    shot count; errors beyond ``clip`` are counted in the edge bins."""
    shots = sorted(errors["shots"].unique())
    stages = _ordered(errors["stage"])
    fig = new_figure(4.2 * len(shots), 3.3)
    axes = fig.subplots(1, len(shots), squeeze=False)[0]
    edges = np.linspace(*clip, bins + 1)
    for ax, k in zip(axes, shots, strict=True):
        for stage, colour in zip(stages, ("#7f7f7f", "#d62728", *_CYCLE), strict=False):
            e = errors[(errors["shots"] == k) & (errors["stage"] == stage)]["rel_error"]
            med = float(np.median(np.abs(e))) if len(e) else float("nan")
            ax.hist(
                np.clip(e, *clip),
                bins=edges,
                alpha=0.55,
                color=colour,
                label=f"{stage}: median |err| {100 * med:.0f}%",
            )
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlabel(f"relative error of pi, pi / true - 1 (clipped to [{clip[0]:g}, {clip[1]:g}])")
        ax.set_ylabel("episodes")
        ax.set_title(f"{k}-shot", fontsize=10)
        ax.legend(fontsize=7)
    return fig


def delta_curve(
    summary: pd.DataFrame,
    x: str = "prior_delta",
    value: str = "miou",
    reference: pd.DataFrame | None = None,
    title: str | None = None,
) -> Figure:
    """``value`` against a perturbation of the prior, one line per shot count.

    Args:
        summary: rows with ``x``, shots, ``value`` and its interval.
        reference: optional rows (shots, ``value``) drawn as dashed horizontal lines, e.g.
            RePRI with its estimated prior.
    """
    fig = new_figure(5.0, 3.6)
    ax = fig.add_subplot()
    for k, colour in zip(sorted(summary["shots"].unique()), _CYCLE, strict=False):
        sel = summary[summary["shots"] == k].sort_values(x)
        ax.plot(sel[x], 100 * sel[value], marker="o", color=colour, label=f"oracle, {k}-shot")
        ax.fill_between(
            sel[x],
            100 * sel[f"{value}_low"],
            100 * sel[f"{value}_high"],
            color=colour,
            alpha=0.2,
            linewidth=0,
        )
        if reference is not None:
            ref = reference[reference["shots"] == k]
            for _, row in ref.iterrows():
                ax.axhline(
                    100 * row[value],
                    color=colour,
                    linestyle="--",
                    linewidth=1,
                    label=f"{label(row.get('method', 'reference'))}, {k}-shot",
                )
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel("relative error put on the oracle prior (delta)")
    ax.set_ylabel(VALUE_LABELS.get(value, value))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return fig


# ----------------------------------------------------------------------------- base training


def training_curves(history: pd.DataFrame) -> Figure:
    """Training loss and base-class validation mIoU per epoch, one line per fold."""
    panels = [
        ("train_loss", "training loss"),
        ("val_miou", "val mIoU, background incl. (%)"),
        ("val_miou_fg", "val mIoU, base classes (%)"),
    ]
    panels = [p for p in panels if p[0] in history]
    fig = new_figure(3.8 * len(panels), 3.2)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (col, name) in zip(axes, panels, strict=True):
        scale = 1 if col == "train_loss" else 100
        for fold, colour in zip(sorted(history["fold"].unique()), _CYCLE, strict=False):
            sel = history[history["fold"] == fold].dropna(subset=[col])
            ax.plot(sel["epoch"], scale * sel[col], marker="o", color=colour, label=f"fold {fold}")
        ax.set_xlabel("epoch")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return fig


def class_iou_heatmap(scores: pd.DataFrame, n_classes: int = 20) -> Figure:
    """Base-class validation IoU per fold (rows) and class (columns); novel classes blank.

    Args:
        scores: from ``fsstools.study.base_class_scores`` (fold, class_id, iou).
    """
    folds = sorted(scores["fold"].unique())
    grid = np.full((len(folds), n_classes + 1), np.nan)
    for i, fold in enumerate(folds):
        sel = scores[scores["fold"] == fold]
        grid[i, sel["class_id"].to_numpy()] = 100 * sel["iou"].to_numpy()
    fig = new_figure(0.42 * (n_classes + 1) + 1.8, 0.5 * len(folds) + 1.4)
    ax = fig.add_subplot()
    im = ax.imshow(grid, vmin=0, vmax=100, cmap="viridis", aspect="auto")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if not np.isnan(grid[i, j]):
                ax.text(
                    j,
                    i,
                    f"{grid[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if grid[i, j] < 60 else "black",
                )
    ax.set_xticks(range(n_classes + 1), ["bg", *map(str, range(1, n_classes + 1))], fontsize=8)
    ax.set_yticks(range(len(folds)), [f"fold {f}" for f in folds])
    ax.set_xlabel("class id (blank: novel class of the fold, never trained on)")
    fig.colorbar(im, ax=ax, label="IoU (%)")
    return fig


def class_mask_rgb(mask: np.ndarray) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 colours (black background, white 255)."""
    from fsstools.data.synth_sheet import class_colours

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


# ----------------------------------------------------------------------------- episodes


def overlay(image: np.ndarray, mask: np.ndarray, dim: float = BACKGROUND_DIM) -> np.ndarray:
    """``image`` (H, W, 3) uint8 as floats in [0, 1] with everything but ``mask == 1`` (or
    True) darkened, so the mask reads on any object colour; 255 pixels are greyed."""
    out = image.astype(np.float64) / 255
    m = mask.astype(np.int64)
    out[m != 1] *= dim
    ignore = m == IGNORE_INDEX
    out[ignore] = 0.5 * out[ignore] + 0.25
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


def difference_plot(
    diff: pd.DataFrame,
    reference: str,
    key: str = "method",
    value: str = "miou",
    title: str | None = None,
) -> Figure:
    """Paired differences to ``reference`` (points, 95% intervals), one marker per shots.

    Args:
        diff: from ``fsstools.study.differences`` (``key``, shots, ``value`` and interval).
    """
    names = _ordered(diff[key])
    shots = sorted(diff["shots"].unique())
    fig = new_figure(5.5, 0.45 * len(names) * len(shots) ** 0.5 + 1.4)
    ax = fig.add_subplot()
    step = 0.7 / max(len(shots), 1)
    for j, (k, colour) in enumerate(zip(shots, _CYCLE, strict=False)):
        sel = diff[diff["shots"] == k].set_index(key).reindex(names)
        mid = 100 * sel[value].to_numpy()
        err = _errors(sel, value, mid)
        pos = np.arange(len(names)) + (j - (len(shots) - 1) / 2) * step
        ax.errorbar(mid, pos, xerr=err, fmt="o", color=colour, capsize=3, label=f"{k}-shot")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(np.arange(len(names)), [label(n) for n in names])
    ax.invert_yaxis()
    name = VALUE_LABELS.get(value, value).replace(" (%)", "")
    ax.set_xlabel(f"{name} minus {label(reference)} (points, paired 95% interval)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return fig
