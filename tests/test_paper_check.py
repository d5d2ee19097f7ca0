"""``fsstools paper-check`` end to end on the real layout in miniature: a VOC2012 folder and an
unpacked SBD archive made into a data root by ``prepare-pascal`` (the paper's lists are the
test's own, installed as the shipped ones), the authors' archive with one tiny ResNet-50 per
fold under their key names, then the four folds scored and set beside the paper's numbers.
The same with the authors' COCO models: COCO-20i on a COCO root as coco-masks leaves it, and
COCO -> PASCAL on the prepared PASCAL root. Also the published numbers as data, the table
layer on its own, and the refusals."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from fsstools import cli, paths
from fsstools.data import splits
from fsstools.data.sbd import prepare_pascal
from fsstools.jobs import paper_table
from fsstools.studies.report import label
from tests.fixtures import (
    PASCAL_HW,
    PASCAL_VAL,
    write_authors_archive,
    write_coco_root,
    write_pascal_sources,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 48  # test image size of the tiny run (the protocol's 417 is an option)
H, W = PASCAL_HW


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> tuple[Path, Path, Path]:
    return write_pascal_sources(tmp_path_factory.mktemp("sources"))


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    return write_authors_archive(tmp_path_factory.mktemp("repri"))


@pytest.fixture
def data_root(sources, monkeypatch, tmp_path) -> Path:
    """The data root prepare-pascal makes, the test's lists installed as the paper's."""
    voc, sbd, lists = sources
    monkeypatch.setattr(paths, "lists_dir", lambda: lists)
    return prepare_pascal(voc, sbd, tmp_path / "pascal", progress=False).root


def paper_check(data_root: Path, archive: Path, out: Path, *extra: str,
                dataset: str = "pascal") -> list[str]:
    return ["paper-check", "--dataset", dataset, "--data-root", str(data_root),
            "--checkpoints", str(archive), "--size", str(SIZE), "--n-episodes", "3",
            "--out", str(out), "--set", "n_boot=100", "--no-progress", *extra]


# ----------------------------------------------------------------------------- end to end


def test_paper_check_sets_our_four_folds_beside_the_papers(data_root, archive, outputs,
                                                           tmp_path, capsys):
    out = tmp_path / "check"
    assert cli.main(paper_check(data_root, archive, out)) == 0
    printed = capsys.readouterr().out
    assert f"{data_root}: no problem found (the paper's lists)" in printed
    table = pd.read_csv(out / "paper_check.csv", dtype={"fold": str})
    assert len(table) == 2 * 2 * 5  # methods x shots x (four folds + mean)
    assert list(table["fold"][:5]) == ["0", "1", "2", "3", "mean"]
    assert (table["n_runs"] == 2).all() and (table["n_episodes"] == 3).all()
    paper = paper_table.paper_numbers("pascal")
    oracle_5_fold_2 = table.query("method == 'oracle_repri' and shots == 5 and fold == '2'")
    assert oracle_5_fold_2["paper"].item() == 81.4
    repri_1_mean = table.query("method == 'repri' and shots == 1 and fold == 'mean'")
    assert repri_1_mean["paper"].item() == 59.1 == paper.query(
        "method == 'repri' and shots == 1 and fold == 'mean'")["miou"].item()
    assert np.allclose(table["difference"], table["ours"] - table["paper"])
    inside = (table["ours_low"] <= table["paper"]) & (table["paper"] <= table["ours_high"])
    assert (table["paper_inside"] == inside).all()
    assert ((table["ours_low"] <= table["ours"] + 1e-9)
            & (table["ours"] <= table["ours_high"] + 1e-9)).all()
    # the mean row is the mean of the four folds (each the mean over its two runs)
    folds = table[table["fold"] != "mean"].groupby(["method", "shots"])["ours"].mean()
    means = table[table["fold"] == "mean"].set_index(["method", "shots"])["ours"]
    assert np.allclose(folds.sort_index(), means.sort_index())
    # the same table, printed and as markdown
    md = (out / "paper_check.md").read_text()
    assert "| method | paper row | shots | fold | ours (95% interval) | paper | difference | " \
           "paper inside our interval? |" in md
    assert "| Oracle-RePRI (authors' config) | Oracle-RePRI | 5 | 2 |" in md
    assert md.strip() in printed and "3 tasks per fold, shot count and run, 2 run(s)" in md
    # each fold scored with its own checkpoint, on its own classes, with the protocol's runs
    settings = yaml.safe_load((out / "paper_check.yaml").read_text())
    assert settings["protocol"].endswith("configs/pascal/paper.yaml")
    for fold in range(splits.N_FOLDS):
        assert f"split={fold}/" in settings["checkpoints"][fold]
        rows = pd.read_csv(out / f"fold{fold}" / "episodes.csv")
        assert set(rows["class_id"]) <= set(splits.test_classes("pascal", fold))
        assert set(rows["seed"]) == {2020, 2021} and set(rows["shots"]) == {1, 5}
        saved = yaml.safe_load((out / f"fold{fold}" / "config.yaml").read_text())
        assert (saved["size"], saved["fold"], saved["train_config"]) == (SIZE, fold, None)
    assert not (outputs / "runs").exists()  # nothing trained


def test_malformed_data_is_refused_with_every_problem_before_anything_runs(
        data_root, archive, outputs, tmp_path, capsys):
    (data_root / "SegmentationClassAug" / f"{PASCAL_VAL[3]}.png").unlink()
    bad = data_root / "SegmentationClassAug" / f"{PASCAL_VAL[5]}.png"
    Image.fromarray(np.full((H, W, 3), 200, np.uint8), mode="RGB").save(bad)
    out = tmp_path / "check"
    assert cli.main(paper_check(data_root, archive, out)) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "fsstools paper-check: error:" in err and "Traceback" not in err
    assert f"{PASCAL_VAL[3]}.png: missing (listed in lists/val.txt line 4)" in err
    assert f"{bad}: a RGB colour image" in err
    assert not out.exists() and not (outputs / "cache").exists()


def test_lists_other_than_the_papers_are_refused(data_root, archive, tmp_path, capsys):
    val = data_root / "lists" / "val.txt"
    val.write_text("".join(val.read_text().splitlines(keepends=True)[:-1]))
    assert cli.main(paper_check(data_root, archive, tmp_path / "c")) == cli.EXIT_USER_ERROR
    assert "not the paper's val" in capsys.readouterr().err


def test_an_archive_without_every_fold_is_refused(data_root, archive, tmp_path, capsys):
    partial = shutil.copytree(archive, tmp_path / "partial")
    shutil.rmtree(partial / "model_ckpt/pascal/split=3")
    argv = paper_check(data_root, partial, tmp_path / "c", "--no-data-check")
    assert cli.main(argv) == cli.EXIT_USER_ERROR
    assert re.search(r"no pascal resnet50 model of fold\(s\) 3 .*needs all four",
                     capsys.readouterr().err)


@pytest.mark.parametrize("extra, words", [
    (["--set", "shots=[1]"], "paper-check sets shots itself; use its option"),
    (["--methods", "repri", "nope"], "invalid choice: 'nope'"),
    (["--set", "n_boot=0"], "n_boot"),
])
def test_bad_settings_stop_before_the_data_is_read(tmp_path, capsys, extra, words):
    argv = paper_check(tmp_path / "no_root", tmp_path / "no_archive", tmp_path / "c", *extra)
    assert cli.main(argv) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert words in err and "no_root" not in err


# ----------------------------------------------------------------------------- the table layer


@pytest.mark.parametrize("benchmark", paper_table.BENCHMARKS)
def test_the_papers_means_are_the_means_of_its_folds(benchmark):
    paper = paper_table.paper_numbers(benchmark)
    assert len(paper) == 2 * 2 * 5
    for _, grp in paper.groupby(["method", "shots"]):
        folds = grp[grp["fold"] != paper_table.MEAN]["miou"]
        assert list(grp["fold"]) == ["0", "1", "2", "3", "mean"]
        assert abs(folds.mean() - grp[grp["fold"] == "mean"]["miou"].item()) <= 0.11  # rounding


def fake_rows(methods: list[str], fold_scores: dict[int, list[float]]) -> pd.DataFrame:
    """Two runs of two episodes per fold whose class IoU is the given fraction per run."""
    rows = []
    for method in methods:
        for fold, per_run in fold_scores.items():
            for run, iou in enumerate(per_run):
                for episode in range(2):
                    rows.append({"method": method, "fold": fold, "shots": 1, "seed": 7 + run,
                                 "episode": episode, "class_id": 5 * fold + 1,
                                 "fg_inter": int(100 * iou), "fg_union": 100,
                                 "bg_inter": 90, "bg_union": 100})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("benchmark", ["coco", "coco_to_pascal"])
def test_the_comparison_on_the_other_benchmarks(benchmark):
    scores = {0: [0.30, 0.40], 1: [0.50, 0.50], 2: [0.20, 0.30], 3: [0.40, 0.40]}
    ours = paper_table.ours_table(fake_rows(["repri", "ce"], scores), n_boot=50)
    table = paper_table.compare(ours, benchmark)
    repri = table[table["method"] == "repri"].set_index("fold")
    assert repri.loc["0", "ours"] == pytest.approx(35.0)  # the mean over the two runs
    assert repri.loc["mean", "ours"] == pytest.approx(37.5)
    expected = paper_table.paper_numbers(benchmark).query("method == 'repri' and shots == 1")
    assert list(repri["paper"]) == list(expected["miou"])
    assert repri.loc["mean", "difference"] == pytest.approx(37.5 - expected["miou"].iloc[-1])
    ce = table[table["method"] == "ce"]  # no paper row: shown, not compared
    assert ce["paper"].isna().all() and ce["paper_inside"].isna().all()
    md = paper_table.markdown(table)
    assert f"| {label('ce')} | - | 1 | mean | 37.5 [37.5, 37.5] | - | - | - |" in md
    assert re.search(r"\| 1 \| mean \| 37\.5 \[[\d.]+, [\d.]+\] \| [\d.]+ \| [+-][\d.]+ \| "
                     r"(yes|no) \|", md)


# ----------------------------------------------------------------------------- the COCO models


@pytest.fixture(scope="module")
def coco_world(tmp_path_factory) -> tuple[Path, Path]:
    """A COCO-20i root as coco-masks leaves it, and the authors' archive of COCO models."""
    tmp = tmp_path_factory.mktemp("coco")
    return write_coco_root(tmp / "coco"), write_authors_archive(tmp / "repri", "coco")


