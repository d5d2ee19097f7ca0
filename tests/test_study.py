"""fsstools.study: profiles, cached scoring, summaries and the one-episode view (tiny data)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fsstools import metrics, study
from fsstools.data.episodes import Episode, EpisodeList
from fsstools.evaluate import EvalConfig, Study
from fsstools.features import FeatureStore
from fsstools.inference import METHODS

FEATURE_GRID = 4
IMAGE_SIZE = 16


def tiny_study(shots: tuple[int, ...] = (1, 2), n_images: int = 8, channels: int = 8) -> Study:
    """A Study over a hand-made FeatureStore: images alternate between classes 1 and 2, each
    holding its class in the top-left 2x2 cells of a 4x4 grid; every image is a query once."""
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(n_images, channels, FEATURE_GRID, FEATURE_GRID)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    classes = [1 + i % 2 for i in range(n_images)]
    small = np.zeros((n_images, FEATURE_GRID, FEATURE_GRID), dtype=np.uint8)
    for i, c in enumerate(classes):
        small[i, :2, :2] = c
    scale = IMAGE_SIZE // FEATURE_GRID
    full = small.repeat(scale, axis=1).repeat(scale, axis=2)
    names = [(f"JPEGImages/{i}.jpg", f"SegmentationClass/{i}.png") for i in range(n_images)]
    store = FeatureStore(
        feats,
        small,
        np.ones_like(small, bool),
        full,
        np.ones_like(full, bool),
        {img: i for i, (img, _) in enumerate(names)},
        key="tiny",
    )
    lists = {}
    for k in shots:
        eps = []
        for q in range(n_images):
            same = [j for j in range(n_images) if classes[j] == classes[q] and j != q]
            eps.append(Episode(names[q], classes[q], tuple(names[j] for j in same[:k])))
        lists[(k, 0)] = EpisodeList(
            "/nonexistent",
            "lists/val.txt",
            "synth",
            0,
            "interleaved",
            k,
            0,
            tuple(eps),
            hash=f"tiny-{k}",
        )
    cfg = EvalConfig(
        root="/nonexistent",
        size=IMAGE_SIZE,
        shots=shots,
        n_episodes=n_images,
        checkpoint=None,
        train_config=None,
    )
    return Study(cfg, Path("none.pt"), lists, store)


def fake_rows(methods=("a", "b"), folds=(0, 1), n: int = 30, seed: int = 0) -> pd.DataFrame:
    """Per-episode rows like study.score's, with random intersections and unions."""
    rng = np.random.default_rng(seed)
    frames = []
    for m_i, m in enumerate(methods):
        for fold in folds:
            union = rng.integers(50, 100, n)
            inter = (union * (0.4 + 0.2 * m_i) + rng.integers(0, 10, n)).astype(int)
            inter = np.minimum(inter, union)
            frames.append(
                pd.DataFrame(
                    {
                        "method": m,
                        "fold": fold,
                        "shots": 1,
                        "seed": 0,
                        "episode": np.arange(n),
                        "class_id": 1 + np.arange(n) % 5 + 5 * fold,
                        "fg_inter": inter,
                        "fg_union": union,
                        "bg_inter": 900 - union,
                        "bg_union": 950 - inter,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def test_profiles_and_train_config():
    with pytest.raises(ValueError, match="unknown profile"):
        study.get_profile("medium")
    quick = study.get_profile("quick")
    cfg = study.train_config(quick, 2)
    assert cfg.data.fold == 2 and cfg.run.name == "synth-quick-fold2"
    assert cfg.data.root == "data/synth_quick/A"
    full = study.train_config(study.get_profile("full"), 3)
    assert full.data.fold == 3 and full.run.name == "synth-fold3"
    assert study.project_root() == Path(__file__).resolve().parent.parent


def test_score_caches_per_method_and_episodes(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(study, "OUTPUTS", tmp_path)
    st = tiny_study()
    rows, traces = study.score(st, ["inductive", "repri"], trace=True)
    assert len(rows) == 2 * 2 * 8  # methods x shots x episodes
    assert set(traces) == {(m, 0, k) for m in ("inductive", "repri") for k in (1, 2)}
    assert traces[("repri", 0, 1)]["pi"].shape == (51, 8)
    assert rows[["fg_inter", "bg_inter"]].le(rows[["fg_union", "bg_union"]].values).all().all()
    capsys.readouterr()
    again, traces2 = study.score(st, ["inductive", "repri"], trace=True)
    assert capsys.readouterr().out.count("(cached)") == 4
    pd.testing.assert_frame_equal(rows, again)
    assert torch.equal(traces[("repri", 0, 2)]["loss"], traces2[("repri", 0, 2)]["loss"])
    # a relabelled method with the same settings reuses the scores; a changed one does not
    relabelled = {"mine": dataclasses.replace(METHODS["repri"], name="x")}
    mine, _ = study.score(st, relabelled)
    assert capsys.readouterr().out.count("(cached)") == 2
    assert set(mine["method"]) == {"mine"}
    study.score(st, {"slow": dataclasses.replace(METHODS["repri"], lr=0.01)})
    assert "(cached)" not in capsys.readouterr().out


def test_differences_match_paired_bootstrap_on_one_fold():
    rows = fake_rows(folds=(0,))
    diff = study.differences(rows, reference="a", n_boot=200, seed=3)
    meter = {m: study._meter(rows[rows["method"] == m]) for m in ("a", "b")}
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
        study.differences(rows, reference="a", n_boot=10)


def test_headline_and_interval_table():
    summary = study.headline(fake_rows(), n_boot=50)
    assert list(summary["method"]) == ["a", "b"] and (summary["n_folds"] == 2).all()
    assert (summary["miou_low"] <= summary["miou"]).all()
    table = study.interval_table(summary.assign(method=["repri", "ce"]))
    assert list(table.index) == ["RePRI (CE + H + KL)", "CE"]
    assert list(table.columns) == ["shots=1"]
    r = summary.iloc[0]
    assert table.iloc[0, 0] == (
        f"{100 * r['miou']:.1f} [{100 * r['miou_low']:.1f}, {100 * r['miou_high']:.1f}]"
    )


def test_trace_table_means_and_skips_inductive():
    traces = {
        ("repri", 0, 1): {
            "ce": torch.tensor([[1.0, 3.0], [0.0, 2.0]]),
            "iou": torch.tensor([[0.5, float("nan")], [1.0, 0.0]]),
        },
        ("inductive", 0, 1): {"ce": torch.tensor([[1.0, 3.0]])},
    }
    table = study.trace_table(traces, terms=("ce", "iou"))
    assert set(table["method"]) == {"repri"}
    ce = table[table["term"] == "ce"].set_index("iteration")["mean"]
    assert ce.tolist() == [2.0, 1.0]
    iou0 = table[(table["term"] == "iou") & (table["iteration"] == 0)].iloc[0]
    assert iou0["mean"] == 0.5  # the NaN is skipped
    assert (table["low"] <= table["mean"]).all()


def test_prior_errors_use_first_and_last_prior():
    rows = pd.DataFrame(
        {
            "method": "repri",
            "fold": 0,
            "shots": 1,
            "episode": [1, 0, 2],
            "true_share": [0.2, 0.1, 0.0],
        }
    )
    pi = torch.tensor([[0.2, 0.4, 0.5], [0.15, 0.3, 0.5], [0.1, 0.3, 0.5]])  # (T, E)
    errors = study.prior_errors(rows, {("repri", 0, 1): {"pi": pi}})
    assert len(errors) == 4  # episode 2 (true share 0) dropped, two stages
    first = errors[errors["stage"].str.startswith("initial")].set_index("episode")
    last = errors[errors["stage"].str.startswith("final")].set_index("episode")
    assert first.loc[0, "rel_error"] == pytest.approx(1.0)  # 0.2 / 0.1 - 1
    assert last.loc[0, "rel_error"] == pytest.approx(0.0, abs=1e-6)  # 0.1 / 0.1 - 1
    assert last.loc[1, "rel_error"] == pytest.approx(0.5)  # 0.3 / 0.2 - 1
    summary = study.prior_error_summary(errors)
    assert summary.set_index("stage").loc["final (t=T)", "within_10pct"] == 0.5


def test_setting_methods_and_columns():
    deltas = study.delta_methods([-0.5, 0.0])
    assert list(deltas) == ["oracle delta=-0.50", "oracle delta=+0.00"]
    assert deltas["oracle delta=+0.00"] == METHODS["oracle_repri"]
    t_pi = study.t_pi_methods([[], [10, 25]])
    assert [m.t_pi for m in t_pi.values()] == [(), (10, 25)]
    rows = pd.DataFrame({"method": list(t_pi)})
    assert study.with_setting(rows, t_pi, "t_pi")["t_pi"].tolist() == ["none", "10+25"]
    configs = study.method_configs(["repri", dataclasses.replace(METHODS["ce"], name="probe")])
    assert list(configs) == ["repri", "probe"]


def test_markdown_summary(tmp_path):
    df = pd.DataFrame({"a": [1, 2], "b": [0.12345, float("nan")]}).set_index("a")
    text = study.markdown_table(df)
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | 0.123 |", "| 2 | nan |"]
    path = study.write_summary(tmp_path, "Title", ["Some words.", df])
    assert path.name == "summary.md"
    assert path.read_text().startswith("## Title\n\nSome words.\n\n| a | b |")


def test_episode_view_on_tiny_study():
    view = study.episode_view(tiny_study(), shots=2, index=3, images=False)
    assert view.class_id == 2 and view.class_name.startswith("rectangle")
    assert view.support_images.shape == (2, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert view.support_masks.shape == (2, IMAGE_SIZE, IMAGE_SIZE)
    assert set(np.unique(view.support_masks)) == {0, 1}
    assert view.prediction.shape == view.initial.shape == (IMAGE_SIZE, IMAGE_SIZE)
    assert view.cosine.shape == view.probs.shape == (FEATURE_GRID, FEATURE_GRID)
    assert len(view.traces["loss"]) == METHODS["repri"].steps + 1
    assert view.true_share == pytest.approx(4 / 16)
    assert -1 <= view.cosine.min() and view.cosine.max() <= 1 + 1e-6


def test_mask_iou_and_feature_pca():
    mask = np.array([[1, 0], [255, 1]])
    assert study.mask_iou(np.array([[True, True], [True, False]]), mask) == pytest.approx(1 / 3)
    assert np.isnan(study.mask_iou(np.zeros((2, 2), bool), np.zeros((2, 2), int)))
    feats = np.random.default_rng(0).normal(size=(2, 6, 3, 3))
    pca = study.feature_pca(feats)
    assert pca.shape == (2, 3, 3, 3) and pca.min() >= 0 and pca.max() <= 1
