"""The cached stages end to end: data regenerated or edited under the same path is never served
from an old cache, an unchanged rerun reuses every stage and says so, and a read-only dataset
folder is read, never written."""

from __future__ import annotations

import os
import stat

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fsstools import config as config_lib
from fsstools.data.synth.benchmark import SynthConfig, ensure_synth
from fsstools.evaluation import pipeline as evaluate
from fsstools.evaluation.pipeline import EvalConfig
from fsstools.training import TrainConfig, ensure_trained
from tests.fixtures import MIN_FG_TEST, make_voc_folder

TINY_TRAIN = ["model.arch=small", "model.widths=[4,8,8,8]", "model.stem_width=4",
              "model.bottleneck_dim=8", "model.bins=[1,2]", "run.workers=0", "run.threads=1",
              "optim.batch_size=4", "run.val_batch_size=16", "run.amp=fp32", "run.epochs=1",
              "run.progress=false", "data.crop_size=32", "data.val_size=32"]
SYNTH = dict(n_train=24, n_val=48, size=32, styles=("A",))
pytestmark = pytest.mark.filterwarnings("ignore:.*too few for 10-shot")


def pipeline(root, dataset="synth", checkpoint=None, extra=()):
    """Train (cached) and evaluate (cached) on ``root``; returns checkpoint, study, rows."""
    if checkpoint is None:
        cfg = config_lib.load(TrainConfig, None, [*TINY_TRAIN, f"data.root={root}",
                                                  f"data.dataset={dataset}", *extra])
        checkpoint = ensure_trained(cfg)
    ev = EvalConfig(dataset=dataset, root=str(root), size=32, shots=(1,), n_episodes=12,
                    methods=("ce", "repri"), checkpoint=str(checkpoint), train_config=None)
    study = evaluate.prepare(ev)
    return checkpoint, study, evaluate.score(study).rows


REUSE_LINES = ("reusing 12 1-shot episodes", "reusing features of", "reused from")


def test_regenerated_data_recomputes_every_stage_and_a_rerun_reuses_them(
    tmp_path, outputs, capsys
):
    data = tmp_path / "tiny"
    ensure_synth(data, SynthConfig(seed=1, **SYNTH), progress=False, workers=1)
    ckpt, study, rows = pipeline(data / "A")
    first = capsys.readouterr().out
    assert not any(line in first for line in REUSE_LINES)
    indexes = sorted((outputs / "cache" / "class_index").glob("*.json"))
    assert len(indexes) == 2  # the train and val lists' masks

    ckpt2, study2, rows2 = pipeline(data / "A")  # unchanged: every stage reused, announced
    again = capsys.readouterr().out
    for line in (*REUSE_LINES, "reusing base model"):
        assert line in again, line
    assert ckpt2 == ckpt and study2.store.key == study.store.key
    pd.testing.assert_frame_equal(rows, rows2)

    ensure_synth(data, SynthConfig(seed=2, **SYNTH), progress=False, workers=1)  # same path
    ckpt3, study3, rows3 = pipeline(data / "A")
    fresh = capsys.readouterr().out
    assert not any(line in fresh for line in (*REUSE_LINES, "reusing base model"))
    assert len(sorted((outputs / "cache" / "class_index").glob("*.json"))) == 4  # indexed anew
    assert ckpt3 != ckpt and ckpt3.is_file()  # the base model was trained again
    assert study3.store.key != study.store.key
    assert study3.episode_lists[1, 0].hash != study.episode_lists[1, 0].hash
    assert not rows3.equals(rows)


def test_an_edited_mask_changes_the_features_and_scores_that_use_it(tmp_path, outputs, capsys):
    data = tmp_path / "tiny"
    ensure_synth(data, SynthConfig(seed=1, **SYNTH), progress=False, workers=1)
    ckpt, study, rows = pipeline(data / "A")
    episodes = study.episode_lists[1, 0]
    query_mask = data / "A" / episodes.episodes[0].query[1]
    mask = np.array(Image.open(query_mask))
    mask[mask == episodes.episodes[0].class_id] = 0  # the object is gone from the labels
    mask[:8, :8] = episodes.episodes[0].class_id  # and drawn elsewhere
    Image.fromarray(mask).save(query_mask)
    capsys.readouterr()

    _, study2, rows2 = pipeline(data / "A", checkpoint=ckpt)  # the same model
    out = capsys.readouterr().out
    assert "reusing features of" not in out and "reused from" not in out
    assert study2.store.key != study.store.key
    row = study2.store.index[episodes.episodes[0].query[0]]
    assert (np.asarray(study2.store.masks_full[row])[:8, :8] == episodes.episodes[0].class_id).all()
    assert not rows2.equals(rows)


def _snapshot(root):
    return {p.relative_to(root): (p.stat().st_size, p.stat().st_mtime_ns, stat.S_IMODE(
        p.stat().st_mode)) for p in sorted(root.rglob("*"))}


def test_a_read_only_dataset_folder_is_never_written(tmp_path, outputs):
    root = make_voc_folder(tmp_path / "voc", list_name="train")
    make_voc_folder(root, list_name="val")
    for path in [root, *root.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    before = _snapshot(root)
    try:
        ckpt, study, rows = pipeline(root, dataset="pascal", extra=[f"data.min_fg={MIN_FG_TEST}"])
        assert ckpt.is_file() and len(rows) == 2 * 12
        assert os.path.commonpath([ckpt, outputs]) == str(outputs)
        assert _snapshot(root) == before  # nothing added, changed or removed inside
    finally:
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)


def test_force_recomputes_every_stage(tmp_path, outputs, capsys):
    data = tmp_path / "tiny"
    ensure_synth(data, SynthConfig(seed=1, **SYNTH), progress=False, workers=1)
    ckpt, _, _ = pipeline(data / "A")
    ev = EvalConfig(dataset="synth", root=str(data / "A"), size=32, shots=(1,), n_episodes=12,
                    methods=("ce",), checkpoint=str(ckpt), train_config=None)
    capsys.readouterr()
    evaluate.prepare(ev, force=True)
    assert "reusing" not in capsys.readouterr().out
