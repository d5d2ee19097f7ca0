"""Readings written from the numbers: every sentence quotes its interval, and a gap whose
interval covers 0 is called level."""

from __future__ import annotations

import pandas as pd
import pytest

from fsstools.studies import fold_readings, readings


def diff_rows(values: dict[tuple[str, int], tuple[float, float, float]], key: str = "method"
              ) -> pd.DataFrame:
    return pd.DataFrame([{key: k, "shots": s, "miou": v[0], "miou_low": v[1], "miou_high": v[2],
                          "interval": "base seeds x episodes"}
                         for (k, s), v in values.items()])


@pytest.mark.parametrize("low, high, expected, printed", [
    (0.01, 0.03, "ahead", "+2.0 [+1.0, +3.0]"),
    (-0.03, -0.01, "behind", "-2.0 [-3.0, -1.0]"),
    (-0.01, 0.02, "level", "+0.5 [-1.0, +2.0]"),
    (0.0, 0.02, "level", "+1.0 [0, +2.0]"),  # touching 0: level
    (1e-6, 0.02, "ahead", "+1.0 [+<0.05, +2.0]"),  # excluding 0 by a hair
    (-0.02, -1e-6, "behind", "-1.0 [-2.0, -<0.05]"),
    (-0.003, 0.0004, "level", "-0.1 [-0.3, +<0.05]"),  # touching 0 by rounding only
    (-0.0004, 0.011, "level", "+0.5 [-<0.05, +1.1]"),
])
def test_verdict_calls_an_interval_covering_zero_level(low, high, expected, printed):
    row = pd.Series({"miou": (low + high) / 2, "miou_low": low, "miou_high": high})
    assert readings.verdict(row, "ahead", "behind") == expected
    assert readings.signed_gap(row) == printed
    assert readings.gap_with_verdict(row) == f"{printed} ({expected})"


@pytest.mark.parametrize("value, signed, unsigned", [
    (0.0, "0", "0"), (0.00049, "+<0.05", "+<0.05"), (-0.00049, "-<0.05", "-<0.05"),
    (0.0005, "+0.1", "0.1"), (-0.0006, "-0.1", "-0.1"), (0.1234, "+12.3", "12.3"),
])
def test_no_nonzero_bound_prints_as_zero(value, signed, unsigned):
    assert readings.bound_text(value) == signed
    assert readings.bound_text(value, signed=False) == unsigned


def test_tables_and_sentences_print_the_same_bounds():
    from fsstools.studies import report

    diffs = diff_rows({("ce", 10): (0.006, 0.0004, 0.011), ("ce_h", 10): (-0.001, -0.003, 0.0)})
    table = report.interval_table(diffs)
    assert table.loc["CE from query-mean bias", "shots=10"] == "0.6 [+<0.05, 1.1]"
    assert table.loc["CE + H", "shots=10"] == "-0.1 [-0.3, 0]"
    notes = readings.difference_notes(diffs, "repri", labels=report.label)
    assert "+0.6 [+<0.05, +1.1] at 10 shots (ahead)" in notes[0]
    assert "-0.1 [-0.3, 0] at 10 shots (level)" in notes[1]


def test_difference_notes_quote_each_interval_and_its_verdict():
    diffs = diff_rows({("ce", 1): (-0.03, -0.044, -0.018), ("ce", 5): (0.006, -0.002, 0.013)})
    (note,) = readings.difference_notes(diffs, "repri", labels=str.upper)
    assert note.startswith("**CE** minus REPRI:")
    assert "-3.0 [-4.4, -1.8] at 1 shot (behind)" in note
    assert "+0.6 [-0.2, +1.3] at 5 shots (level)" in note
    assert readings.coverage_note(diffs, 3).startswith(
        "Intervals (95%) cover base seeds x episodes (3 base seeds per fold)")


