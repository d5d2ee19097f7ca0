"""The peers' own inference through the one scoring pipeline, and the meta-learning recipe
(fsstools.studies.meta_learning) on a tiny synthetic profile."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from fsstools import config as config_lib
from fsstools.data.synth.generate import SynthConfig
from fsstools.errors import ConfigError
from fsstools.evaluation import pipeline as evaluate
from fsstools.evaluation import stats
from fsstools.evaluation.pipeline import Study
from fsstools.evaluation.scoring import score_episodes
from fsstools.features import task_batch
from fsstools.inference import METHODS, query_valid_mask, resolve_method, run_method
from fsstools.inference.peers import PANET_SCALE
from fsstools.models import PSPNet
from fsstools.models.checkpoints import CHECKPOINT_FORMAT, PFENET_FORMAT, checkpoint_meta
from fsstools.models.pfenet import PFENet
from fsstools.studies import meta_learning
from fsstools.studies.profiles import Profile
from tests.tiny import FEATURE_GRID, IMAGE_SIZE, TINY_MODEL, TINY_PFENET, tiny_study

TRUNK_INPUT = 32
"""Image side whose small-trunk features lie on the tiny stores' 4x4 grid (stride 8)."""
pytestmark = pytest.mark.usefixtures("one_thread")


def with_feats(st: Study, feats: np.ndarray, checkpoint=None) -> Study:
    store = dataclasses.replace(st.store, feats=feats.astype(np.float32))
    return Study(st.cfg, checkpoint or st.checkpoint, st.episode_lists, store)


def pfenet_checkpoint(path, seed: int = 0) -> PFENet:
    """Save a tiny PFENet-style peer as an fsstools checkpoint at ``path``; returns it."""
    torch.manual_seed(seed)
    model = PFENet(TINY_MODEL, TINY_PFENET).eval()
    torch.save({"format": PFENET_FORMAT, "model": model.state_dict(),
                "model_config": config_lib.to_dict(TINY_MODEL),
                "pfenet_config": config_lib.to_dict(TINY_PFENET)}, path)
    return model


