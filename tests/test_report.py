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


def test_fold_tables_put_each_fold_beside_the_fold_mean():
    rows = pd.concat([fake_rows(folds=(0, 1)), fake_rows(folds=(0, 1)).assign(shots=5)],
                     ignore_index=True).assign(method=lambda d: d["method"].map(
                         {"a": "ce", "b": "repri"}))
    per_fold = stats.summarize(rows, n_boot=50)
    mean = stats.fold_mean(rows, n_boot=50)
    tables = report.fold_tables(per_fold, mean)
    assert list(tables) == ["1 shot", "5 shots"]
    table = tables["1 shot"]
    assert list(table.columns) == ["fold 0", "fold 1", "mean over folds"]
    assert list(table.index) == ["CE from query-mean bias", "RePRI (paper text)"]
    r = per_fold[(per_fold["method"] == "repri") & (per_fold["fold"] == 1)
                 & (per_fold["shots"] == 1)].iloc[0]
    assert table.loc["RePRI (paper text)", "fold 1"] == (
        f"{100 * r['miou']:.1f} [{100 * r['miou_low']:.1f}, {100 * r['miou_high']:.1f}]")
    m = mean[(mean["method"] == "ce") & (mean["shots"] == 5)].iloc[0]
    assert tables["5 shots"].iloc[0, -1].startswith(f"{100 * m['miou']:.1f} [")
    only = report.fold_tables(per_fold, mean, only=["repri"])["1 shot"]
    assert list(only.index) == ["RePRI (paper text)"]
    assert only.iloc[0, -1] == table.iloc[1, -1]
    assert report.fold_tables(per_fold.iloc[:0], mean) == {}
    # a further grouping column titles each table
    by_domain = report.fold_tables(per_fold.assign(domain="A -> B"),
                                   mean.assign(domain="A -> B"), by=("domain", "shots"))
    assert list(by_domain) == ["A -> B, 1 shot", "A -> B, 5 shots"]