def test_shot_gain_and_seed_spread_are_computed_from_the_tables():
    summary = pd.DataFrame({"method": ["a", "a", "b", "b"], "shots": [1, 10, 1, 10],
                            "miou": [0.40, 0.76, 0.67, 0.76]})
    note = readings.shot_gain_note(summary)
    assert "from 1 to 10 shots" in note and note.index("a +36.0") < note.index("b +9.0")
    assert readings.shot_gain_note(summary[summary["shots"] == 1]) is None
    spread = pd.DataFrame({"method": "ce", "shots": 1, "base_seed": [0, 1, 2],
                           "miou_diff": [-0.03, -0.018, -0.01]})
    (note,) = readings.spread_notes(spread, "repri", ["ce", "absent"])
    assert "-3.0 / -1.8 / -1.0 (range 2.0)" in note and "3 seeds" in note
    assert readings.spread_note(spread[spread["base_seed"] == 0], "x", "miou_diff") is None


def test_base_model_reading_reports_flatness_and_seed_spread():
    models = pd.DataFrame({"fold": [0, 0, 1, 1], "base_seed": [0, 1, 0, 1],
                           "last_epoch_gain_points": [-0.1, 0.3, 0.2, -1.4],
                           "val_miou_base_classes": [0.90, 0.86, 0.88, 0.88]})
    notes = readings.base_model_reading(models)
    assert "at most 1.4 points" in notes[0] and "not converged" in notes[0]
    assert "fold 0 88.0 (seeds 90.0 / 86.0, range 4.0)" in notes[1]
    assert "up to 4.0 points" in notes[2]
    flat = readings.base_model_reading(models.assign(last_epoch_gain_points=0.2, base_seed=0))
    assert "every curve had flattened" in flat[0] and len(flat) == 2


def test_prior_reading_names_the_level_perturbations_per_configuration():
    errors = pd.DataFrame({"shots": [1], "stage": ["final (t=T)"], "median_error": [0.32],
                           "within_10pct": [0.2]})
    delta = pd.DataFrame([
        {"config": c, "prior_delta": d, "shots": 1, "miou": m, "miou_low": m - 0.01,
         "miou_high": m + 0.01}
        for c, vals in {"oracle_repri": {-0.1: -0.02, 0.1: -0.005},
                        "oracle_repri_weights": {-0.1: -0.004, 0.1: 0.003}}.items()
        for d, m in vals.items()])
    t_pi = diff_rows({("5", 1): (0.009, 0.005, 0.012)}, key="t_pi")
    notes = readings.prior_reading(errors, delta, t_pi, {"oracle_repri": "authors"})
    assert "median +32%" in notes[0] and "20% of tasks" in notes[0]
    authors = next(n for n in notes if "**authors, 1-shot" in n)
    assert authors.endswith("Level with the exact prior at +10%; behind at -10%.")
    weights = next(n for n in notes if "**oracle_repri_weights, 1-shot" in n)
    assert weights.endswith("Level with the exact prior at -10%, +10%.")
    costs = readings.delta_notes(delta.assign(miou_high=-0.001), {})
    assert all(n.endswith("Every perturbation tested costs mIoU.") for n in costs)
    gains = readings.delta_notes(delta.assign(miou=0.005, miou_low=0.0001, miou_high=0.01), {})
    assert gains[0].endswith("Ahead at -10%, +10%.") and "-10%: +0.5 [+<0.05, +1.0]" in gains[0]
    assert any("t_pi = 5** minus t_pi = 10: +0.9 [+0.5, +1.2] at 1 shot (ahead)" in n
               for n in notes)


def test_domain_reading_splits_by_domain_and_gives_drops():
    diffs = pd.concat([diff_rows({("ce", 1): (-0.116, -0.126, -0.106)}).assign(domain=d)
                       for d in ("A -> A", "A -> B")], ignore_index=True)
    drop = pd.DataFrame({"method": ["ce", "ce"], "shots": [1, 5], "drop_points": [20.5, 3.25]})
    rows = pd.DataFrame({"fold": [0, 0], "base_seed": [0, 1]})
    notes = readings.domain_reading(rows, diffs, drop)
    assert "(2 base seeds per fold)" in notes[0]
    assert sum(n.startswith("- A -> B: **ce** minus repri") for n in notes) == 1
    assert "ce 20.5 / 3.2" in notes[-1] and "1 / 5 shots" in notes[-1]


def test_nothing_to_compare_gives_no_sentence():
    assert readings.difference_notes(pd.DataFrame(), "repri") == []
    drop = pd.DataFrame({"method": ["ce"], "shots": [1], "drop_points": [2.0]})
    notes = readings.domain_reading(pd.DataFrame({"fold": [0]}), pd.DataFrame(), drop)
    assert len(notes) == 2 and "ce 2.0" in notes[1]


