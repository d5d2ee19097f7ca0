"""Shared look of the figures: labels, colours, and a pyplot-free Figure."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

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
}
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


def new_figure(width: float, height: float) -> Figure:
    """A Figure with an Agg canvas, independent of pyplot."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def colours(keys: Sequence[object]) -> dict[object, str]:
    """Fixed colours for the paper's methods, a cycle for anything else."""
    out, k = {}, 0
    for key in keys:
        if str(key) in METHOD_COLOURS:
            out[key] = METHOD_COLOURS[str(key)]
        else:
            out[key] = CYCLE[k % len(CYCLE)]
            k += 1
    return out


def ordered(values: pd.Series) -> list:
    return list(dict.fromkeys(values))


def errors(rows: pd.DataFrame, value: str, mid: np.ndarray) -> np.ndarray:
    """(2, n) error-bar lengths in percent; clipped at 0 because a percentile interval
    need not contain the full-sample estimate."""
    low = mid - 100 * rows[f"{value}_low"].to_numpy()
    high = 100 * rows[f"{value}_high"].to_numpy() - mid
    return np.clip(np.stack([low, high]), 0, None)
