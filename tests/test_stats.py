"""fsstools.evaluation.stats: fold means, paired differences, traces and prior errors on result rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fsstools import metrics
from fsstools.evaluation import stats
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


def width(row, v="miou"):
    return row[f"{v}_high"] - row[f"{v}_low"]


def crossed_rows(scales, folds=(0,), n=30, gain=None):
    """Method "a" scored with one base seed per entry of ``scales`` on the same episodes:
    intersections are ``scales[s]`` of the union; with ``gain``, method "b" adds ``gain``
    of the union on every base seed (unions are multiples of 10, so exactly)."""
    rng = np.random.default_rng(0)
    frames = []
    for fold in folds:
        union = 10 * rng.integers(5, 10, n)
        jitter = rng.uniform(-0.1, 0.1, n)
        for s, scale in enumerate(scales):
            inter = {"a": np.round(union * (scale + jitter)).astype(int)}
            if gain is not None:
                inter["b"] = inter["a"] + np.round(union * (gain + jitter / 2)).astype(int)
            for m, fg in inter.items():
                frames.append(pd.DataFrame({
                    "method": m, "fold": fold, "shots": 1, "seed": 0, "base_seed": s,
                    "episode": np.arange(n), "class_id": 1 + np.arange(n) % 5 + 5 * fold,
                    "fg_inter": fg, "fg_union": union, "bg_inter": 900 - union,
                    "bg_union": 950 - fg}))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def test_rows_without_base_seeds_keep_the_episode_bootstrap():
    rows = fake_rows(methods=("a",), folds=(0, 1))
    row = stats.fold_mean(rows, n_boot=100, seed=2).iloc[0]
    points, draws = [], []
    for fold in (0, 1):
        m = stats.meter(rows[rows["fold"] == fold])
        points.append(metrics.point_scores(m)["miou"])
        draws.append(metrics.bootstrap_draws([m], 100, 2, stratum=fold)[0]["miou"])
    ci = metrics.interval(float(np.mean(points)), torch.stack(draws).mean(0))
    assert (row["miou"], row["miou_low"], row["miou_high"]) == (ci["mean"], ci["low"], ci["high"])
    assert row["n_base_seeds"] == 1 and row["interval"] == "episodes"
    # one base seed per fold changes nothing, in any table
    one = rows[rows["fold"] == 0]
    for f in (stats.fold_mean, stats.summarize):
        pd.testing.assert_frame_equal(f(one, n_boot=20), f(one.assign(base_seed=7), n_boot=20))
    two = fake_rows(folds=(0,))
    pd.testing.assert_frame_equal(stats.differences(two, "a", n_boot=20),
                                  stats.differences(two.assign(base_seed=7), "a", n_boot=20))


def test_identical_base_seeds_give_the_single_seed_interval():
    one, three = crossed_rows([0.5]), crossed_rows([0.5, 0.5, 0.5])
    for f in (stats.fold_mean, stats.summarize):
        single, crossed = f(one, n_boot=200).iloc[0], f(three, n_boot=200).iloc[0]
        for c in ("miou", "miou_low", "miou_high", "fbiou_low", "fbiou_high"):
            assert crossed[c] == pytest.approx(single[c], abs=1e-12)
        assert (single["n_base_seeds"], single["interval"]) == (1, "episodes")
        assert (crossed["n_base_seeds"], crossed["interval"]) == (3, "base seeds x episodes")
    assert stats.summarize(three, n_boot=10)["n_episodes"].iloc[0] == 30  # per base seed


def test_disagreeing_base_seeds_widen_the_interval():
    agree = stats.fold_mean(crossed_rows([0.5, 0.5, 0.5]), n_boot=300).iloc[0]
    disagree = stats.fold_mean(crossed_rows([0.7, 0.5, 0.3]), n_boot=300).iloc[0]
    assert disagree["miou"] == pytest.approx(agree["miou"], abs=0.01)  # mean of the seeds
    assert width(disagree) > 3 * width(agree)
    # the seed picks reach the extremes: the interval spans most of the seeds' spread
    assert disagree["miou_low"] < 0.4 and disagree["miou_high"] > 0.6


def test_paired_differences_pair_over_base_seeds():
    rows = crossed_rows([0.8, 0.5, 0.2], gain=0.1)
    diff = stats.differences(rows, reference="a", n_boot=300).iloc[0]
    single = stats.differences(rows[rows["base_seed"] == 0], reference="a", n_boot=300).iloc[0]
    assert diff["interval"] == "base seeds x episodes" and diff["n_base_seeds"] == 3
    assert diff["miou"] == pytest.approx(single["miou"], abs=1e-9)  # the same gain on every seed
    assert width(diff) == pytest.approx(width(single), abs=1e-9)
    score_a = stats.fold_mean(rows[rows["method"] == "a"], n_boot=300).iloc[0]
    assert width(score_a) > 10 * width(diff)  # the seeds shift both methods alike


def test_differences_refuse_other_base_seeds():
    rows = crossed_rows([0.5, 0.4], gain=0.1)
    rows = rows[(rows["method"] == "a") | (rows["base_seed"] == 0)]
    with pytest.raises(ValueError, match="other base seeds in fold 0"):
        stats.differences(rows, reference="a", n_boot=10)


def test_base_seeds_on_other_episodes_are_refused():
    rows = crossed_rows([0.5, 0.4])
    rows.loc[(rows["base_seed"] == 1) & (rows["episode"] == 3), "class_id"] += 1
    with pytest.raises(ValueError, match="fold 0: base seeds 0 and 1 were not scored"):
        stats.fold_mean(rows, n_boot=10)
    short = crossed_rows([0.5, 0.4]).query("base_seed == 0 or episode < 29")
    with pytest.raises(ValueError, match="30 and 29 episodes"):
        stats.summarize(short, n_boot=10)


def test_seed_spread_scores_each_base_seed():
    rows = crossed_rows([0.8, 0.5], folds=(0, 1), gain=0.1)
    spread = stats.seed_spread(rows, reference="a")
    assert len(spread) == 4 and list(spread["base_seed"]) == [0, 1, 0, 1]
    for r in spread.itertuples():
        sel = rows[(rows["method"] == r.method) & (rows["base_seed"] == r.base_seed)]
        ref = rows[(rows["method"] == "a") & (rows["base_seed"] == r.base_seed)]
        folds = [metrics.point_scores(stats.meter(sel[sel["fold"] == f])) for f in (0, 1)]
        refs = [metrics.point_scores(stats.meter(ref[ref["fold"] == f])) for f in (0, 1)]
        assert r.miou == pytest.approx(np.mean([p["miou"] for p in folds]))
        assert r.fbiou_diff == pytest.approx(
            np.mean([p["fbiou"] - q["fbiou"] for p, q in zip(folds, refs, strict=True)]))
    a = spread[spread["method"] == "a"].set_index("base_seed")
    assert (a["miou_diff"] == 0).all() and a.loc[0, "miou"] > a.loc[1, "miou"] + 0.2
    summary = stats.spread_summary(spread).set_index("method")
    assert summary.loc["a", "n_base_seeds"] == 2
    assert summary.loc["a", "miou_range"] == pytest.approx(a["miou"].max() - a["miou"].min())
    assert summary.loc["b", "miou_diff_range"] < 0.01  # the same gain on both seeds
    with pytest.raises(ValueError, match="no base_seed"):
        stats.seed_spread(fake_rows())


def _hand_rows() -> pd.DataFrame:
    """Two methods, two folds, two base seeds, two episodes (one class each) per fold: each
    class IoU is one episode's intersection over union, so the scores are hand-computable."""
    fg = {  # (method, fold, base seed) -> ((inter, union) of episode 0, of episode 1)
        ("a", 0, 0): ((5, 10), (3, 6)), ("a", 0, 1): ((5, 10), (3, 6)),  # 0.50, 0.50
        ("a", 1, 0): ((9, 10), (6, 6)), ("a", 1, 1): ((9, 10), (6, 6)),  # 0.95, 0.95
        ("b", 0, 0): ((8, 10), (3, 6)), ("b", 0, 1): ((6, 12), (3, 6)),  # 0.65, 0.50
        ("b", 1, 0): ((7, 10), (6, 6)), ("b", 1, 1): ((6, 10), (6, 6)),  # 0.85, 0.80
    }
    return pd.DataFrame([
        {"method": m, "fold": f, "shots": 1, "seed": 0, "base_seed": s, "episode": e,
         "class_id": 1 + e + 2 * f, "fg_inter": i, "fg_union": u, "bg_inter": 90,
         "bg_union": 100}
        for (m, f, s), eps in fg.items() for e, (i, u) in enumerate(eps)])


