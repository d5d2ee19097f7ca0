"""The generalized few-shot protocol: support draws, labels, scores and intervals by hand,
and one run end to end on a tiny embedded benchmark."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml

from fsstools import cli
from fsstools.constants import IGNORE_INDEX
from fsstools.data.generalized import (
    SupportDraw,
    SupportSettings,
    class_order,
    draw_supports,
    label_lut,
)
from fsstools.errors import ConflictError, DataError
from fsstools.evaluation import generalized as protocol
from fsstools.evaluation import generalized_stats as gstats
from fsstools.evaluation.generalized_config import GFSSEvalConfig
from fsstools.evaluation.generalized_scoring import (
    BaseClassifier,
    class_rows,
    confusion,
    predict,
    score_run,
)
from fsstools.features import FeatureSettings, FeatureStore, features_key
from fsstools.inference import GFSS_METHODS
from tests.fixtures import MIN_FG_TEST, default_masks, make_voc_folder
from tests.test_cli import tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")
NOVEL = (1, 2, 3, 4, 5)  # synth fold 0
BASE = tuple(range(6, 21))
LIST = "lists/val.txt"


def _masks() -> dict[str, np.ndarray]:
    """60 default images (each class the main class of 3) and four that test the rules."""
    masks = default_masks(60)
    shape = next(iter(masks.values())).shape
    two = np.zeros(shape, np.uint8)
    two[2:10, 2:12], two[12:20, 2:12] = 1, 2  # two novel classes: supports neither
    speck = np.zeros(shape, np.uint8)
    speck[2:14, 2:18], speck[20, 20] = 3, 4  # one pixel of another novel class
    small = np.zeros(shape, np.uint8)
    small[2:6, 2:6] = 5  # 16 px of a novel class: below min_fg, still a query
    empty = np.zeros(shape, np.uint8)
    empty[0] = IGNORE_INDEX  # background only: no query
    return {**masks, "two": two, "speck": speck, "small": small, "empty": empty}


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    base = tmp_path_factory.mktemp("gfss")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FSSTOOLS_OUTPUTS", str(base / "outputs"))
        yield make_voc_folder(base / "voc", _masks(), list_name="val")


def _draw(root, **kw) -> SupportDraw:
    settings = dict(dataset="synth", fold=0, shots=2, n_runs=4, min_fg=MIN_FG_TEST) | kw
    return draw_supports(root, LIST, SupportSettings(**settings))


def _mask(root, mask: str) -> np.ndarray:
    from PIL import Image

    return np.array(Image.open(root / mask))


def test_each_support_holds_its_novel_class_alone_and_is_no_query(voc):
    draw = _draw(voc)
    names = {img.split("/")[-1].split(".")[0] for img, _ in draw.images}
    assert "empty" not in names and {"two", "speck", "small"} <= names
    for run in range(4):
        supports = draw.supports(run)
        assert [c for c, _ in supports] == [c for c in NOVEL for _ in range(2)]  # k per class
        assert len({img for _, (img, _) in supports}) == len(supports)
        for c, (_, mask) in supports:
            m = _mask(voc, mask)
            assert (m == c).sum() >= MIN_FG_TEST
            assert set(np.unique(m).tolist()) & set(NOVEL) == {c}
        queries = draw.queries(run)
        assert not {img for img, _ in queries} & {img for _, (img, _) in supports}
        assert len(queries) + len(supports) == len(draw.images)
        assert all("two" not in img and "speck" not in img for _, (img, _) in supports)


def test_support_draws_are_seeded_run_by_run(voc):
    a, b = _draw(voc), _draw(voc)
    assert a.runs == b.runs and a.hash == b.hash
    assert len(set(a.runs)) > 1  # runs differ from each other
    assert _draw(voc, seed=1).runs != a.runs
    assert _draw(voc, n_runs=2).runs == a.runs[:2]  # run r does not depend on the run count
    sub = _draw(voc, max_queries=10)
    assert sub.hash != a.hash
    for run in range(2):
        q = sub.queries(run)
        assert len(q) == 10 and set(q) <= set(a.queries(run)) and q == sub.queries(run)
    assert sub.queries(0) != sub.queries(1)


def test_too_few_support_candidates_name_the_class(voc):
    with pytest.raises(DataError, match=r"novel class 1 \(.*\) has 3 image"):
        _draw(voc, shots=4)


def test_labels_follow_the_classifier_order():
    lut = label_lut(base=[9, 6, 7], novel=[2, 1], n_classes=10)
    assert lut[[0, 9, 6, 7, 2, 1, 255]].tolist() == [0, 1, 2, 3, 4, 5, 255]
    assert lut[3] == IGNORE_INDEX  # neither base nor novel
    assert class_order([9, 6, 7], [2, 1]) == [0, 9, 6, 7, 2, 1]
    with pytest.raises(ValueError, match="both base and novel"):
        label_lut([1, 2], [2], 5)


def test_confusion_and_class_rows_by_hand():
    pred = torch.tensor([[[0, 1, 1], [2, 2, 0]], [[1, 1, 1], [0, 2, 2]]])
    target = torch.tensor([[[0, 1, 2], [2, 255, 0]], [[1, 1, 0], [255, 2, 1]]])
    conf = confusion(pred, target, 3)
    # labels 0: pred 0, 1, 0 / 1: pred 1, 1, 1, 2 / 2: pred 1, 2, 2
    assert conf.tolist() == [[2, 1, 0], [0, 3, 1], [0, 1, 2]]
    rows = class_rows(conf, [0, 7, 3], n_base=1)
    assert rows["inter"].tolist() == [2, 3, 2]
    assert rows["union"].tolist() == [3, 6, 4]  # predicted + labelled - both
    assert rows["target"].tolist() == [3, 4, 3]
    assert rows["kind"].tolist() == ["background", "base", "novel"]
    assert rows["class_id"].tolist() == [0, 7, 3]


def test_run_scores_and_harmonic_mean_by_hand():
    rows = pd.DataFrame({
        "method": "m", "fold": 0, "shots": 1, "run": 0,
        "class_index": range(5), "class_id": [0, 6, 7, 1, 2],
        "kind": ["background", "base", "base", "novel", "novel"],
        "inter": [90, 6, 3, 1, 0], "union": [100, 10, 10, 4, 0], "target": 0})
    (r,) = gstats.run_scores(rows).to_dict("records")
    assert r["base"] == pytest.approx(0.45) and r["novel"] == pytest.approx(0.25)  # class 2: no IoU
    assert (r["n_base_classes"], r["n_novel_classes"]) == (2, 1)
    assert r["mean"] == pytest.approx(0.35)
    assert r["hmean"] == pytest.approx(2 * 0.45 * 0.25 / 0.7)
    assert gstats.harmonic_mean(0.0, 0.0) == 0.0 and gstats.harmonic_mean(0.5, 0.5) == 0.5
    t = gstats.harmonic_mean(torch.tensor([0.0, 0.2]), torch.tensor([0.0, 0.6]))
    assert torch.allclose(t, torch.tensor([0.0, 0.3]))


def _rows(method: str, shift: float, runs=(0, 1, 2), base_seed: int | None = None) -> pd.DataFrame:
    frames = []
    for run in runs:
        base_inter = 50 + 10 * run + round(100 * shift)
        frames.append(pd.DataFrame({
            "method": method, "fold": 0, "shots": 1, "run": run, "class_index": [0, 1, 2],
            "class_id": [0, 6, 1], "kind": ["background", "base", "novel"],
            "inter": [90, base_inter, 20 + run], "union": [100, 100, 100], "target": 0}))
    out = pd.concat(frames, ignore_index=True)
    return out if base_seed is None else out.assign(base_seed=base_seed)


def test_summaries_average_runs_and_differences_are_paired():
    rows = pd.concat([_rows("a", 0.1), _rows("b", 0.0)], ignore_index=True)
    s = gstats.summarize(rows, n_boot=200).set_index("method")
    assert s.loc["b", "base"] == pytest.approx(0.6) and s.loc["b", "novel"] == pytest.approx(0.21)
    assert s.loc["b", "hmean"] == pytest.approx(2 * 0.6 * 0.21 / 0.81)  # of the run means
    assert s.loc["b", "interval"] == gstats.RUNS_ONLY and s.loc["b", "n_runs"] == 3
    assert s.loc["b", "base_low"] < 0.6 < s.loc["b", "base_high"]
    (d,) = gstats.difference(rows, "a", "b", n_boot=200).to_dict("records")
    # +10 points of base in every run: every paired resample says so, the novel gap is 0
    assert [d["base"], d["base_low"], d["base_high"]] == pytest.approx([0.1] * 3)
    assert [d["novel"], d["novel_low"], d["novel_high"]] == pytest.approx([0] * 3)
    seeds = pd.concat([_rows("a", 0.1, base_seed=0), _rows("a", 0.2, base_seed=1)])
    assert gstats.summarize(seeds, n_boot=50)["interval"].iloc[0] == gstats.SEEDS_X_RUNS
    uneven = pd.concat([_rows("a", 0.1, base_seed=0), _rows("a", 0.2, (0, 1), base_seed=1)])
    with pytest.raises(ValueError, match="same runs"):
        gstats.summarize(uneven, n_boot=10)
    with pytest.raises(ValueError, match="not scored on the same"):
        gstats.difference(pd.concat([_rows("a", 0.1), _rows("b", 0, (0, 1))]), "a", "b")


def test_predictions_upsample_probabilities_with_aligned_corners():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(3, 4, 5, 5, generator=g), dim=1)
    pred = predict(probs, (17, 17))
    want = F.interpolate(probs, size=(17, 17), mode="bilinear", align_corners=True).argmax(1)
    assert torch.equal(pred, want)
    assert torch.equal(pred[:, ::4, ::4], probs.argmax(1))  # corners of cells are exact


# ----------------------------------------------------------------------------- hand-made store


def _store() -> tuple[FeatureStore, SupportDraw, BaseClassifier]:
    """Five supports (one per novel class, features 3 e_(1+c)) and two queries on a 2x2 grid:
    q0 is e_1 everywhere (base class 6's weight), q1 is 5 e_2 (novel class 1's prototype)."""
    C, n = 8, 7
    feats = np.zeros((n, C, 2, 2), np.float32)
    small = np.zeros((n, 2, 2), np.uint8)
    full = np.zeros((n, 8, 8), np.uint8)
    for i, c in enumerate(NOVEL):
        feats[i, 1 + c], small[i], full[i] = 3, c, c
    feats[5, 1], feats[6, 2] = 1, 5
    full[5, :4], full[5, 7, 7] = 6, IGNORE_INDEX  # q0: base class 6 on top, background below
    full[6, :, :4], full[6, :, 4:], full[6, 0, 0] = 1, 6, IGNORE_INDEX  # q1: class 1 | 6
    names = [(f"JPEGImages/{i}.jpg", f"SegmentationClass/{i}.png") for i in range(n)]
    store = FeatureStore(feats, small, np.ones_like(small, bool), full, np.ones_like(full, bool),
                         {img: i for i, (img, _) in enumerate(names)}, key="hand")
    draw = SupportDraw("/nowhere", LIST, SupportSettings("synth", 0, 1, n_runs=1), BASE, NOVEL,
                       tuple(names), (tuple((names[i],) for i in range(5)),), hash="hand")
    weight = torch.zeros(1 + len(BASE), C)
    weight[0, 0], weight[1, 1] = 10, 10  # background on e_0, class 6 on e_1
    bias = torch.full((1 + len(BASE),), -5.0)
    bias[0], bias[1] = 1, 0
    return store, draw, BaseClassifier(weight, bias, BASE)


def test_scores_of_a_hand_made_run():
    store, draw, classifier = _store()
    alone = score_run(store, draw, 0, classifier, None).set_index("class_id")
    # the base model: class 6 on q0, background on q1 (it has no novel class)
    assert alone.loc[6, ["inter", "union"]].tolist() == [32, 95]
    assert alone.loc[0, ["inter", "union"]].tolist() == [0, 94]
    assert alone.loc[1, ["inter", "union", "target"]].tolist() == [0, 31, 31]
    assert alone.loc[1, "kind"] == "novel" and alone.loc[6, "kind"] == "base"
    protos = score_run(store, draw, 0, classifier, GFSS_METHODS["gfss_prototypes"])
    protos = protos.set_index("class_id")
    # with the prototypes q1 is novel class 1 everywhere
    assert protos.loc[1, ["inter", "union"]].tolist() == [31, 63]
    assert protos.loc[0, ["inter", "union"]].tolist() == [0, 31]
    assert protos.loc[6, ["inter", "union"]].tolist() == [32, 95]
    assert (protos.loc[[2, 3, 4, 5], "union"] == 0).all()
    diam = score_run(store, draw, 0, classifier, GFSS_METHODS["diam"])
    assert diam["target"].tolist() == protos.reset_index()["target"].tolist()
    with pytest.raises(ValueError, match="not the fold's base classes"):
        score_run(store, draw, 0, BaseClassifier(classifier.weight, classifier.bias,
                                                 tuple(range(1, 16))), None)


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A tiny embedded benchmark and random tiny checkpoints of folds 0 and 1, with their own
    outputs folder."""
    base = tmp_path_factory.mktemp("gfss_synth")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FSSTOOLS_OUTPUTS", str(base / "outputs"))
        argv = ["synth", "--out", str(base / "synth"), "--n-train", "4", "--n-val", "96",
                "--size", "32", "--styles", "A", "--workers", "1", "--no-progress"]
        assert cli.main(argv) == 0
        yield (base / "synth" / "A", tiny_checkpoint(base / "f0.pt", 0),
               tiny_checkpoint(base / "f1.pt", 1))


