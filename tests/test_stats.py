"""fsstools.stats: fold means, paired differences, traces and prior errors on result rows."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from fsstools import metrics, stats
from tests.tiny import fake_rows


def test_differences_match_paired_bootstrap_on_one_fold():
    rows = fake_rows(folds=(0,))
    diff = stats.differences(rows, reference="a", n_boot=200, seed=3)
    meter = {m: stats.meter(rows[rows["method"] == m]) for m in ("a", "b")}
    paired = metrics.paired_difference(meter["b"], meter["a"], n_boot=200, seed=3)
    row = diff.iloc[0]
    assert row["method"] == "b" and row["n_folds"] == 1
    for v in ("miou", "fbiou"):
        assert row[v] == pytest.approx(paired[v]["mean"])
        assert row[f"{v}_low"] == pytest.approx(paired[v]["low"])
        assert row[f"{v}_high"] == pytest.approx(paired[v]["high"])
    assert row["miou"] > 0  # b was built with larger intersections


def test_differences_refuse_other_episodes():
    rows = fake_rows(folds=(0,))
    rows.loc[rows["method"] == "b", "class_id"] += 1
    with pytest.raises(ValueError, match="same episodes"):
        stats.differences(rows, reference="a", n_boot=10)


def test_fold_mean_resamples_each_fold_independently():
    one = fake_rows(methods=("a",), folds=(0,))
    # two identical folds: with shared draws the interval of the mean would equal the
    # interval of one fold; independent draws average out and give a narrower one
    two = pd.concat([one, one.assign(fold=1)], ignore_index=True)
    single = stats.fold_mean(one, n_boot=400).iloc[0]
    both = stats.fold_mean(two, n_boot=400).iloc[0]
    assert both["miou"] == pytest.approx(single["miou"])
    width = lambda r: r["miou_high"] - r["miou_low"]  # noqa: E731
    assert width(both) < 0.85 * width(single)
    assert list(stats.fold_mean(fake_rows(), n_boot=50)["n_folds"]) == [2, 2]


def test_summaries_bracket_their_estimate():
    summary = stats.fold_mean(fake_rows(), n_boot=50)
    assert list(summary["method"]) == ["a", "b"]
    assert (summary["miou_low"] <= summary["miou"]).all()
    assert (summary["miou"] <= summary["miou_high"]).all()
    per_fold = stats.summarize(fake_rows(), n_boot=50)
    assert len(per_fold) == 4 and (per_fold["n_episodes"] == 30).all()


def test_trace_table_means_and_skips_inductive():
    traces = {
        ("repri", 0, 1, 0): {
            "ce": torch.tensor([[1.0, 3.0], [0.0, 2.0]]),
            "iou": torch.tensor([[0.5, float("nan")], [1.0, 0.0]]),
        },
        ("inductive", 0, 1, 0): {"ce": torch.tensor([[1.0, 3.0]])},
    }
    table = stats.trace_table(traces, terms=("ce", "iou"))
    assert set(table["method"]) == {"repri"}
    ce = table[table["term"] == "ce"].set_index("iteration")["mean"]
    assert ce.tolist() == [2.0, 1.0]
    iou0 = table[(table["term"] == "iou") & (table["iteration"] == 0)].iloc[0]
    assert iou0["mean"] == 0.5  # the NaN is skipped
    assert (table["low"] <= table["mean"]).all()


def test_traces_of_seeds_are_kept_apart():
    rows = pd.DataFrame({"method": "repri", "fold": 0, "shots": 1, "seed": [0, 1],
                         "episode": [0, 0], "true_share": [0.2, 0.4]})
    traces = {("repri", 0, 1, s): {"pi": torch.tensor([[0.1 * (s + 1)], [0.2 * (s + 1)]])}
              for s in (0, 1)}
    errors = stats.prior_errors(rows, traces)
    final = errors[errors["stage"].str.startswith("final")].set_index("seed")["rel_error"]
    assert final.loc[0] == pytest.approx(0.0, abs=1e-6)
    assert final.loc[1] == pytest.approx(0.0, abs=1e-6)


def test_prior_errors_use_first_and_last_prior():
    rows = pd.DataFrame(
        {
            "method": "repri",
            "fold": 0,
            "shots": 1,
            "seed": 0,
            "episode": [1, 0, 2],
            "true_share": [0.2, 0.1, 0.0],
        }
    )
    pi = torch.tensor([[0.2, 0.4, 0.5], [0.15, 0.3, 0.5], [0.1, 0.3, 0.5]])  # (T, E)
    errors = stats.prior_errors(rows, {("repri", 0, 1, 0): {"pi": pi}})
    assert len(errors) == 4  # episode 2 (true share 0) dropped, two stages
    first = errors[errors["stage"].str.startswith("initial")].set_index("episode")
    last = errors[errors["stage"].str.startswith("final")].set_index("episode")
    assert first.loc[0, "rel_error"] == pytest.approx(1.0)  # 0.2 / 0.1 - 1
    assert last.loc[0, "rel_error"] == pytest.approx(0.0, abs=1e-6)  # 0.1 / 0.1 - 1
    assert last.loc[1, "rel_error"] == pytest.approx(0.5)  # 0.3 / 0.2 - 1
    summary = stats.prior_error_summary(errors)
    assert summary.set_index("stage").loc["final (t=T)", "within_10pct"] == 0.5
