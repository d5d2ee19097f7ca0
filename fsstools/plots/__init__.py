"""Figures of the notebooks and the summary: DataFrames (or arrays) in, Figures out.

Figures are built with ``matplotlib.figure.Figure`` and an Agg canvas, never through
pyplot: they work without a display, whatever backend a notebook uses, and nothing stays
registered once a figure is saved (``fsstools.studies.report.save_figure``) and dropped. seaborn
draws the marks and the theme (applied per figure, never globally); intervals are always
the precomputed columns of :mod:`fsstools.evaluation.stats`. Scores are fractions in the DataFrames
and shown in percent.

Example:
    >>> import pandas as pd
    >>> s = pd.DataFrame({"method": ["repri"], "shots": [1], "miou": [0.6],
    ...                   "miou_low": [0.55], "miou_high": [0.65]})
    >>> bar_ci(s).axes[0].get_ylabel()
    'mIoU (%)'
"""

from fsstools.plots.explorer import ExplorerPanel, explorer_panel
from fsstools.plots.generalized import base_novel_tradeoff, query_classes_panel
from fsstools.plots.images import (
    class_mask_rgb,
    episode_panel,
    episode_walkthrough,
    outlined,
    overlay,
    pca_panel,
    probability_maps,
    show_mask,
)
from fsstools.plots.scores import (
    bar_ci,
    class_iou_heatmap,
    delta_curve,
    difference_plot,
    prior_error_hist,
    shot_curves,
    trace_curves,
    training_curves,
)
from fsstools.plots.segment import segment_panel
from fsstools.plots.style import colours, new_figure
from fsstools.plots.sweeps import sweep_curve

__all__ = [
    "ExplorerPanel",
    "bar_ci",
    "base_novel_tradeoff",
    "class_iou_heatmap",
    "class_mask_rgb",
    "colours",
    "delta_curve",
    "difference_plot",
    "episode_panel",
    "episode_walkthrough",
    "explorer_panel",
    "new_figure",
    "outlined",
    "overlay",
    "pca_panel",
    "segment_panel",
    "prior_error_hist",
    "probability_maps",
    "query_classes_panel",
    "shot_curves",
    "show_mask",
    "sweep_curve",
    "trace_curves",
    "training_curves",
]
