"""Figures of scores: bars and curves with intervals, traces, prior errors, base training.

seaborn draws the marks (bars, lines, histograms, the heat map) and the theme. Our
intervals are not seaborn's: they come from a bootstrap over episodes within folds, or
from paired resamples (:mod:`fsstools.evaluation.stats`), so they are always drawn from the
precomputed ``*_low`` / ``*_high`` columns, never re-estimated here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fsstools.plots.style import (
    CYCLE,
    TERM_LABELS,
    VALUE_LABELS,
    colours,
    errors,
    label,
    new_figure,
    ordered,
    percent,
    themed,
)

BAND_ALPHA = 0.15
"""Opacity of interval bands."""
HEATMAP_ANNOTATED = 30
"""Most classes whose heat-map cells carry their value (COCO's 80 would not be readable)."""


def _band(ax: Axes, x: pd.Series, low: pd.Series, high: pd.Series, colour: str) -> None:
    ax.fill_between(x, low, high, color=colour, alpha=BAND_ALPHA, linewidth=0)


@themed
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
    names = {h: f"{hue}={h}" if hue == "shots" else label(h) for h in hues}
    shades = colours(hues) if hue != "shots" else dict(zip(hues, CYCLE, strict=False))
    data = percent(summary, [value]).assign(_x=summary[x].map(label),
                                            _hue=summary[hue].map(names))
    fig = new_figure(max(4.5, 1.1 * len(xs) * max(1, len(hues)) ** 0.5 + 1.5), 3.6)
    ax = fig.add_subplot()
    sns.barplot(data=data, x="_x", y=value, hue="_hue", order=[label(v) for v in xs],
                hue_order=[names[h] for h in hues], palette=[shades[h] for h in hues],
                errorbar=None, ax=ax)
    # seaborn has placed one container of bars per hue level, in x order: hang the
    # precomputed intervals on the bars' centres
    for h, bars in zip(hues, list(ax.containers), strict=True):
        sel = summary[summary[hue] == h].set_index(x).reindex(xs)
        mid = 100 * sel[value].to_numpy()
        centres = [p.get_x() + p.get_width() / 2 for p in bars.patches]
        ax.errorbar(centres, mid, yerr=errors(sel, value, mid), fmt="none", ecolor="black",
                    capsize=3, linewidth=1)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2, label_type="center",
                     color="white")
    ax.tick_params(axis="x", rotation=20 if len(xs) > 3 else 0)
    if len(xs) > 3:
        for t in ax.get_xticklabels():
            t.set_horizontalalignment("right")
    ax.set_xlabel("")
    ax.set_ylabel(VALUE_LABELS.get(value, value))
    ax.legend(fontsize=8, loc="lower right", title=None)
    if title:
        ax.set_title(title)
    return fig