@pytest.mark.parametrize("benchmark", ["coco", "coco_to_pascal"])
def test_paper_check_on_the_authors_coco_models(benchmark, coco_world, outputs, tmp_path,
                                                 capsys, request):
    """COCO-20i on a COCO root, and COCO -> PASCAL on the prepared PASCAL root: each fold's
    COCO model tested on its own classes, the paper's numbers of that benchmark beside."""
    coco_root, archive = coco_world
    root = coco_root if benchmark == "coco" else request.getfixturevalue("data_root")
    out = tmp_path / "check"
    assert cli.main(paper_check(root, archive, out, dataset=benchmark)) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out / "paper_check.csv", dtype={"fold": str})
    paper = paper_table.paper_numbers(benchmark)
    assert list(table["paper"]) == list(paper["miou"])  # same rows, same order
    assert (table["n_episodes"] == 3).all() and (table["n_runs"] == 2).all()
    title = {"coco": "# COCO-20i:", "coco_to_pascal": "# COCO-20i -> PASCAL:"}[benchmark]
    assert (out / "paper_check.md").read_text().startswith(title) and title in printed
    settings = yaml.safe_load((out / "paper_check.yaml").read_text())
    for fold in range(splits.N_FOLDS):
        rows = pd.read_csv(out / f"fold{fold}" / "episodes.csv")
        tested = (splits.test_classes("coco", fold) if benchmark == "coco"
                  else splits.coco_to_pascal_classes(fold))
        assert set(rows["class_id"]) <= set(tested)
        assert f"model_ckpt/coco/split={fold}/" in settings["checkpoints"][fold]
    assert not (outputs / "runs").exists()  # nothing trained
