"""``dataset: folder``: your own labelled collection through episodes, train and evaluate.

The fixture is the layout of docs/real-data.md: classes.txt, images/, masks/, and no list
files (the split by name order), or list files naming images.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fsstools import cli
from fsstools.data import folder, splits, voc
from fsstools.errors import ConfigError, MissingError
from fsstools.studies import recipes
from tests.fixtures import BIG, SIZE, write_image, write_mask

N_CLASSES = 8  # two novel classes per fold
N_IMAGES = 80  # every class the main class of 10 images, 2 of them val images
CLASSES = [f"thing{c}" for c in range(1, N_CLASSES + 1)]
TRAIN_YAML = """\
data: {{dataset: folder, root: {root}, crop_size: 32, val_size: 32, scale: [1.0, 1.0],
        rotation: 0.0}}
model: {{arch: small, widths: [4, 8, 8, 8], stem_width: 4, bottleneck_dim: 8, bins: [1, 2]}}
optim: {{batch_size: 8}}
run: {{name: tiny-folder, out_dir: {runs}, workers: 0, threads: 1, amp: fp32, epochs: 1,
       progress: false}}
"""


def make_folder_dataset(root: Path, n_images: int = N_IMAGES) -> Path:
    """images/imgNNN.jpg with a block of class ``j % 8 + 1``, masks/imgNNN.png, classes.txt."""
    (root / "images").mkdir(parents=True)
    for j in range(n_images):
        mask = np.zeros(SIZE, np.uint8)
        mask[2:2 + BIG[0], 2:2 + BIG[1]] = j % N_CLASSES + 1
        mask[0, :] = 255
        write_image(root / "images" / f"img{j:03d}.jpg", *SIZE, seed=j)
        write_mask(root / "masks" / f"img{j:03d}.png", mask)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_folder_dataset(tmp_path_factory.mktemp("mine") / "mydata")


def test_classes_folds_and_the_split_by_name_order(data):
    assert splits.class_names("folder", data) == tuple(CLASSES)
    assert splits.test_classes("folder", 1, root=data) == [3, 4]
    assert splits.base_classes("folder", 1, root=data) == [1, 2, 5, 6, 7, 8]
    val, train = voc.read_pairs(data, "lists/val.txt"), voc.read_pairs(data, "lists/train.txt")
    assert len(val) == N_IMAGES // folder.VAL_EVERY and len(train) == N_IMAGES - len(val)
    assert not set(val) & set(train)
    assert val[0] == ("images/img004.jpg", "masks/img004.png")
    assert len(voc.read_pairs(data, "lists/all.txt")) == N_IMAGES


def test_list_files_name_images(data, tmp_path):
    (tmp_path / "few.txt").write_text("img001\nimg002.jpg\n# a comment\n")
    assert voc.read_pairs(data, tmp_path / "few.txt") == [
        ("images/img001.jpg", "masks/img001.png"), ("images/img002.jpg", "masks/img002.png")]
    (tmp_path / "bad.txt").write_text("nothing_here\n")
    with pytest.raises(MissingError, match="no image nothing_here"):
        voc.read_pairs(data, tmp_path / "bad.txt")
    with pytest.raises(MissingError, match="lists/test.txt not found"):
        voc.read_pairs(data, "lists/test.txt")


def test_too_few_classes_are_refused(tmp_path):
    root = make_folder_dataset(tmp_path / "two", n_images=2)
    (root / "classes.txt").write_text("cat\ndog\n")
    with pytest.raises(ConfigError, match="names 2 classes; the 4 folds need at least 4"):
        splits.test_classes("folder", 0, root=root)


@pytest.mark.slow
def test_episodes_train_and_evaluate_on_a_folder(data, tmp_path, outputs, capsys):
    ep = tmp_path / "ep.json"
    argv = ["episodes", "--root", str(data), "--list", "lists/val.txt", "--dataset", "folder",
            "--fold", "0", "--shots", "1", "--n", "6", "--out", str(ep)]
    assert cli.main(argv) == 0
    episodes = json.loads(ep.read_text())
    assert {e["class_id"] for e in episodes["episodes"]} <= {1, 2}
    assert all(e["query"][0].startswith("images/") for e in episodes["episodes"])

    (tmp_path / "train.yaml").write_text(TRAIN_YAML.format(root=data, runs=tmp_path / "runs"))
    assert cli.main(["train", "--config", str(tmp_path / "train.yaml")]) == 0
    run = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert (run / "best.pt").is_file()

    sets = ["dataset=folder", f"root={data}", "fold=0", "size=32", "shots=[1]",
            "n_episodes=6", "methods=[ce, repri]", "n_boot=10", f"checkpoint={run / 'best.pt'}"]
    assert cli.main(["evaluate", *[a for s in sets for a in ("--set", s)]]) == 0
    out = capsys.readouterr().out
    results = Path(re.search(r"^results in (.+)$", out, re.M)[1])
    rows = pd.read_csv(results / "episodes.csv")
    assert len(rows) == 2 * 6 and set(rows["class_id"]) <= {1, 2}


def test_notebooks_take_a_folder_as_their_data(data, outputs):
    prof = recipes.notebook_profile("quick", "folder", str(data))
    assert prof.dataset == prof.test_dataset == prof.train_dataset == "folder"
    assert prof.n_classes == N_CLASSES and prof.list_file == "lists/val.txt"
    assert prof.train_config.endswith("configs/folder/train.yaml")
    cfg = recipes.train_config(prof, fold=2)
    assert (cfg.data.dataset, cfg.data.root, cfg.data.fold) == ("folder", str(data), 2)
    assert cfg.run.name == "folder-fold2"  # one file for every fold: each fold its own run
    ev = recipes.fold_eval_config(prof, 2, "best.pt", shots=[1], n_episodes=4)
    assert (ev.dataset, ev.root) == ("folder", str(data))
