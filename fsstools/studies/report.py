"""Reporting: method labels, the one table formatter, and saving tables, figures and the
summary fragments that ``fsstools reproduce`` collects.

Scores are fractions in the DataFrames and shown in percent.

Example:
    >>> import pandas as pd
    >>> s = pd.DataFrame({"method": ["repri"], "shots": [1], "miou": [0.6],
    ...                   "miou_low": [0.55], "miou_high": [0.65]})
    >>> interval_table(s).iloc[0, 0]
    '60.0 [55.0, 65.0]'
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fsstools import paths
from fsstools.cache import atomic_write, atomic_write_text
from fsstools.plots.style import label  # display names of methods; notebooks call report.label
from fsstools.studies.readings import interval_text

SUMMARY_NAME = "summary.md"


def interval_table(
    summary: pd.DataFrame, index: str = "method", columns: str = "shots", value: str = "miou"
) -> pd.DataFrame:
    """``index`` x ``columns`` table of ``value`` in percent with its 95% interval (empty
    for an empty summary, e.g. differences with nothing to compare); a bound that would
    print as 0.0 is written as in the readings (:func:`fsstools.studies.readings.bound_text`)."""
    if summary.empty:
        return pd.DataFrame()
    cells = summary.assign(cell=[interval_text(r, value) for _, r in summary.iterrows()])
    return wide_table(cells, "cell", index, columns)


def points_table(
    df: pd.DataFrame, value: str, index: str = "method", columns: str = "shots"
) -> pd.DataFrame:
    """``index`` x ``columns`` table of a value already in points, one decimal."""
    return wide_table(df.assign(cell=df[value].map(lambda v: f"{v:.1f}")), "cell", index, columns)


MEAN_COLUMN = "mean over folds"


def group_title(group: dict) -> str:
    """A group of table rows in words, e.g. ``A -> B, 5 shots``."""
    return ", ".join(f"{v} shot{'s' if v > 1 else ''}" if k == "shots" else str(v)
                     for k, v in group.items())


def fold_tables(
    per_fold: pd.DataFrame,
    mean: pd.DataFrame,
    by: Sequence[str] = ("shots",),
    index: str = "method",
    value: str = "miou",
    only: Sequence[str] | None = None,
) -> dict[str, pd.DataFrame]:
    """Per group of ``by`` (titled by :func:`group_title`): ``index`` x folds, ``value`` in
    percent with its 95% interval, and the fold mean in a last column (none for empty
    rows).

    Args:
        per_fold: rows with a ``fold`` column (:func:`fsstools.evaluation.stats.summarize` or
            :func:`~fsstools.evaluation.stats.differences` with "fold" in ``by``).
        mean: the same over folds (:func:`~fsstools.evaluation.stats.fold_mean` or
            :func:`~fsstools.evaluation.stats.differences`); it may hold more rows.
        only: the ``index`` values to show, in their order in ``per_fold`` (None: all).
    """
    tables: dict[str, pd.DataFrame] = {}
    if per_fold.empty:
        return tables
    if only is not None:
        per_fold = per_fold[per_fold[index].isin(only)]
    folds = [f"fold {f}" for f in sorted(per_fold["fold"].unique())]
    for key, part in per_fold.groupby(list(by), sort=False):
        group = dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True))
        means = mean.loc[(mean[list(by)] == pd.Series(group)).all(axis=1)]
        means = means[means[index].isin(part[index])]
        cells = pd.concat([part.assign(column=[f"fold {f}" for f in part["fold"]]),
                           means.assign(column=MEAN_COLUMN)], ignore_index=True)
        cells["cell"] = [interval_text(r, value) for _, r in cells.iterrows()]
        rows = list(dict.fromkeys(part[index]))
        table = cells.pivot(index=index, columns="column", values="cell").loc[rows]
        table = table[[c for c in (*folds, MEAN_COLUMN) if c in table.columns]]
        table.columns.name = None
        if index == "method":
            table.index = [label(m) for m in table.index]
        table.index.name = index
        tables[group_title(group)] = table
    return tables


def wide_table(df: pd.DataFrame, value: str, index: str, columns: str) -> pd.DataFrame:
    """Pivot ``value`` to ``index`` x ``columns`` in first-seen row order, readable labels."""
    rows = list(dict.fromkeys(df[index]))
    table = df.pivot(index=index, columns=columns, values=value).loc[rows]
    table.columns = [f"{columns}={c}" for c in table.columns]
    if index == "method":
        table.index = [label(m) for m in table.index]
    table.index.name = index
    return table


def markdown_table(df: pd.DataFrame, index: bool = True, digits: int = 3) -> str:
    """A GitHub markdown table (no extra dependency)."""
    frame = df.reset_index() if index else df

    def cell(v: object) -> str:
        if isinstance(v, float | np.floating):
            return f"{v:.{digits}f}"
        return str(v).replace("|", "/")

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join(lines)


def save_table(df: pd.DataFrame, output_dir: str | Path, name: str) -> Path:
    """Write ``df`` as ``<output_dir>/<name>.csv``."""
    return atomic_write_text(paths.resolve(output_dir) / f"{name}.csv", df.to_csv(index=False))


def save_figure(fig, output_dir: str | Path, name: str, dpi: int = 110) -> Path:
    """Save a matplotlib Figure as ``<output_dir>/<name>.png`` (atomically) and return the path.

    Figures from :mod:`fsstools.plots` are not registered with pyplot, so nothing stays
    open after they are garbage-collected; pyplot figures are closed here.
    """
    path = paths.resolve(output_dir) / f"{name}.png"
    atomic_write(path, lambda p: fig.savefig(p, dpi=dpi, bbox_inches="tight", format="png"))
    import matplotlib.pyplot as plt

    if plt.fignum_exists(getattr(fig, "number", -1)):
        plt.close(fig)
    return path


def write_summary(output_dir: str | Path, title: str, blocks: Sequence[str | pd.DataFrame]) -> Path:
    """Write ``<output_dir>/summary.md``: a heading, then text and tables in order.

    ``fsstools reproduce`` concatenates these fragments into ``outputs/summary.md``.
    """
    parts = [f"## {title}", ""]
    for block in blocks:
        parts += [markdown_table(block) if isinstance(block, pd.DataFrame) else block, ""]
    return atomic_write_text(paths.resolve(output_dir) / SUMMARY_NAME, "\n".join(parts))