def pfenet_study(tmp_path, seed: int = 0) -> tuple[Study, PFENet]:
    """tiny_study with the features a tiny PFENet's trunk gives random images, as the
    feature cache would store them, and that PFENet's checkpoint."""
    path = tmp_path / "pfenet.pt"
    model = pfenet_checkpoint(path, seed)
    st = tiny_study(shots=(1, 2))
    images = torch.randn(len(st.store.index), 3, TRUNK_INPUT, TRUNK_INPUT,
                         generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats = F.normalize(model.extract_features(images), dim=1).numpy()
    assert feats.shape[-1] == FEATURE_GRID
    return with_feats(st, feats, path), model


# ----------------------------------------------------------------------------- methods


def test_peer_methods_are_registered_inductive_and_take_no_step():
    for name in ("panet", "pfenet"):
        m = METHODS[name]
        assert m.classifier == name and m.inductive and m.iterations == 0
    assert resolve_method({"name": "panet10", "base": "panet", "tau": 10}).tau == 10
    with pytest.raises(ValueError, match="one forward pass"):
        resolve_method({"name": "x", "base": "panet", "iterations": 5})
    with pytest.raises(ValueError, match="classifier"):
        resolve_method({"name": "x", "classifier": "hsnet"})


def test_pfenet_without_its_model_is_refused_by_run_method():
    tb = task_batch(tiny_study().store, tiny_study().episode_lists[1, 0], range(2))
    valid = query_valid_mask(tb.query_mask_small, tb.query_valid_small)
    with pytest.raises(ValueError, match="pass its model"):
        run_method(METHODS["pfenet"], tb.support_feats, tb.support_masks, tb.query_feats, valid)


def test_panet_scores_separable_features_perfectly_and_reports_no_prior():
    """Foreground cells carry e0, the rest e1: PANet's prototypes separate them exactly."""
    st = tiny_study(shots=(1, 2))
    masks = np.asarray(st.store.masks_small)
    feats = np.zeros_like(np.asarray(st.store.feats))
    feats[:, 0] = masks > 0
    feats[:, 1] = masks == 0
    st = with_feats(st, feats)
    for k in (1, 2):
        el = st.episode_lists[k, 0]
        tb = task_batch(st.store, el, range(len(el.episodes)))
        valid = query_valid_mask(tb.query_mask_small, tb.query_valid_small)
        out = run_method(METHODS["panet"], tb.support_feats, tb.support_masks, tb.query_feats,
                         valid)
        expected = PANET_SCALE * (2.0 * (tb.query_mask_small == 1) - 1)  # +-20 per cell
        assert torch.allclose(out.logits, expected, atol=1e-4)
        rows, traces = score_episodes(st.store, el, METHODS["panet"], trace=True)
        assert len(rows) == len(st.store.index) and traces == {}
        # exact on the grid; at image size only the bilinear border of the object moves
        assert (rows["fg_inter"] / rows["fg_union"]).min() > 0.9
        assert rows["pi"].isna().all()  # no prior: the predicted share is pred_share
        share = (2 * 2) / FEATURE_GRID**2  # the class holds 2x2 of the 4x4 cells
        assert np.allclose(rows["pred_share"], share, atol=0.02)


def test_pfenet_rows_are_the_models_own_prediction(tmp_path, outputs):
    st, model = pfenet_study(tmp_path)
    rows = evaluate.score(st, ["pfenet"], progress=False).rows
    assert rows["pi"].isna().all() and len(rows) == 2 * len(st.store.index)
    for k in (1, 2):
        el = st.episode_lists[k, 0]
        tb = task_batch(st.store, el, range(len(el.episodes)))
        with torch.no_grad():
            logits = model(tb.support_feats, tb.support_masks, tb.query_feats)["logits"]
        up = F.interpolate((logits[:, 1] - logits[:, 0])[:, None], size=(IMAGE_SIZE,) * 2,
                           mode="bilinear", align_corners=True)[:, 0]
        pred, gt = (up > 0).numpy(), tb.query_mask.numpy()
        scored = gt != 255
        expected_inter = ((pred & (gt == 1)) & scored).sum((1, 2))
        expected_union = ((pred | (gt == 1)) & scored).sum((1, 2))
        got = rows[rows["shots"] == k].sort_values("episode")
        assert np.array_equal(got["fg_inter"], expected_inter)
        assert np.array_equal(got["fg_union"], expected_union)


def test_pfenet_scores_are_keyed_by_the_checkpoint(tmp_path, outputs, capsys):
    st, _ = pfenet_study(tmp_path)
    first = evaluate.score(st, ["pfenet", "panet"]).rows
    again = evaluate.score(st, ["pfenet", "panet"]).rows
    assert capsys.readouterr().out.count("reused from") == 4
    pd.testing.assert_frame_equal(first, again)
    pfenet_checkpoint(st.checkpoint, seed=1)  # other weights, same path and features
    fresh = Study(st.cfg, st.checkpoint, st.episode_lists, st.store)
    evaluate.score(fresh, ["pfenet", "panet"])
    out = capsys.readouterr().out
    assert out.count("reused from") == 2  # panet's scores do not depend on the checkpoint
    assert all("reused" not in line for line in out.splitlines() if " pfenet " in line)


def test_pfenet_on_a_base_checkpoint_is_a_config_error_naming_the_fix(tmp_path, outputs):
    path = tmp_path / "base.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model": PSPNet(TINY_MODEL, 16).state_dict(),
                "model_config": config_lib.to_dict(TINY_MODEL), "n_classes": 16}, path)
    st = dataclasses.replace(tiny_study(), checkpoint=path)
    with pytest.raises(ConfigError, match=r"method pfenet .* holds a PSPNet model") as err:
        evaluate.score(st, ["repri", "pfenet"], progress=False)
    assert "episodic_pfenet.yaml" in str(err.value) and err.value.key == "methods"
    assert not list((outputs / "cache" / "scores").glob("*.csv"))  # refused before scoring
    rows = evaluate.score(st, ["panet"], progress=False).rows  # PANet's classifier: any features
    assert len(rows) == 2 * 8


def test_traces_of_a_peer_are_empty_and_the_trace_table_skips_them(outputs):
    scores = evaluate.score(tiny_study(), ["panet", "repri"], trace=True, progress=False)
    assert scores.traces[("panet", 0, 1, 0)] == {}
    table = stats.trace_table(scores.traces)
    assert set(table["method"]) == {"repri"}


# ----------------------------------------------------------------------------- the recipe