def test_a_tiny_study_end_to_end(synth, capsys):
    root, checkpoint, other_fold = synth
    study = protocol.prepare(checkpoint, root, LIST, "synth", 0, [1, 2], size=32, n_runs=2,
                             progress=False)
    norms = np.linalg.norm(np.asarray(study.store.feats), axis=1)
    assert not np.allclose(norms, 1)  # DIaM reads the features as the model gives them
    pairs = list(study.draws[1].images)
    assert study.store.key == features_key(checkpoint, pairs, root, FeatureSettings(32, normalize=False))
    assert study.store.key != features_key(checkpoint, pairs, root, FeatureSettings(32))
    methods = {"base_model": None, "gfss_prototypes": GFSS_METHODS["gfss_prototypes"],
               "diam": GFSS_METHODS["diam"]}
    rows = protocol.score(study, methods, progress=False)
    assert len(rows) == 2 * 2 * len(methods) * 21
    assert list(rows.columns[:4]) == ["method", "fold", "shots", "run"]
    one = rows[(rows["method"] == "diam") & (rows["shots"] == 1) & (rows["run"] == 0)]
    assert one["class_id"].tolist() == [0, *BASE, *NOVEL]
    alone = rows[(rows["method"] == "base_model") & (rows["kind"] == "novel")]
    assert (alone["inter"] == 0).all()
    labelled = rows.groupby(["method", "shots", "run"])["target"].sum().unstack("method")
    assert (labelled.nunique(axis=1) == 1).all()  # every method on the same queries
    again = protocol.score(study, methods)
    pd.testing.assert_frame_equal(again, rows)
    assert "runs (reused from" in capsys.readouterr().out
    batched = score_run(study.store, study.draws[2], 1, study.classifier, GFSS_METHODS["diam"],
                        batch_queries=7)
    cached = rows[(rows["method"] == "diam") & (rows["shots"] == 2) & (rows["run"] == 1)]
    assert batched["inter"].tolist() == cached["inter"].tolist()
    summary = gstats.summarize(rows, n_boot=50)
    assert len(summary) == len(methods) * 2
    for v in gstats.SCORES:
        assert summary[v].between(0, 1).all()
        assert (summary[f"{v}_low"] <= summary[v] + 1e-9).all()
    view = protocol.query_view(study, 2, methods, run=1)
    assert view.image.shape == (32, 32, 3) and view.target.shape == (32, 32)
    allowed = {0, *BASE, *NOVEL, IGNORE_INDEX}
    assert all(set(np.unique(p).tolist()) <= allowed for p in view.predictions.values())
    assert not set(np.unique(view.predictions["base_model"]).tolist()) & set(NOVEL)
    assert view.image_name in {img for img, _ in study.draws[2].queries(1)}
    with pytest.raises(ConflictError, match="fold 0"):
        protocol.prepare(other_fold, root, LIST, "synth", 0, [1], size=32, n_runs=1,
                         progress=False)