def test_walkthrough_reading_follows_the_task_and_the_kl_reset():
    numbers = pd.Series({"shots": 1, "initial IoU": 0.41, "final IoU": 0.735,
                         "pi at t=0": 0.3, "pi at the end": 0.12, "true share": 0.1})
    traces = pd.DataFrame({"kl": [0.0] + [0.05] * 8 + [0.0] + [0.01] * 41})
    notes = readings.walkthrough_reading(numbers, traces, (10,))
    assert "from 41.0 (its initial classifier) to 73.5" in notes[0]
    assert "relative error +200%" in notes[1] and "0.120 (+20%)" in notes[1]
    assert "was 0.0500 on the pass before the update at t_pi = 10 and 0.0000" in notes[2]
    assert len(readings.walkthrough_reading(numbers, traces, ())) == 3


def _flipped_on_fold_3() -> pd.DataFrame:
    """b ahead of a on folds 0-2 by about 20 points; on fold 3 the two swap records."""
    from tests.tiny import fake_rows

    rows = fake_rows(folds=(0, 1, 2, 3))
    fold3 = rows["fold"] == 3
    rows.loc[fold3, "method"] = rows.loc[fold3, "method"].map({"a": "b", "b": "a"})
    return rows


def test_fold_sign_notes_name_the_fold_that_flips_a_contrast():
    from fsstools.evaluation import stats

    rows = _flipped_on_fold_3()
    per_fold = stats.differences(rows, reference="a", by=("shots", "fold"), n_boot=100)
    mean = stats.differences(rows, reference="a", n_boot=100)
    (note,) = fold_readings.fold_sign_notes(per_fold, mean, "a", labels=str.upper)
    assert note.startswith("**B minus A, per fold**")
    r3, m = per_fold[per_fold["fold"] == 3].iloc[0], mean.iloc[0]
    assert r3["miou_high"] < 0 < m["miou_low"]  # built so: fold 3 behind, the mean ahead
    assert (f"at 1 shot the fold mean is {readings.signed_gap(m)} (ahead) but fold 3 has "
            f"{readings.signed_gap(r3)} (behind).") in note
    assert "fold 0" not in note and "fold 1" not in note and "fold 2" not in note
    assert fold_readings.fold_sign_notes(per_fold, mean, "a", only=["c"]) == []
    # the same folds without the swap: nothing flips, and the reading says so
    same = per_fold[per_fold["fold"] < 3]
    (note,) = fold_readings.fold_sign_notes(same, mean, "a", labels=str.upper)
    assert note.startswith("**Per fold** (3 folds): every fold has the sign of the fold mean")
    assert fold_readings.fold_sign_notes(per_fold[per_fold["fold"] == 0], mean, "a") == []


def test_fold_sign_notes_need_one_resolved_interval():
    fold = lambda f, v: {"fold": f, **v}  # noqa: E731
    per_fold = pd.DataFrame([
        fold(0, {"method": "ce", "shots": 1, "miou": 0.02, "miou_low": 0.01, "miou_high": 0.03}),
        fold(1, {"method": "ce", "shots": 1, "miou": -0.004, "miou_low": -0.012,
                 "miou_high": 0.004}),
        fold(0, {"method": "ce", "shots": 5, "miou": -0.004, "miou_low": -0.012,
                 "miou_high": 0.004}),
        fold(1, {"method": "ce", "shots": 5, "miou": 0.003, "miou_low": -0.001,
                 "miou_high": 0.007}),
    ])
    # 1 shot: the mean is resolved (ahead), fold 1 is level on the other side: named.
    # 5 shots: mean and folds all level: no sign is resolved, nothing named.
    mean = diff_rows({("ce", 1): (0.008, 0.001, 0.015), ("ce", 5): (-0.0005, -0.006, 0.005)})
    (note,) = fold_readings.fold_sign_notes(per_fold, mean, "repri")
    gap = readings.signed_gap
    assert note == (f"**ce minus repri, per fold**: at 1 shot the fold mean is {gap(mean.iloc[0])} "
                    f"(ahead) but fold 1 has {gap(per_fold.iloc[1])} (level).")