@themed
def shot_curves(
    summary: pd.DataFrame, values: Sequence[str] = ("miou", "fbiou"), title: str | None = None
) -> Figure:
    """``value`` against shots, one line per method, 95% interval bands (fold-mean
    bootstrap, precomputed)."""
    methods = ordered(summary["method"])
    shades = colours(methods)
    fig = new_figure(4.2 * len(values), 3.6)
    axes = fig.subplots(1, len(values), squeeze=False)[0]
    shots = sorted(summary["shots"].unique())
    data = summary.assign(_method=summary["method"].map(label)).sort_values("shots")
    for ax, value in zip(axes, values, strict=True):
        scaled = percent(data, [value, f"{value}_low", f"{value}_high"])
        sns.lineplot(data=scaled, x="shots", y=value, hue="_method",
                     hue_order=[label(m) for m in methods],
                     palette=[shades[m] for m in methods], marker="o", errorbar=None,
                     legend=False, ax=ax)
        for m in methods:
            sel = scaled[scaled["method"] == m]
            _band(ax, sel["shots"], sel[f"{value}_low"], sel[f"{value}_high"], shades[m])
        ax.set_xscale("log")
        ax.set_xticks(shots, [str(s) for s in shots])
        ax.minorticks_off()
        ax.set_xlabel("shots")
        ax.set_ylabel(VALUE_LABELS.get(value, value))
    handles = [axes[0].lines[i] for i in range(len(methods))]
    fig.legend(handles, [label(m) for m in methods], loc="outside lower center",
               ncol=min(len(methods), 4), fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


@themed
def trace_curves(
    table: pd.DataFrame,
    terms: Sequence[str] = ("ce", "entropy", "kl", "iou"),
    title: str | None = None,
) -> Figure:
    """Per-iteration mean of each loss term, one row of panels per shot count.

    Args:
        table: from ``fsstools.evaluation.stats.trace_table`` (method, shots, term, iteration, mean,
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
            sel = table[(table["shots"] == k) & (table["term"] == term)]
            present = [m for m in methods if (sel["method"] == m).any()]
            if present:
                sns.lineplot(data=sel.assign(_method=sel["method"].map(label)),
                             x="iteration", y="mean", hue="_method",
                             hue_order=[label(m) for m in present],
                             palette=[shades[m] for m in present], errorbar=None,
                             legend=False, ax=ax)
                for m in present:
                    one = sel[sel["method"] == m]
                    _band(ax, one["iteration"], one["low"], one["high"], shades[m])
            ax.set_title(f"{TERM_LABELS.get(term, term)}, {k}-shot", fontsize=9)
            ax.set_ylabel("")
            ax.set_xlabel("iteration" if r == len(shots) - 1 else "")
    handles = [h for ax in axes.flat for h in ax.lines]
    seen: dict[str, object] = {}
    for line in handles:  # one legend entry per method, from the first panel that has it
        seen.setdefault(line.get_color(), line)
    names = [label(m) for m in methods if shades[m] in seen]
    fig.legend([seen[shades[m]] for m in methods if shades[m] in seen], names,
               loc="outside lower center", ncol=min(max(len(names), 1), 6), fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


@themed
def prior_error_hist(
    errors: pd.DataFrame, clip: tuple[float, float] = (-1.0, 2.0), bins: int = 40
) -> Figure:
    """Histograms of the relative prior error ``pi / true - 1`` per stage, one panel per
    shot count; errors beyond ``clip`` are counted in the edge bins."""
    shots = sorted(errors["shots"].unique())
    stages = ordered(errors["stage"])
    shades = dict(zip(stages, ("#7f7f7f", "#d62728", *CYCLE), strict=False))
    fig = new_figure(4.2 * len(shots), 3.3)
    axes = fig.subplots(1, len(shots), squeeze=False)[0]
    edges = np.linspace(*clip, bins + 1)
    for ax, k in zip(axes, shots, strict=True):
        sel = errors[errors["shots"] == k]
        names = {}
        for stage in stages:
            e = sel.loc[sel["stage"] == stage, "rel_error"]
            med = float(np.median(np.abs(e))) if len(e) else float("nan")
            names[stage] = f"{stage}: median |err| {100 * med:.0f}%"
        data = sel.assign(clipped=sel["rel_error"].clip(*clip), _stage=sel["stage"].map(names))
        sns.histplot(data=data, x="clipped", hue="_stage", bins=edges,
                     hue_order=[names[s] for s in stages],
                     palette=[shades[s] for s in stages], alpha=0.55, element="bars",
                     multiple="layer", ax=ax)
        legend = ax.get_legend()
        if legend is not None:
            legend.set_title(None)
            for text in legend.get_texts():
                text.set_fontsize(7)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlabel(f"relative error of pi, pi / true - 1 (clipped to [{clip[0]:g}, {clip[1]:g}])")
        ax.set_ylabel("episodes")
        ax.set_title(f"{k}-shot", fontsize=10)
    return fig


@themed
def delta_curve(
    summary: pd.DataFrame,
    x: str = "prior_delta",
    value: str = "miou",
    reference: pd.DataFrame | None = None,
    title: str | None = None,
    config_labels: dict[str, str] | None = None,
) -> Figure:
    """``value`` against a perturbation of the prior, one line per shot count and, with a
    ``config`` column, per oracle configuration (solid and dashed-dotted markers).

    Args:
        summary: rows with ``x``, shots, ``value`` and its interval (and ``config``).
        reference: optional rows (shots, ``value``) drawn as dashed horizontal lines, e.g.
            RePRI with its estimated prior.
        config_labels: display name of each ``config``.
    """
    fig = new_figure(5.6, 3.8)
    ax = fig.add_subplot()
    shots = sorted(summary["shots"].unique())
    shades = dict(zip(shots, CYCLE, strict=False))
    data = percent(summary, [value, f"{value}_low", f"{value}_high"]).sort_values(x)
    if "config" not in data:
        data = data.assign(config="oracle")
    names = config_labels or {}
    configs = list(dict.fromkeys(data["config"]))
    lines = dict(zip(configs, ["-", "-.", ":", "--"], strict=False))
    marks = dict(zip(configs, "osD^", strict=False))
    for config in configs:
        for k in shots:
            sel = data[(data["shots"] == k) & (data["config"] == config)]
            if sel.empty:
                continue
            ax.plot(sel[x], sel[value], linestyle=lines[config], marker=marks[config],
                    color=shades[k], label=f"{names.get(config, config)}, {k}-shot")
            _band(ax, sel[x], sel[f"{value}_low"], sel[f"{value}_high"], shades[k])
    if reference is not None:
        for k in shots:
            for _, row in reference[reference["shots"] == k].iterrows():
                ax.axhline(100 * row[value], color=shades[k], linestyle="--", linewidth=1,
                           label=f"{label(row.get('method', 'reference'))}, {k}-shot")
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel("relative error put on the oracle prior (delta)")
    ax.set_ylabel(VALUE_LABELS.get(value, value))
    ax.legend(fontsize=7, title=None)
    if title:
        ax.set_title(title)
    return fig


@themed
def training_curves(history: pd.DataFrame, by: str = "fold") -> Figure:
    """Training loss and base-class validation mIoU per epoch, one colour per fold (or per
    value of the column ``by``, e.g. a precision variant) and, with several base seeds
    (a ``base_seed`` column), one line per seed."""
    panels = [
        ("train_loss", "training loss"),
        ("val_miou", "val mIoU, background incl. (%)"),
        ("val_miou_fg", "val mIoU, base classes (%)"),
    ]
    panels = [p for p in panels if p[0] in history]
    label = (lambda f: f"fold {f}") if by == "fold" else str
    groups = [label(f) for f in sorted(history[by].unique())]
    several = "base_seed" in history and by != "base_seed" and history["base_seed"].nunique() > 1
    seeds = {"units": "base_seed", "estimator": None} if several else {}  # a line per seed
    fig = new_figure(3.8 * len(panels), 3.2)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for i, (ax, (col, name)) in enumerate(zip(axes, panels, strict=True)):
        scale = 1 if col == "train_loss" else 100
        data = history.dropna(subset=[col])
        data = data.assign(**{col: scale * data[col], "_group": data[by].map(label)})
        sns.lineplot(data=data, x="epoch", y=col, hue="_group", hue_order=groups,
                     palette=CYCLE[: len(groups)], marker="o", errorbar=None,
                     legend=i == 0, ax=ax, **seeds)
        ax.set_xlabel("epoch")
        ax.set_ylabel("")
        ax.set_title(name, fontsize=10)
    if axes[0].get_legend() is not None:
        axes[0].get_legend().set_title(None)
    return fig


@themed
def class_iou_heatmap(scores: pd.DataFrame, n_classes: int = 20) -> Figure:
    """Base-class validation IoU per fold (rows) and class (columns); novel classes blank.

    Args:
        scores: from ``fsstools.studies.recipes.base_class_scores`` (fold, class_id, iou).
        n_classes: classes of the data set (columns 0, background, to ``n_classes``).
    """
    grid = 100 * scores.pivot_table(index="fold", columns="class_id", values="iou",
                                    aggfunc="first")
    grid = grid.reindex(columns=range(n_classes + 1))
    grid.index = [f"fold {f}" for f in grid.index]
    grid.columns = ["bg", *map(str, range(1, n_classes + 1))]
    fig = new_figure(max(0.42 * (n_classes + 1) + 1.8, 4.0), 0.5 * len(grid) + 1.4)
    ax = fig.add_subplot()
    sns.heatmap(grid, vmin=0, vmax=100, cmap="viridis", annot=n_classes <= HEATMAP_ANNOTATED,
                fmt=".0f", annot_kws={"fontsize": 7}, mask=grid.isna(), linewidths=0.5,
                cbar_kws={"label": "IoU (%)"}, ax=ax)
    ax.tick_params(axis="x", labelsize=8 if n_classes <= HEATMAP_ANNOTATED else 5, rotation=0)
    ax.tick_params(axis="y", rotation=0)
    ax.set_ylabel("")
    ax.set_xlabel("class id (blank: novel class of the fold, never trained on)")
    return fig


@themed
def difference_plot(
    diff: pd.DataFrame,
    reference: str,
    key: str = "method",
    value: str = "miou",
    title: str | None = None,
) -> Figure:
    """Paired differences to ``reference`` (points, 95% intervals), one marker per shots.

    Drawn by hand: the intervals are paired bootstrap intervals from the rows, which no
    seaborn estimator reproduces.

    Args:
        diff: from ``fsstools.evaluation.stats.differences`` (``key``, shots, ``value`` and interval).
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
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return fig
