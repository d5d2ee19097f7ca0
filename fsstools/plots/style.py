"""Shared look of the figures: seaborn's theme, labels, colours, and a pyplot-free Figure."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import ParamSpec, TypeVar

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

METHOD_LABELS = {
    "inductive": "Prototype, support-fit bias (inductive)",
    "ce_support": "CE probe from support-fit bias (inductive)",
    "prototype": "Prototype, query-mean bias",
    "ce": "CE from query-mean bias",
    "ce_h": "CE + H",
    "ce_kl": "CE + KL",
    "repri": "RePRI (paper text)",
    "repri_reference": "RePRI (reference code)",
    "oracle_repri": "Oracle-RePRI (authors' config)",
    "oracle_repri_weights": "Oracle-RePRI at RePRI's weights",
    "panet": "Two prototypes, fg/bg softmax (PANet's rule, inductive)",
    "pfenet": "PFENet-style head (own inference)",
    "base_model": "Base model alone (no novel class)",
    "gfss_prototypes": "Base classifier + novel prototypes (no fit)",
    "diam_no_kd": "DIaM without distillation",
    "diam": "DIaM",
    "diam_upperbound": "DIaM, true class proportions (oracle)",
    "diam pi=uniform": "DIaM, uniform prior",
    "diam pi=imglvl": "DIaM, prior from image-level labels",
    "diam pi=upperbound": "DIaM, true class proportions (oracle)",
}
"""What each method uses: "inductive" methods never read the query; "query-mean bias"
starts from RePRI's initial classifier, whose bias is the mean query score."""


def label(name: object) -> str:
    """Display name of a method (or any other key)."""
    return METHOD_LABELS.get(str(name), str(name))


THEME_STYLE = "whitegrid"
THEME_CONTEXT = "notebook"
THEME_FONT_SCALE = 0.8
"""seaborn's theme for every figure, applied while a figure is built (:func:`themed`), never
set globally, so importing fsstools leaves the user's matplotlib settings alone."""

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
    "ce_support": "#bcbd22",
    "prototype": "#8c564b",
    "ce": "#1f77b4",
    "ce_h": "#17becf",
    "ce_kl": "#9467bd",
    "repri": "#d62728",
    "repri_reference": "#ff7f0e",
    "oracle_repri": "#2ca02c",
    "oracle_repri_weights": "#98df8a",
    "panet": "#e377c2",
    "pfenet": "#c49c94",
    "base_model": "#7f7f7f",
    "gfss_prototypes": "#8c564b",
    "diam_no_kd": "#9467bd",
    "diam": "#d62728",
    "diam_upperbound": "#2ca02c",
}
PROB_CMAP = "viridis"
"""Colour map of foreground probabilities."""
CONTOUR_COLOUR = "#ffe135"
"""Outline of foreground masks and predictions."""
BACKGROUND_DIM = 0.35
"""Brightness kept outside a mask in overlays."""
CYCLE = [
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
EXTRA = ["#aec7e8", "#ffbb78", "#ff9896", "#c5b0d5", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5"]
"""Lighter shades drawn after :data:`CYCLE` when a figure holds more keys."""


P = ParamSpec("P")
R = TypeVar("R")


def themed(build: Callable[P, R]) -> Callable[P, R]:
    """Run a figure-building function inside seaborn's theme (style and context).

    matplotlib reads most style settings when an artist is created, so a figure built in
    the theme keeps its look when it is saved or drawn later, outside of it.
    """

    @functools.wraps(build)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with sns.axes_style(THEME_STYLE), sns.plotting_context(THEME_CONTEXT,
                                                                font_scale=THEME_FONT_SCALE):
            return build(*args, **kwargs)

    return wrapper


def percent(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """A copy of ``df`` with ``columns`` (fractions) in percent."""
    return df.assign(**{c: 100 * df[c] for c in columns})


def new_figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    """A Figure with an Agg canvas, independent of pyplot.

    Args:
        layout: matplotlib's layout engine; None for a fixed grid (no layout pass at each
            draw: the explorer redraws that way).
    """
    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def colours(keys: Sequence[object]) -> dict[object, str]:
    """A distinct colour for each of ``keys`` (one figure's methods): a method keeps its
    fixed colour (:data:`METHOD_COLOURS`) unless an earlier key of the figure holds it;
    every other key takes the first colour of :data:`CYCLE`, then :data:`EXTRA`, that no key
    of the figure uses, then evenly spaced hues."""
    keys = list(dict.fromkeys(keys))
    out: dict[object, str] = {}
    for key in keys:
        fixed = METHOD_COLOURS.get(str(key))
        if fixed is not None and fixed not in out.values():
            out[key] = fixed
    reserved = {METHOD_COLOURS[str(k)] for k in keys if str(k) in METHOD_COLOURS}
    free = [c for c in [*CYCLE, *EXTRA] if c not in reserved]
    rest = [k for k in keys if k not in out]
    if len(rest) > len(free):
        free += [to_hex(c) for c in sns.color_palette("husl", len(rest) - len(free))]
    out.update(zip(rest, free, strict=False))
    return {key: out[key] for key in keys}


def ordered(values: pd.Series) -> list:
    return list(dict.fromkeys(values))


def errors(rows: pd.DataFrame, value: str, mid: np.ndarray) -> np.ndarray:
    """(2, n) error-bar lengths in percent; clipped at 0 because a percentile interval
    need not contain the full-sample estimate."""
    low = mid - 100 * rows[f"{value}_low"].to_numpy()
    high = 100 * rows[f"{value}_high"].to_numpy() - mid
    return np.clip(np.stack([low, high]), 0, None)
