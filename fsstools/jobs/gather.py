"""A sweep's points gathered: one tidy table, a markdown summary and a figure.

Every point of ``sweep.json`` is in the table: a finished point with the rows of the table
it wrote (``summary.csv`` by default) and its grid values as columns, a failed or
unfinished one as a single row saying so, with its error and log. Written next to
``sweep.json``:

- ``table.csv``: every row, columns ``point``, ``state``, the grid keys, the points' own
  columns, then ``error`` and ``log``;
- ``table.md``: what was swept, how many points finished, the table of the metric, and
  for each failed point its error and the end of its log;
- ``<metric>_by_<first grid key>.png``: the metric against the first grid key
  (:func:`fsstools.plots.sweep_curve`).

A grid key that is also a column of the points' own table (``shots`` of an evaluation)
keeps the points' column, which says the same more exactly.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fsstools import paths, plots
from fsstools.cache import atomic_write_text
from fsstools.errors import ConfigError, MissingError
from fsstools.jobs.sweep_plan import LOG_NAME, POINT_NAME, SWEEP_NAME
from fsstools.studies import report

TABLE_NAME = "table"
POINT_TABLE = "summary.csv"
DEFAULT_METRIC = "miou"
LOG_TAIL_LINES = 20
FINAL_STATES = ("done", "failed")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class Gathered:
    """What :func:`gather` wrote: the table and where it went."""

    table: pd.DataFrame
    csv: Path
    markdown: Path
    figure: Path | None
    failed: tuple[str, ...]


def show(value: Any) -> Any:
    """A grid value as a table cell: scalars as they are, lists and mappings as JSON."""
    return json.dumps(value) if isinstance(value, list | dict) else value


def load_sweep(folder: Path) -> dict:
    """The ``sweep.json`` of ``folder``.

    Raises:
        MissingError: there is none (not a sweep folder).
    """
    path = folder / SWEEP_NAME
    if not path.is_file():
        raise MissingError(f"{folder} holds no {SWEEP_NAME}: give the folder fsstools sweep "
                           "made, e.g. outputs/sweeps/NAME")
    return json.loads(path.read_text())


def read_point(folder: Path) -> dict | None:
    """A point's ``point.json``, or None while its job has not ended (or never ran)."""
    try:
        return json.loads((folder / POINT_NAME).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def log_tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log, each rewritten line (``\\r``) in its last state."""
    if path is None or not path.is_file():
        return ""
    text = _ANSI.sub("", path.read_text(errors="replace"))
    kept = [ln.rsplit("\r", 1)[-1] for ln in text.split("\n")]
    return "\n".join([ln for ln in kept if ln.strip()][-lines:])


def _point_rows(folder: Path, entry: dict, table: str, keys: list[str]) -> pd.DataFrame:
    record = read_point(folder / entry["name"]) or {}
    state = record.get("state") or entry.get("state", "missing")
    if state not in FINAL_STATES:
        state = "missing"  # never ran, still running, or cancelled
    base = {"point": entry["name"], "state": state}
    values = {k: show(v) for k, v in entry["values"].items()}
    path = folder / entry["name"] / table
    if state == "done" and path.is_file():
        rows = pd.read_csv(path)
        for key in reversed(keys):
            if key not in rows:
                rows.insert(0, key, [values[key]] * len(rows))
        rows.insert(0, "state", state)
        rows.insert(0, "point", entry["name"])
        return rows
    error = record.get("error") or entry.get("error") or (
        f"no {table} in {folder / entry['name']}" if state == "done" else None)
    log = folder / entry["name"] / LOG_NAME
    log = log if log.is_file() else (Path(entry["job_log"]) if entry.get("job_log") else None)
    return pd.DataFrame([{**base, **values, "error": error,
                          "log": str(log) if log is not None else None}])


def gather_table(folder: Path, table: str = POINT_TABLE) -> tuple[dict, pd.DataFrame]:
    """The sweep of ``folder`` and its tidy table (see the module's docstring)."""
    sweep = load_sweep(folder)
    keys = list(sweep["grid"])
    frames = [_point_rows(folder, e, table, keys) for e in sweep["points"]]
    rows = pd.concat(frames, ignore_index=True)
    counts = {c for f in frames for c in f.select_dtypes("integer").columns}
    for column in counts & set(rows.select_dtypes("float").columns):
        if (rows[column].dropna() % 1 == 0).all():  # counts a failed point's row left empty
            rows[column] = rows[column].astype("Int64")
    for column in ("error", "log"):  # last, and present even when every point finished
        rows[column] = rows.pop(column) if column in rows else None
    return sweep, rows


def pick_metric(rows: pd.DataFrame, keys: list[str], metric: str | None) -> str | None:
    """``metric``, else "miou", else the first numeric column that is not a grid key or an
    interval bound (None: the table has none).

    Raises:
        ConfigError: an explicit ``metric`` the table does not have.
    """
    numeric = [c for c in rows.select_dtypes("number").columns
               if c not in keys and not c.endswith(("_low", "_high"))]
    if metric is not None:
        if metric not in rows:
            raise ConfigError(f"--metric {metric}: the gathered table has no such column; its "
                              f"numeric columns: {', '.join(numeric) or 'none'}", key="metric")
        return metric
    if DEFAULT_METRIC in rows:
        return DEFAULT_METRIC
    return numeric[0] if numeric else None


def figure(rows: pd.DataFrame, keys: list[str], metric: str, folder: Path) -> Path | None:
    """The metric against the first grid key: lines per method (else per second grid key),
    panels per second grid key or shot count when those vary; None without finished rows."""
    done = rows[(rows["state"] == "done") & rows[metric].notna()] if metric in rows else rows[:0]
    if done.empty:
        return None
    x = keys[0]
    varied = [c for c in ("method", *keys[1:], "shots") if c in done and c != x
              and done[c].astype(str).nunique() > 1]
    hue = "method" if "method" in varied else (varied[0] if varied else None)
    col = next((c for c in varied if c not in (hue, "method")), None)
    group = [c for c in (x, hue, col) if c is not None]
    most = int(done.groupby(group, sort=False).size().max())
    title = f"each mark: the mean of up to {most} rows" if most > 1 else None
    fig = plots.sweep_curve(done.assign(**{x: done[x].astype(str)}), x, metric, hue=hue,
                            col=col, title=title)
    return report.save_figure(fig, folder, f"{metric}_by_{x}")


def markdown(sweep: dict, rows: pd.DataFrame, metric: str | None, fig: Path | None) -> str:
    """The sweep's summary: what ran, how many points finished, the metric's table, and
    each failed point with its error and the end of its log."""
    keys = list(sweep["grid"])
    target = sweep["target"]
    states = rows.drop_duplicates("point")["state"].value_counts()
    grid = " x ".join(f"{k}={json.dumps(v)}" for k, v in sweep["grid"].items())
    fixed = " ".join(f"--set {k}={json.dumps(v)}" for k, v in target["fixed"].items())
    lines = [f"# Sweep {sweep['name']}", "",
             f"{target['kind']} `{target['path']}`, grid {grid}" + (f", {fixed}" if fixed else ""),
             "", f"{len(sweep['points'])} point{'s' * (len(sweep['points']) != 1)}: "
             + ", ".join(f"{n} {s}" for s, n in states.items()) + f"; rows in {TABLE_NAME}.csv"
             + (f"; figure {fig.name}" if fig else ""), ""]
    labels = [c for c in rows.columns if c not in ("point", "state", "error", "log", *keys)
              and (not pd.api.types.is_numeric_dtype(rows[c]) or c == "shots")]
    shown = ["state", *keys, *labels]
    if metric is not None:
        shown += [c for c in (metric, f"{metric}_low", f"{metric}_high") if c in rows]
    cells = rows[shown].astype(object).where(rows[shown].notna(), "")
    lines += [report.markdown_table(cells, index=False), ""]
    failed = rows[rows["state"] != "done"].drop_duplicates("point")
    if not failed.empty:
        lines += ["## Points that did not finish", ""]
    for _, row in failed.iterrows():
        log = Path(row["log"]) if isinstance(row["log"], str) else None
        lines += [f"### {row['point']} ({row['state']})", "",
                  f"error: {row['error'] or 'none recorded'}; log: {log or 'none'}", ""]
        tail = log_tail(log)
        if tail:
            lines += ["```text", tail, "```", ""]
    return "\n".join(lines)


def gather(folder: str | Path, metric: str | None = None, table: str = POINT_TABLE) -> Gathered:
    """Gather the sweep in ``folder``: write ``table.csv``, ``table.md`` and the figure.

    Args:
        folder: the sweep's folder (``<outputs>/sweeps/<name>``).
        metric: the column the figure and the markdown table show (default: "miou", else
            the first numeric column).
        table: the CSV each point wrote, relative to its folder.

    Raises:
        MissingError: ``folder`` is not a sweep folder.
        ConfigError: ``metric`` is not a column of the gathered table.
    """
    folder = paths.resolve(folder)
    sweep, rows = gather_table(folder, table)
    keys = list(sweep["grid"])
    metric = pick_metric(rows, keys, metric)
    fig = figure(rows, keys, metric, folder) if metric is not None else None
    csv = report.save_table(rows, folder, TABLE_NAME)
    md = atomic_write_text(folder / f"{TABLE_NAME}.md", markdown(sweep, rows, metric, fig))
    failed = tuple(rows.loc[rows["state"] != "done", "point"].drop_duplicates())
    return Gathered(rows, csv, md, fig, failed)
