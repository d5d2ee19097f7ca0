"""The figure of a sweep: a metric against the swept value, one line per method or grid value.

The x axis is categorical, in the order the grid gives its values (a grid value may be a
list, shown as text). Intervals are the rows' precomputed ``<value>_low`` / ``<value>_high``
columns when every mark stands for one row; marks that average several rows have none.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from fsstools.plots.style import (
    CYCLE,
    VALUE_LABELS,
    colours,
    label,
    new_figure,
    ordered,
    percent,
    themed,
)

DODGE = 0.08
"""Horizontal shift between the lines of neighbouring hue values, in x categories."""
PANEL_WIDTH = 4.4


@themed
def sweep_curve(
    table: pd.DataFrame,
    x: str,
    value: str = "miou",
    hue: str | None = None,
    col: str | None = None,
    title: str | None = None,
) -> Figure:
    """``value`` against the swept ``x``: one line per ``hue`` value, one panel per ``col``
    value.

    Args:
        table: one row per (x, hue, col) for intervals to show; more rows are averaged.
        x: the swept column; its values in first-seen order make the axis.
        value: the metric; fractions of :data:`VALUE_LABELS` are shown in percent.
        hue, col: columns splitting the lines and the panels, or None.
    """
    scaled = value in VALUE_LABELS
    bounds = [f"{value}_low", f"{value}_high"]
    has_bounds = all(b in table for b in bounds)
    data = percent(table, [value, *bounds] if has_bounds else [value]) if scaled else table
    xs = ordered(data[x].astype(str))
    hues = ordered(data[hue]) if hue else [None]
    panels = ordered(data[col]) if col else [None]
    shades = colours(hues) if hue == "method" else dict(zip(hues, CYCLE * len(hues), strict=False))
    names = {h: label(h) if hue == "method" else f"{hue}={h}" for h in hues}
    fig = new_figure(max(PANEL_WIDTH, 1.5 + 0.6 * len(xs)) * len(panels), 3.6)
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, panel in zip(axes, panels, strict=True):
        sel = data if col is None else data[data[col] == panel]
        for i, h in enumerate(hues):
            rows = sel if hue is None else sel[sel[hue] == h]
            pos = rows[x].astype(str).map({v: k for k, v in enumerate(xs)}) + DODGE * (
                i - (len(hues) - 1) / 2)
            line = rows.assign(_pos=pos).sort_values("_pos")
            sns.lineplot(data=line, x="_pos", y=value, marker="o", errorbar=None,
                         color=shades[h], label=names[h] if hue else None, ax=ax)
            single = not line.duplicated("_pos").any()
            if has_bounds and single:
                mid = line[value].to_numpy()
                err = np.clip(np.stack([mid - line[bounds[0]], line[bounds[1]] - mid]), 0, None)
                ax.errorbar(line["_pos"], mid, yerr=err, fmt="none", ecolor=shades[h],
                            capsize=3, linewidth=1)
        ax.set_xticks(range(len(xs)), xs)
        ax.set_xlabel(x)
        ax.set_ylabel(VALUE_LABELS.get(value, value))
        if col is not None:
            ax.set_title(f"{col}={panel}")
        if hue is not None:
            ax.legend(fontsize=8, title=None)
    if title:
        fig.suptitle(title)
    return fig
