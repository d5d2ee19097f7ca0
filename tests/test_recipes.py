"""fsstools.studies.recipes (recipes) and the one scoring pipeline they share with the CLI."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from fsstools import paths
from fsstools.evaluation import pipeline as evaluate
from fsstools.inference import METHODS
from fsstools.studies import recipes
from tests.tiny import tiny_study


def test_profiles_and_train_config():
    with pytest.raises(ValueError, match="unknown profile"):
        recipes.get_profile("medium")
    quick = recipes.get_profile("quick")
    cfg = recipes.train_config(quick, 2)
    assert cfg.data.fold == 2 and cfg.run.name == "synth-quick-fold2"
    assert cfg.data.root == str(paths.data_dir() / "synth_quick" / "A")
    full = recipes.train_config(recipes.get_profile("full"), 3)
    assert full.data.fold == 3 and full.run.name == "synth-fold3"


def test_setup_resolves_output_dir_against_the_working_folder(tmp_path, monkeypatch, outputs):
    monkeypatch.chdir(tmp_path)
    _, out = recipes.setup("quick", "results/run1", "02_x")
    assert out == tmp_path / "results" / "run1" and out.is_dir()
    _, default = recipes.setup("quick", "", "02_x")
    assert default == outputs / "quick" / "02_x"


def test_score_caches_per_method_and_episodes(outputs, capsys):
    st = tiny_study()
    scores = evaluate.score(st, ["inductive", "repri"], trace=True)
    rows, traces = scores.rows, scores.traces
    assert len(rows) == 2 * 2 * 8  # methods x shots x episodes
    assert set(traces) == {(m, 0, k, 0) for m in ("inductive", "repri") for k in (1, 2)}
    assert traces[("repri", 0, 1, 0)]["pi"].shape == (51, 8)
    assert rows[["fg_inter", "bg_inter"]].le(rows[["fg_union", "bg_union"]].values).all().all()
    capsys.readouterr()
    again = evaluate.score(st, ["inductive", "repri"], trace=True)
    assert capsys.readouterr().out.count("reused from") == 4
    pd.testing.assert_frame_equal(rows, again.rows)
    assert torch.equal(traces[("repri", 0, 2, 0)]["loss"], again.traces[("repri", 0, 2, 0)]["loss"])
    # a relabelled method with the same settings reuses the scores; a changed one does not
    relabelled = {"mine": dataclasses.replace(METHODS["repri"], name="x")}
    mine = evaluate.score(st, relabelled).rows
    assert capsys.readouterr().out.count("reused from") == 2
    assert set(mine["method"]) == {"mine"}
    evaluate.score(st, {"slow": dataclasses.replace(METHODS["repri"], lr=0.01)})
    assert "reused from" not in capsys.readouterr().out
    evaluate.score(st, ["repri"], force=True)
    assert "reused from" not in capsys.readouterr().out


def test_setting_methods_and_columns():
    deltas = recipes.delta_methods([-0.5, 0.0], ["oracle_repri", "oracle_repri_weights"])
    assert list(deltas) == ["oracle_repri delta=-0.50", "oracle_repri delta=+0.00",
                            "oracle_repri_weights delta=-0.50", "oracle_repri_weights delta=+0.00"]
    assert deltas["oracle_repri delta=+0.00"] == METHODS["oracle_repri"]
    assert deltas["oracle_repri_weights delta=-0.50"].prior_delta == -0.5
    rows = recipes.with_setting(pd.DataFrame({"method": list(deltas)}), deltas, "name")
    assert rows["name"].tolist() == ["oracle_repri"] * 2 + ["oracle_repri_weights"] * 2
    t_pi = recipes.t_pi_methods([[], [10, 25]])
    assert [m.t_pi for m in t_pi.values()] == [(), (10, 25)]
    rows = pd.DataFrame({"method": list(t_pi)})
    assert recipes.with_setting(rows, t_pi, "t_pi")["t_pi"].tolist() == ["none", "10+25"]


def test_study_episode_picks_the_list():
    view = recipes.study_episode(tiny_study(), shots=2, index=3, images=False)
    assert view.shots == 2 and view.class_id == 2 and view.index == 3


@pytest.mark.filterwarnings("ignore:.*too few")
def test_every_base_seed_scores_the_same_episodes_with_its_own_model(tmp_path, outputs):
    from fsstools.data.synth.generate import SynthConfig
    from fsstools.models.checkpoints import checkpoint_meta
    from tests.test_meta_learning import TINY_BASE

    (tmp_path / "tiny.yaml").write_text(TINY_BASE)
    prof = recipes.Profile("quick", tmp_path / "tiny", SynthConfig(n_train=24, n_val=120, size=32,
                                                                 styles=("A",)),
                         str(tmp_path / "tiny.yaml"))
    cfg0, cfg2 = recipes.train_config(prof, 0), recipes.train_config(prof, 0, base_seed=2)
    assert (cfg0.run.seed, cfg2.run.seed) == (0, 2)
    assert cfg2.run.name == f"{cfg0.run.name}-seed2"
    rows = recipes.evaluate_folds(prof, [0], [1], ["inductive"], 6, base_seeds=[0, 2]).rows
    assert sorted(rows["base_seed"].unique()) == [0, 2] and len(rows) == 2 * 6
    per_seed = rows.sort_values("episode").groupby("base_seed")
    assert per_seed["class_id"].apply(tuple).nunique() == 1  # the same tasks
    assert per_seed["fg_inter"].apply(tuple).nunique() == 2  # scored by different models
    models = recipes.base_model_table(prof, [0], [0, 2])
    assert list(models["base_seed"]) == [0, 2]
    seeds = [checkpoint_meta(recipes.run_dir(prof, 0, s) / "best.pt")["config"]["run"]["seed"]
             for s in (0, 2)]
    assert seeds == [0, 2]