def test_evaluate_takes_the_generalized_protocol(synth, tmp_path, capsys):
    root, checkpoint, _ = synth
    config = tmp_path / "gfss.yaml"
    config.write_text(f"protocol: generalized\nroot: {root}\nsize: 32\nshots: [1]\n"
                      f"n_runs: 2\nn_queries: 30\nmethods: [gfss_prototypes]\n"
                      f"pi_strategies: [upperbound]\ncheckpoint: {checkpoint}\n"
                      f"out_dir: {tmp_path / 'out'}\nn_boot: 20\n")
    assert cli.main(["evaluate", "--config", str(config)]) == 0
    assert "1-shot novel" in capsys.readouterr().out
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert list(summary["method"]) == ["base_model", "gfss_prototypes", "diam pi=upperbound"]
    runs = pd.read_csv(tmp_path / "out" / "runs.csv")
    assert len(runs) == 3 * 2 and {"base", "novel", "hmean"} <= set(runs.columns)
    loaded = GFSSEvalConfig(**yaml.safe_load((tmp_path / "out" / "config.yaml").read_text()))
    assert loaded.methods == ("gfss_prototypes",) and loaded.n_queries == 30
    # another configuration into the same folder is refused; a bad name stops it first
    assert cli.main(["evaluate", "--config", str(config), "--set", "n_runs=3"]) == 2
    assert "holds the results of another configuration" in capsys.readouterr().err
    assert cli.main(["evaluate", "--config", str(config), "--set", "methods=[repri]"]) == 2
    assert "methods: unknown generalized method 'repri'" in capsys.readouterr().err
    assert cli.main(["evaluate", "--config", str(config), "--set", "n_episodes=5"]) == 2
    assert "n_episodes" in capsys.readouterr().err  # a binary key: not this protocol's


