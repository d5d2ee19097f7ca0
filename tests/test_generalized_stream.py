"""The generalized protocol with its queries streamed: the counts of the cached path, no query
feature written, keys that follow the inputs; and a tiny COCO-layout set end to end."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

from fsstools import cli, config, paths
from fsstools.data import coco
from fsstools.data.splits import COCO_CLASSES, test_classes
from fsstools.errors import ConfigError
from fsstools.evaluation import generalized as protocol
from fsstools.evaluation.generalized_config import GFSSEvalConfig
from fsstools.evaluation.generalized_stream import cache_bytes, support_images
from fsstools.inference import GFSS_METHODS
from fsstools.models.checkpoints import CHECKPOINT_FORMAT
from fsstools.models.pspnet import build_model
from tests.fixtures import MIN_FG_TEST, write_image
from tests.test_generalized_protocol import LIST, synth  # noqa: F401 (a fixture)
from tests.tiny import TINY_MODEL, training_record

pytestmark = pytest.mark.usefixtures("one_thread")
METHODS = {"base_model": None, "gfss_prototypes": GFSS_METHODS["gfss_prototypes"],
           "diam": GFSS_METHODS["diam"],
           "diam_upperbound": GFSS_METHODS["diam_upperbound"]}  # reads the query's labels
COUNTS = ["class_id", "kind", "inter", "union", "target"]


def _feature_entries() -> dict[str, set[str]]:
    """Images of every feature cache entry."""
    folder = paths.cache_dir("features")
    return {entry.name: set(json.loads((entry / "index.json").read_text()))
            for entry in folder.iterdir() if (entry / "index.json").is_file()}


def _streamed_equals_cached(root, checkpoint, dataset, list_file, shots, n_runs, capsys,
                            **kw):
    """Score METHODS cached and streamed on the same data; check the counts are the same
    and that the stream cached the supports' features only."""
    args = (checkpoint, root, list_file, dataset, 0, shots)
    cached = protocol.prepare(*args, n_runs=n_runs, progress=False, **kw)
    before = _feature_entries()
    streamed = protocol.prepare(*args, n_runs=n_runs, feature_cache_gb=0, **kw)
    assert "only the" in capsys.readouterr().out and cached.stream is None
    assert streamed.stream is not None and streamed.features_key != cached.features_key
    a = protocol.score(cached, METHODS, progress=False)
    b = protocol.score(streamed, METHODS, batch_queries=3)  # several blocks
    assert "in one pass over the queries" in capsys.readouterr().out
    pd.testing.assert_frame_equal(a, b)
    assert (a["inter"] > 0).any()
    new = {k: v for k, v in _feature_entries().items() if k not in before}
    supports = {img for img, _ in support_images(list(streamed.draws.values()))}
    assert list(new.values()) == [supports] == [set(streamed.store.index)]
    assert len(supports) < len(cached.store.index)
    return cached, streamed, a


def test_streamed_queries_score_as_the_cached_ones(synth, capsys):  # noqa: F811
    root, checkpoint, _ = synth
    cached, streamed, _ = _streamed_equals_cached(root, checkpoint, "synth", LIST, [1, 2], 2,
                                                  capsys, size=32, max_queries=12)
    protocol.score(streamed, METHODS)  # every score cached: no pass
    out = capsys.readouterr().out
    assert "one pass" not in out and "runs (reused from" in out
    view = protocol.query_view(streamed, 2, METHODS, run=1)
    assert view.image_name in {img for img, _ in streamed.draws[2].queries(1)}
    row = protocol.richest_query(cached.store, cached.draws[2], 1)
    want = protocol.query_view(cached, 2, METHODS, run=1, row=row)
    got = protocol.query_view(streamed, 2, METHODS, run=1, row=row)
    assert got.image_name == want.image_name
    for label in METHODS:
        assert np.array_equal(got.predictions[label], want.predictions[label])
    # the scores' key follows the inputs the stream reads: a query image's file, the size
    query = next(img for img, _ in streamed.draws[1].queries(0))
    os.utime(root / query, (1, 1))
    again = protocol.prepare(checkpoint, root, LIST, "synth", 0, [1, 2], size=32, n_runs=2,
                             max_queries=12, feature_cache_gb=0, progress=False)
    assert again.features_key != streamed.features_key
    assert again.store.key == streamed.store.key  # the supports' features are reused


