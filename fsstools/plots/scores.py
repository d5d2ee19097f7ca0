"""Figures of scores: bars and curves with intervals, traces, prior errors, base training."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fsstools.plots.style import (
    CYCLE,
    TERM_LABELS,
    VALUE_LABELS,
    colours,
    errors,
    new_figure,
    ordered,
)
from fsstools.report import label


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
    xs, hues = ordered(summary[x]), ordered(summary[hue])
    fig = new_figure(max(4.5, 1.1 * len(xs) * max(1, len(hues)) ** 0.5 + 1.5), 3.6)
    ax = fig.add_subplot()
    width = 0.8 / len(hues)
    shades = colours(hues) if hue != "shots" else dict(zip(hues, CYCLE, strict=False))
    for j, h in enumerate(hues):
        sel = summary[summary[hue] == h].set_index(x).reindex(xs)
        mid = 100 * sel[value].to_numpy()
        err = errors(sel, value, mid)
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
    methods = ordered(summary["method"])
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
        table: from ``fsstools.stats.trace_table`` (method, shots, term, iteration, mean,
            low, high).
    """
    shots = sorted(table["shots"].unique())
    methods = ordered(table["method"])
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
    stages = ordered(errors["stage"])
    fig = new_figure(4.2 * len(shots), 3.3)
    axes = fig.subplots(1, len(shots), squeeze=False)[0]
    edges = np.linspace(*clip, bins + 1)
    for ax, k in zip(axes, shots, strict=True):
        for stage, colour in zip(stages, ("#7f7f7f", "#d62728", *CYCLE), strict=False):
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
    for k, colour in zip(sorted(summary["shots"].unique()), CYCLE, strict=False):
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
        for fold, colour in zip(sorted(history["fold"].unique()), CYCLE, strict=False):
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


def difference_plot(
    diff: pd.DataFrame,
    reference: str,
    key: str = "method",
    value: str = "miou",
    title: str | None = None,
) -> Figure:
    """Paired differences to ``reference`` (points, 95% intervals), one marker per shots.

    Args:
        diff: from ``fsstools.stats.differences`` (``key``, shots, ``value`` and interval).
    """
    names = ordered(diff[key])
    shots = sorted(diff["shots"].unique())
    fig = new_figure(5.5, 0.45 * len(names) * len(shots) ** 0.5 + 1.4)
    ax = fig.add_subplot()
    step = 0.7 / max(len(shots), 1)
    for j, (k, colour) in enumerate(zip(shots, CYCLE, strict=False)):
        sel = diff[diff["shots"] == k].set_index(key).reindex(names)
        mid = 100 * sel[value].to_numpy()
        err = errors(sel, value, mid)
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