def test_a_sweep_takes_the_generalized_protocol(synth, tmp_path, monkeypatch, capsys):
    root, checkpoint, _ = synth
    monkeypatch.setenv("FSSTOOLS_OUTPUTS", str(tmp_path / "outputs"))
    config = tmp_path / "gfss.yaml"
    config.write_text(f"protocol: generalized\nroot: {root}\nsize: 32\nn_runs: 2\n"
                      f"n_queries: 20\nmethods: [gfss_prototypes]\ncheckpoint: {checkpoint}\n"
                      f"n_boot: 20\n")
    # a value the generalized protocol refuses stops the sweep before any job, naming the point
    bad = ["sweep", "--eval", str(config), "--grid", "n_queries=[20, -1]", "--name", "bad"]
    assert cli.main(bad) == 2
    assert "point n_queries=-1: n_queries" in capsys.readouterr().err
    argv = ["sweep", "--eval", str(config), "--grid", "shots=[[1], [2]]", "--name", "g"]
    assert cli.main(argv) == 0
    folder = tmp_path / "outputs" / "sweeps" / "g"
    table = pd.read_csv(folder / "table.csv")
    assert set(table["state"]) == {"done"} and sorted(set(table["shots"])) == [1, 2]
    assert {"base", "novel", "mean", "hmean"} <= set(table.columns)
    assert set(table["method"]) == {"base_model", "gfss_prototypes"}
    for name in ("shots-1", "shots-2"):
        saved = yaml.safe_load((folder / name / "config.yaml").read_text())
        assert saved["protocol"] == "generalized" and saved["out_dir"] == str(folder / name)


