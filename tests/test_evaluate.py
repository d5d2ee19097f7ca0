"""Feature cache and evaluation runner on a tiny VOC folder with a tiny random PSPNet."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from fsstools import config as config_lib
from fsstools import features
from fsstools.constants import IGNORE_INDEX
from fsstools.data.episodes import EpisodeSettings, sample_episodes
from fsstools.evaluation import pipeline as evaluate
from fsstools.evaluation import scoring, stats
from fsstools.inference import METHODS
from fsstools.models.checkpoints import CHECKPOINT_FORMAT
from fsstools.models.pspnet import ModelConfig, build_model
from fsstools.studies import report
from tests.fixtures import list_path, make_voc_folder

SIZE = 32  # test size: 24x32 images -> 24x32 resized, padded to 32x32, 4x4 features
MODEL = ModelConfig(arch="small", widths=(8, 8, 8, 8), stem_width=8, bottleneck_dim=16)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = make_voc_folder(tmp_path_factory.mktemp("voc"), list_name="val")
    torch.manual_seed(0)
    model = build_model(MODEL, n_classes=16).eval()
    ckpt = tmp_path_factory.mktemp("ckpt") / "best.pt"
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "model": model.state_dict(),
            "model_config": config_lib.to_dict(MODEL),
            "n_classes": 16,
        },
        ckpt,
    )
    el = sample_episodes(root, list_path(list_name="val"), EpisodeSettings("pascal", 0, 2, 12))
    cache = tmp_path_factory.mktemp("cache")
    store = features.ensure_features(
        ckpt, root, features.episode_images(el), "pascal", features.FeatureSettings(SIZE),
        cache_dir=cache, progress=False
    )
    return root, ckpt, el, store, cache


def test_feature_store_shapes_and_padding(setup):
    _, _, el, store, _ = setup
    n = len(features.episode_images(el))
    assert store.feats.shape == (n, 16, 4, 4)
    norms = np.linalg.norm(store.feats.astype(np.float64), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)  # L2-normalised over channels
    assert store.masks_full.shape == (n, SIZE, SIZE)
    # 24x32 images are padded at the bottom: rows 24.. are padding (255, invalid)
    assert (store.masks_full[:, 24:] == IGNORE_INDEX).all()
    assert not store.valid_full[:, 24:].any() and store.valid_full[:, :24].all()
    assert not store.valid_small[:, 3:].any()


def test_feature_cache_is_reused(setup, monkeypatch):
    root, ckpt, el, store, cache = setup

    def boom(*args, **kwargs):
        raise AssertionError("extract must not run again")

    monkeypatch.setattr(features, "extract", boom)
    again = features.ensure_features(
        ckpt, root, features.episode_images(el), "pascal", features.FeatureSettings(SIZE),
        cache_dir=cache, progress=False
    )
    assert again.key == store.key
    assert np.array_equal(np.asarray(again.feats), np.asarray(store.feats))


def test_missing_checkpoint_is_a_clear_error(setup, tmp_path):
    root, _, el, _, _ = setup
    with pytest.raises(FileNotFoundError, match="fsstools train"):
        features.ensure_features(
            tmp_path / "none.pt",
            root,
            features.episode_images(el),
            "pascal",
            features.FeatureSettings(SIZE),
            cache_dir=tmp_path,
        )


def test_task_batch_builds_binary_task_masks(setup):
    _, _, el, store, _ = setup
    tb = features.task_batch(store, el, [0, 1, 2])
    assert tb.support_feats.shape == (3, 2, 16, 4, 4)
    assert tb.query_feats.shape == (3, 16, 4, 4)
    assert tb.query_mask.shape == (3, SIZE, SIZE)
    for t in (tb.support_masks, tb.query_mask, tb.query_mask_small):
        assert set(t.unique().tolist()) <= {0, 1, IGNORE_INDEX}
    assert (tb.support_masks == 1).flatten(1).any(1).all()  # every support holds its class
    assert tb.class_id.tolist() == [el.episodes[i].class_id for i in range(3)]


def test_score_episodes_does_not_depend_on_batching(setup):
    _, _, el, store, _ = setup
    a, _ = scoring.score_episodes(store, el, METHODS["repri"], batch_tasks=5)
    b, _ = scoring.score_episodes(store, el, METHODS["repri"], batch_tasks=12)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == len(el.episodes)
    assert (a["fg_inter"] <= a["fg_union"]).all() and (a["bg_inter"] <= a["bg_union"]).all()
    assert a["true_share"].between(0, 1).all() and a["pi"].between(0, 1).all()


def test_summaries_are_bounded_and_bracket_the_estimate(setup):
    _, _, el, store, _ = setup
    rows = []
    for name in ("inductive", "repri"):
        r, _ = scoring.score_episodes(store, el, METHODS[name])
        rows.append(r.assign(method=name, fold=0, shots=2, seed=0))
    df = pd.concat(rows, ignore_index=True)
    summary = stats.summarize(df, n_boot=50)
    assert list(summary["method"]) == ["inductive", "repri"]
    for v in ("miou", "fbiou"):
        assert summary[v].between(0, 1).all()
        assert (summary[f"{v}_low"] <= summary[v] + 1e-12).all()
        assert (summary[v] <= summary[f"{v}_high"] + 1e-12).all()
    two_folds = pd.concat([df, df.assign(fold=1)], ignore_index=True)
    means = stats.fold_mean(two_folds, n_boot=50)
    assert np.allclose(means["miou"].to_numpy(), summary["miou"].to_numpy())
    table = report.interval_table(summary)
    assert table.index.tolist() == [report.label("inductive"), report.label("repri")]
    assert "[" in table.iloc[0, 0]


def test_evaluate_end_to_end_writes_results_and_config(setup, tmp_path, outputs, capsys):
    root, ckpt, _, _, _ = setup
    cfg = evaluate.EvalConfig(
        dataset="pascal",
        root=str(root),
        list_file=list_path(list_name="val"),
        size=SIZE,
        shots=(1,),
        n_episodes=6,
        methods=("inductive", "ce"),
        checkpoint=str(ckpt),
        n_boot=20,
        out_dir=str(tmp_path / "eval"),
    )
    results = evaluate.run_evaluation(cfg, progress=False)
    episodes, summary = results.rows, results.summary
    assert set(summary["method"]) == {"inductive", "ce"} and len(episodes) == 12
    for name in ("episodes.csv", "summary.csv", "classes.csv", "config.yaml", "meta.json"):
        assert (tmp_path / "eval" / name).is_file()
    assert config_lib.load(evaluate.EvalConfig, tmp_path / "eval" / "config.yaml") == cfg
    capsys.readouterr()
    again = evaluate.run_evaluation(cfg).rows  # everything reloaded (and said so): same tasks, scores
    pd.testing.assert_frame_equal(episodes, again)
    out = capsys.readouterr().out
    assert "reusing 6 1-shot episodes" in out and "reusing features of" in out
    assert out.count("reused from") == 2  # the scores of both methods


def test_non_finite_logits_name_the_episode(setup, monkeypatch):
    _, _, el, store, _ = setup
    real = scoring.run_method

    def broken(*args, **kwargs):
        out = real(*args, **kwargs)
        out.logits[1, 0, 0] = float("nan")
        return out

    monkeypatch.setattr(scoring, "run_method", broken)
    with pytest.raises(ValueError, match="non-finite logits .* on episode 1 "):
        scoring.score_episodes(store, el, METHODS["repri"])


def test_support_object_lost_by_downsampling_gets_one_cell_back():
    masks_full = np.zeros((1, 16, 16), dtype=np.uint8)
    masks_full[0, 5:7, 9:11] = 3  # 2x2 object between the nearest-neighbour samples
    small = np.zeros((1, 1, 4, 4), dtype=np.int64)  # nearest sampling missed it
    n = features.restore_lost_foreground(small, masks_full, np.array([[0]]), np.array([3]))
    assert n == 1 and small.sum() == 1 and small[0, 0, 1, 2] == 1


@pytest.mark.parametrize("reference", [False, True])
def test_pi_and_the_true_share_use_one_pixel_set(setup, reference):
    _, _, el, store, _ = setup
    # with the oracle prior, pi IS the true share: equal only if both use the same pixels
    method = dataclasses.replace(METHODS["oracle_repri_weights"], reference=reference)
    rows, _ = scoring.score_episodes(store, el, method)
    assert np.allclose(rows["pi"], rows["true_share"], atol=1e-6)
    # the estimated prior is measured against the same share (see stats.prior_errors)
    est, _ = scoring.score_episodes(store, el, dataclasses.replace(METHODS["repri"],
                                                                    reference=reference))
    assert np.allclose(est["true_share"], rows["true_share"])