TINY_BASE = """\
data:
  dataset: synth
  crop_size: 32
  val_size: 32
  scale: [1.0, 1.0]
  rotation: 0.0
model:
  arch: small
  pretrained: null
  widths: [4, 8, 8, 8]
  stem_width: 4
  bottleneck_dim: 8
  bins: [1, 2]
optim:
  name: adamw
  lr: 0.01
  batch_size: 4
run:
  name: tiny
  epochs: 1
  workers: 0
  threads: 1
  amp: fp32
  progress: false
  val_batch_size: 16
"""
TINY_PEERS = ("model.arch=small", "model.widths=[4,8,8,8]", "model.stem_width=4",
              "model.bottleneck_dim=8", "model.bins=[1,2]", "data.crop_size=32",
              "data.val_size=32", "data.scale=[1.0,1.0]", "optim.batch_size=4", "run.epochs=1",
              "run.workers=0", "run.threads=1", "run.amp=fp32", "run.progress=false",
              "run.channels_last=false", "run.preload=false", "run.val_batch_size=8",
              "episodic.episodes_per_epoch=8", "episodic.val_episodes=8",
              "episodic.pfenet.reduce_dim=8", "episodic.pfenet.bins=[4,2]")


@pytest.fixture
def tiny_profile(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY_BASE)
    return Profile("quick", tmp_path / "tiny", SynthConfig(n_train=96, n_val=120, size=32,
                                                           styles=("A",)),
                   str(tmp_path / "tiny.yaml"))


@pytest.mark.filterwarnings("ignore:.*too few")
def test_recipe_scores_every_arm_on_the_same_episodes(tiny_profile, outputs):
    n = 6
    result = meta_learning.meta_study(tiny_profile, folds=[0], shots=[1, 2, 3], n_episodes=n,
                             peer_overrides=TINY_PEERS, peer_shots=(1, 2))
    rows = result.rows
    assert list(dict.fromkeys(rows["method"])) == [a.label for a in meta_learning.ARMS]
    assert len(rows) == len(meta_learning.ARMS) * 3 * n
    assert set(rows["training"]) == set(meta_learning.TRAININGS)
    assert set(rows["inference"]) == {"support-fit prototype", "two prototypes", "repri",
                                      "pfenet-head"}
    assert (rows["base_seed"] == 0).all()
    # the very same tasks for every arm
    tasks = rows.groupby("method")[["shots", "episode", "class_id"]].apply(
        lambda g: tuple(map(tuple, g.sort_values(["shots", "episode"]).to_numpy())))
    assert tasks.nunique() == 1
    # each peer scored with the model trained at its shots; 3 shots: the 2-shot model
    peers = rows["peer_method"].isin(["panet", "pfenet"]) & (rows["training"] != "ce")
    trained = rows[peers].groupby("shots")["trained_shots"].unique()
    assert {k: list(v) for k, v in trained.items()} == {1: [1], 2: [2], 3: [2]}
    assert rows.loc[rows["training"] == "ce", "trained_shots"].isna().all()
    own = rows["peer_method"].isin(["panet", "pfenet"])
    assert rows.loc[own, "pi"].isna().all() and rows.loc[~own, "pi"].notna().all()
    assert sorted(result.checkpoints, key=str) == sorted(
        [("ce", 0, None), *[(t, 0, k) for t in ("episodic-panet", "frozen-pfenet")
                            for k in (1, 2)]], key=str)
    assert len({str(p) for p in result.checkpoints.values()}) == 5  # five models
    two_shot = checkpoint_meta(result.checkpoints["episodic-panet", 0, 2])["config"]
    assert two_shot["episodic"]["shots"] == 2

    summary = meta_learning.summarize(rows, n_boot=20)
    assert list(dict.fromkeys(summary["method"])) == [a.label for a in meta_learning.ARMS]
    diffs = meta_learning.contrasts(rows, n_boot=20)
    assert len(diffs) == len(meta_learning.CONTRASTS) * 3 and (diffs["n_folds"] == 1).all()
    claim = diffs[diffs["contrast"] == "CE + RePRI vs PFENet + head (own)"].set_index("shots")
    points = summary.set_index(["method", "shots"])["miou"]
    assert claim.loc[1, "miou"] == pytest.approx(
        points["CE + RePRI", 1] - points["PFENet + head (own)", 1])
    table = meta_learning.two_by_two(summary)
    assert list(table.index) == ["ce", "episodic-panet"]
    assert list(table.columns) == [f"{k}-shot {rule}" for k in (1, 2, 3)
                                   for rule in ("two prototypes", "repri")]
    notes = meta_learning.reading(summary, diffs)
    assert any("1-shot, RePRI against PFENet-style" in n for n in notes)
    assert any("Gain from 1 to 3 shots" in n for n in notes)
    assert any("3-shot scores come from their 2-shot models" in n for n in notes)
    history = meta_learning.peer_training_table(result.checkpoints)
    assert len(history) == 5 and (history["epochs"] == 1).all()


