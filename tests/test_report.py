"""fsstools.studies.report: labels, the table formatter, saved tables, figures and summaries."""

from __future__ import annotations

import os

import pandas as pd

from fsstools import plots
from fsstools.evaluation import stats
from fsstools.studies import report
from tests.tiny import fake_rows


def test_interval_table_in_percent_with_labels():
    summary = stats.fold_mean(fake_rows(), n_boot=50)
    table = report.interval_table(summary.assign(method=["repri", "ce"]))
    assert list(table.index) == ["RePRI (paper text)", "CE from query-mean bias"]
    assert list(table.columns) == ["shots=1"]
    r = summary.iloc[0]
    assert table.iloc[0, 0] == (
        f"{100 * r['miou']:.1f} [{100 * r['miou_low']:.1f}, {100 * r['miou_high']:.1f}]"
    )


def test_markdown_summary(tmp_path):
    df = pd.DataFrame({"a": [1, 2], "b": [0.12345, float("nan")]}).set_index("a")
    text = report.markdown_table(df)
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | 0.123 |", "| 2 | nan |"]
    path = report.write_summary(tmp_path, "Title", ["Some words.", df])
    assert path.name == "summary.md"
    assert path.read_text().startswith("## Title\n\nSome words.\n\n| a | b |")


def test_saved_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        table = report.save_table(pd.DataFrame({"a": [1]}), tmp_path, "t")
        figure = report.save_figure(plots.new_figure(1, 1), tmp_path, "f")
    finally:
        os.umask(old)
    assert table.stat().st_mode & 0o777 == 0o644
    assert figure.stat().st_mode & 0o777 == 0o644
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