def test_per_fold_scores_and_differences_are_the_terms_of_the_fold_means():
    rows = _hand_rows()
    per_fold = stats.summarize(rows, by=("method", "fold", "shots"), n_boot=50)
    miou = per_fold.set_index(["method", "fold"])["miou"]
    # each fold: the mean over its base seeds of the class mIoU on all episodes (pooling the
    # seeds' records would give 0.568 for b on fold 0)
    assert miou.to_dict() == pytest.approx({("a", 0): 0.5, ("a", 1): 0.95,
                                            ("b", 0): 0.575, ("b", 1): 0.825})
    assert set(per_fold["interval"]) == {stats.SEEDS_X_EPISODES}
    assert (per_fold["n_base_seeds"] == 2).all()
    mean = stats.fold_mean(rows, n_boot=50).set_index("method")["miou"]
    assert mean.to_dict() == pytest.approx({"a": 0.725, "b": 0.7})
    # a fold's row carries the very resamples the fold mean averages: alone, it is its mean
    alone = stats.fold_mean(rows[rows["fold"] == 1], n_boot=50).set_index("method")
    for _, r in per_fold[per_fold["fold"] == 1].iterrows():
        for col in ("miou", "miou_low", "miou_high", "fbiou_low", "fbiou_high"):
            assert r[col] == pytest.approx(alone.loc[r["method"], col])
    diff = stats.differences(rows, reference="a", by=("shots", "fold"), n_boot=50)
    assert diff.set_index("fold")["miou"].to_dict() == pytest.approx({0: 0.075, 1: -0.125})
    assert (diff["miou_low"] <= diff["miou"] + 1e-12).all()
    assert (diff["miou"] <= diff["miou_high"] + 1e-12).all()
    (over_folds,) = stats.differences(rows, reference="a", n_boot=50)["miou"]
    assert over_folds == pytest.approx(diff["miou"].mean()) == pytest.approx(-0.025)