def test_a_k_shot_peer_keeps_the_one_shot_image_budget(tiny_profile):
    one = meta_learning.peer_train_config(dataclasses.replace(tiny_profile, name="full"), 1, "panet")
    five = meta_learning.peer_train_config(dataclasses.replace(tiny_profile, name="full"), 1, "panet",
                                  shots=5)
    assert five.episodic.shots == 5 and five.run.name == "synth-panet-5shot-fold1"
    for field in ("episodes_per_epoch", "val_episodes"):  # (k + 1) images a task
        assert getattr(five.episodic, field) == round(getattr(one.episodic, field) * 2 / 6)
    assert five.optim.batch_size == round(one.optim.batch_size * 2 / 6)
    assert meta_learning.shot_overrides(one, 1) == []
    assert [meta_learning.trained_shots(k) for k in (1, 4, 5, 10)] == [1, 1, 5, 5]


def test_peer_configs_follow_the_profile(tiny_profile, tmp_path):
    cfg = meta_learning.peer_train_config(tiny_profile, 2, "pfenet", tmp_path / "base.pt")
    assert cfg.mode == "episodic" and cfg.episodic.model == "pfenet"
    assert cfg.data.fold == 2 and cfg.run.name == "synth-quick-pfenet-fold2"
    assert cfg.data.root == str(tiny_profile.style_root("A"))
    assert cfg.episodic.trunk == str(tmp_path / "base.pt")
    full = meta_learning.peer_train_config(dataclasses.replace(tiny_profile, name="full"), 1, "panet")
    assert full.run.name == "synth-panet-fold1" and full.episodic.model == "panet"
    with pytest.raises(ConfigError, match="needs the fold's base checkpoint"):
        meta_learning.peer_train_config(tiny_profile, 0, "pfenet")
    real = Profile("pascal", None, None, str(tmp_path / "x.yaml"), "pascal", tmp_path)
    with pytest.raises(ConfigError, match="embedded benchmark"):
        meta_learning.peer_train_config(real, 0, "panet")


def test_notebook_parameters_check_folds(outputs, monkeypatch):
    from fsstools.studies import recipes

    monkeypatch.delenv("FSSTOOLS_PROFILE")  # the notebook's own default profile
    ns = {"profile": "quick", "folds": [0], "shots": [1], "n_episodes": 4,
          "n_boot": 10, "device": "cpu", "output_dir": ""}
    _, out = recipes.start("06_meta_learning", ns)
    assert out.parent == outputs / "quick"
    with pytest.raises(ConfigError, match="parameter folds: fold 5 does not exist"):
        recipes.start("06_meta_learning", {**ns, "folds": [5]})


@pytest.mark.parametrize("first, last, verdict, trend", [
    ((0.01, -0.02, 0.04), (0.08, 0.05, 0.11), "holds here", "widens"),
    ((0.05, 0.02, 0.08), (0.05, 0.02, 0.08), "does not hold", "changes by less than its"),
    ((0.05, 0.0002, 0.08), (0.15, 0.12, 0.18), "holds for its growth half only", "widens"),
    ((0.05, 0.0, 0.08), (0.15, 0.12, 0.18), "holds here", "widens"),
    ((-0.06, -0.09, -0.03), (0.04, 0.01, 0.07), "holds for its growth half only", "widens"),
    ((-0.16, -0.19, -0.13), (-0.04, -0.07, -0.01), "does not hold", "widens"),
    ((0.02, -0.01, 0.05), (-0.06, -0.08, -0.04), "holds for its 1-shot half only", "narrows"),
])
def test_the_claim_reads_on_par_as_level(first, last, verdict, trend):
    rows = [pd.Series(dict(zip(("miou", "miou_low", "miou_high"), v, strict=True)))
            for v in (first, last)]
    note = meta_learning.claim_note(*rows, 1, 10)
    assert verdict in note and f"the gap {trend}" in note
    # ahead at 1 shot, even by a bound that rounds to 0.0, is not "on par"
    assert ("RePRI is ahead of" in note) == (first[1] > 0)
    assert "[+0.0," not in note