def test_the_reading_quotes_the_contrasts_and_calls_a_zero_gap_level():
    from fsstools.studies import generalized

    rows = pd.concat([_rows("base_model", 0.2), _rows("gfss_prototypes", 0.0),
                      _rows("diam_no_kd", 0.05), _rows("diam", 0.15)], ignore_index=True)
    summary = generalized.summarize(rows, n_boot=100)
    diffs = generalized.contrasts(rows, n_boot=100)
    assert set(zip(diffs["first"], diffs["second"], strict=True)) == {
        ("diam", "gfss_prototypes"), ("diam", "diam_no_kd"), ("gfss_prototypes", "base_model"),
        ("diam_no_kd", "base_model"), ("diam", "base_model")}
    table = generalized.contrast_table(diffs)
    assert list(table.columns) == ["1-shot base", "1-shot novel", "1-shot HM"]
    assert table.loc["DIaM minus DIaM without distillation", "1-shot base"] == "10.0 [10.0, 10.0]"
    text = "\n".join(generalized.reading(summary, diffs, caveat=False))
    assert "**What distillation keeps** at 1 shot (DIaM minus DIaM without it): base +10.0 " \
           "[+10.0, +10.0] (gain); novel +0.0 [0, 0] (level)" in text  # exactly 0: level
    assert "DIaM -5.0 [-5.0, -5.0] (forgets)" in text
    assert "Intervals (95%) cover runs (3 runs" in text