def test_the_cache_limit_is_checked_and_reaches_the_results(synth, tmp_path, capsys):  # noqa: F811
    assert cache_bytes(1449, 512, 417, "float32") // 10**8 == 88  # PASCAL-5i val at 417 px
    assert cache_bytes(2, 8, 32, "float16") == 2 * (8 * 16 * 2 + 2 * (16 + 1024))
    with pytest.raises(ConfigError, match="feature_cache_gb must be >= 0"):
        GFSSEvalConfig(feature_cache_gb=-1)
    root, checkpoint, _ = synth
    cfg = GFSSEvalConfig(root=str(root), size=32, shots=(1,), n_runs=1, n_queries=20,
                         methods=("gfss_prototypes",), checkpoint=str(checkpoint),
                         feature_cache_gb=0, out_dir=str(tmp_path / "out"), n_boot=10)
    path = config.save_yaml(cfg, tmp_path / "gfss.yaml")
    assert cli.main(["evaluate", "--config", str(path)]) == 0
    assert "feature_cache_gb=0: only the 5 supports'" in capsys.readouterr().out
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["queries"] == "streamed"


# ----------------------------------------------------------------------------- COCO layout


def _coco_checkpoint(path, fold: int):
    """A random tiny base model recording the base classes of COCO-20i ``fold``."""
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, 61)
    torch.save({"format": CHECKPOINT_FORMAT, "model": model.state_dict(),
                "model_config": config.to_dict(TINY_MODEL), "n_classes": 61,
                **training_record(fold, "coco")}, path)
    return path


def _box(r0, c0, side=12):
    return [[c0, r0, c0 + side, r0, c0 + side, r0 + side, c0, r0 + side]]  # x, y pairs


def test_coco_layout_end_to_end(tmp_path, capsys, monkeypatch):
    """COCO 2014 annotations -> masks and list (fsstools.data.coco) -> the protocol on fold 0:
    two images per novel class (with a base class beside it) and four of base classes only."""
    pytest.importorskip("pycocotools")
    monkeypatch.setenv("FSSTOOLS_OUTPUTS", str(tmp_path / "outputs"))
    root, side = tmp_path / "coco", 32
    cat_ids = [i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]
    novel = test_classes("coco", 0)
    base = [c for c in range(1, 81) if c not in novel]
    objects = [(c, base[i]) for i, c in enumerate(novel) for _ in range(2)]
    objects += [(base[i], base[-i - 1]) for i in range(4)]
    images, annotations = [], []
    for i, (a, b) in enumerate(objects):
        name = f"COCO_val2014_{i:03d}.jpg"
        images.append({"id": i, "file_name": name, "height": side, "width": side})
        write_image(root / "val2014" / name, side, side, seed=i)
        for j, (cls, corner) in enumerate(((a, (2, 2)), (b, (18, 16)))):
            annotations.append({"id": 2 * i + j, "image_id": i, "iscrowd": 0,
                                "category_id": cat_ids[cls - 1],
                                "segmentation": _box(*corner)})
    categories = [{"id": i, "name": n} for i, n in zip(cat_ids, COCO_CLASSES, strict=True)]
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": categories}))
    list_file = coco.write_masks(root, "val2014").relative_to(root).as_posix()
    checkpoint = _coco_checkpoint(tmp_path / "coco0.pt", 0)
    _, _, rows = _streamed_equals_cached(root, checkpoint, "coco", list_file, [1], 1, capsys,
                                         size=side, min_fg=MIN_FG_TEST)
    one = rows[rows["method"] == "diam"]
    assert one["class_id"].tolist() == [0, *base, *novel]
    assert one.loc[one["kind"] == "novel", "target"].gt(0).sum() == 20  # one query each
    assert one.loc[one["kind"] == "base", "target"].gt(0).sum() == 24
