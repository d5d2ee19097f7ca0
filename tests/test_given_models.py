"""Base models given instead of trained (the notebooks' ``checkpoints``): the authors' archive
or one checkpoint per fold, mapped by fold, used by every recipe without training, and scored
on their base classes for notebook 01."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from fsstools import paths
from fsstools.data import splits
from fsstools.data.sbd import prepare_pascal
from fsstools.errors import ConfigError, MissingError
from fsstools.studies import given_models, profiles, recipes
from tests.fixtures import write_authors_archive, write_pascal_sources

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN_CONFIG = """\
data:
  dataset: pascal
  val_size: 48
model:
  arch: resnet50
  pretrained: null
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A PASCAL root as prepare-pascal makes it, the authors' archive, a training config."""
    tmp = tmp_path_factory.mktemp("given")
    voc, sbd, lists = write_pascal_sources(tmp / "sources")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(paths, "lists_dir", lambda: lists)
        root = prepare_pascal(voc, sbd, tmp / "pascal", progress=False).root
    (tmp / "train.yaml").write_text(TRAIN_CONFIG)
    return root, write_authors_archive(tmp / "repri"), tmp / "train.yaml"


def test_the_archive_or_a_pattern_gives_one_file_per_fold(setup, tmp_path):
    _, archive, _ = setup
    found = given_models.resolve(str(archive), "pascal", "resnet50", [1, 3])
    assert list(found) == [1, 3] and all(f"split={f}/" in str(p) for f, p in found.items())
    pattern = str(archive / "model_ckpt/pascal/split={fold}/model/pspnet_resnet50/"
                  "smoothing=True/mixup=False/best.pth")
    assert given_models.resolve(pattern, "synth", "small", [1, 3]) == found
    partial = shutil.copytree(archive, tmp_path / "partial")
    shutil.rmtree(partial / "model_ckpt/pascal/split=2")
    with pytest.raises(MissingError, match=r"parameter checkpoints: the authors' archive .* "
                                           r"has no model of fold\(s\) 2"):
        given_models.resolve(str(partial), "pascal", "resnet50", [0, 2])
    with pytest.raises(MissingError, match=re.escape(f"{tmp_path}/fold1.pt (fold 1) does not")):
        given_models.resolve(str(tmp_path / "fold{fold}.pt"), "pascal", "resnet50", [1])
    with pytest.raises(ConfigError, match="PASCAL and COCO models, not synth ones"):
        given_models.resolve(str(archive), "synth", "small", [0])


def test_recipes_use_the_given_model_of_each_fold_and_train_nothing(setup, outputs, capsys):
    root, archive, train = setup
    prof = profiles.real_profile("pascal", root, str(train))
    prof = given_models.attach(prof, str(archive), recipes.train_config(prof, 0), [0, 1],
                               base_seeds=[0, 1, 2])
    assert capsys.readouterr().out.strip() == (
        "base models given for fold(s) 0, 1 (nothing is trained); base seeds [0, 1, 2] "
        "collapse to one model per fold, scored as base seed 0")
    assert prof.model_seeds([0, 1, 2]) == [0]
    assert recipes.ensure_base_model(prof, 1, base_seed=2) == prof.checkpoints[1]
    with pytest.raises(MissingError, match="no given base model of fold 3"):
        recipes.ensure_base_model(prof, 3)
    assert recipes.training_history(prof, [0, 1], [0, 1, 2]).empty
    table = recipes.base_model_table(prof, [0, 1], [0, 1, 2])
    assert list(table["fold"]) == [0, 1] and list(table["base_seed"]) == [0, 0]
    assert (table["selected_epoch"] == 99).all()  # what the authors' files record
    assert table["epochs"].isna().all() and table["train_minutes"].isna().all()
    assert table["val_miou_base_classes"].between(0, 1).all()
    scores = recipes.base_class_scores(prof, [0, 1])
    fold1 = scores[scores["fold"] == 1]
    assert list(fold1["class_id"]) == [0, *splits.base_classes("pascal", 1)]
    assert np.isclose(np.nanmean(fold1["iou"][1:]), table["val_miou_base_classes"].iloc[1])
    assert not (outputs / "runs").exists()
