"""The fold guard: no path that scores tasks scores a checkpoint on classes it saw in training
(the command line, the notebooks' recipes, episodic peers), and the fold is given once."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch

from fsstools import cli, paths
from fsstools import config as config_lib
from fsstools.data import splits
from fsstools.data.episodes import EpisodeSettings, sample_episodes, save_episodes
from fsstools.data.synth.generate import SynthConfig
from fsstools.errors import ConfigError, ConflictError
from fsstools.evaluation import guard
from fsstools.evaluation import pipeline as evaluate
from fsstools.evaluation.pipeline import EvalConfig
from fsstools.models.checkpoints import CHECKPOINT_FORMAT, PANET_FORMAT, PFENET_FORMAT
from fsstools.models.panet import PANet
from fsstools.models.pfenet import PFENet
from fsstools.models.pspnet import build_model
from fsstools.studies import recipes
from fsstools.studies.profiles import Profile
from tests.fixtures import default_masks, list_path, make_voc_folder, write_authors_archive
from tests.tiny import TINY_MODEL, TINY_PFENET, training_record

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 32  # 24x32 test images -> padded 32x32 -> 4x4 features
N_IMAGES = 40  # each class the main class of two images: enough for 1-shot episodes
LIST = list_path(list_name="val")
FOLD1_NOVEL = splits.test_classes("synth", 1)  # 6..10, base classes of fold 0
TRAIN_YAML = """\
data: {{dataset: synth, root: {root}, fold: 0, crop_size: 32, val_size: 32}}
model: {{arch: small, widths: [4, 8, 8, 8], stem_width: 4, bottleneck_dim: 8, bins: [1, 2]}}
optim: {{batch_size: 4}}
run: {{name: tiny, workers: 0, threads: 1, amp: fp32, epochs: 1, progress: false}}
"""


def base_checkpoint(path: Path, fold: int | None) -> Path:
    """A random tiny base model recording synth ``fold``'s base classes (None: no record)."""
    torch.manual_seed(0)
    record = {} if fold is None else training_record(fold)
    torch.save({"format": CHECKPOINT_FORMAT, "model": build_model(TINY_MODEL, 16).state_dict(),
                "model_config": config_lib.to_dict(TINY_MODEL), "n_classes": 16, **record},
               path)
    return path


def peer_checkpoint(path: Path, peer: str, fold: int) -> Path:
    """A random tiny episodic peer, saved as training writes it (classes and config too)."""
    torch.manual_seed(0)
    if peer == "pfenet":
        model, extra = PFENet(TINY_MODEL, TINY_PFENET), {
            "format": PFENET_FORMAT, "pfenet_config": config_lib.to_dict(TINY_PFENET)}
    else:
        model, extra = PANet(TINY_MODEL), {"format": PANET_FORMAT, "panet_config": {}}
    torch.save({"model": model.state_dict(), "model_config": config_lib.to_dict(TINY_MODEL),
                **extra, **training_record(fold)}, path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny synth-layout test folder, the base models of folds 0 and 1."""
    base = tmp_path_factory.mktemp("guard")
    root = make_voc_folder(base / "synth" / "A", default_masks(N_IMAGES), list_name="val")
    return root, base_checkpoint(base / "fold0.pt", 0), base_checkpoint(base / "fold1.pt", 1)


def evaluate_argv(root: Path, checkpoint: Path, fold: int, *sets: str) -> list[str]:
    sets = (f"root={root}", f"list_file={LIST}", f"checkpoint={checkpoint}", f"fold={fold}",
            f"size={SIZE}", "shots=[1]", "n_episodes=6", "methods=[ce]", "n_boot=10", *sets)
    return ["evaluate", *[a for s in sets for a in ("--set", s)]]


def eval_cfg(root: Path, checkpoint: Path, fold: int) -> EvalConfig:
    return EvalConfig(root=str(root), list_file=LIST, fold=fold, size=SIZE, shots=(1,),
                      n_episodes=6, methods=("ce",), checkpoint=str(checkpoint),
                      train_config=None)


def assert_names_the_leak(message: str, checkpoint: Path) -> None:
    """The message names fold 1, the checkpoint, the classes seen (ids and names) and the
    fix."""
    assert f"fold 1: checkpoint {checkpoint} was trained on synth fold 0's base classes" in (
        message)
    named = re.search(r"the synth classes fold 1 tests: (.+?); ", message)[1]
    seen = re.findall(r"(\d+) \(([\w-]+)\)", named)
    assert seen and all(int(c) in FOLD1_NOVEL and name == splits.class_name("synth", int(c))
                        for c, name in seen)
    assert "fold1.yaml" in message


# ----------------------------------------------------------------------------- command line


def test_evaluate_refuses_a_checkpoint_of_another_fold_before_any_feature(world, outputs,
                                                                          capsys):
    root, fold0, _ = world
    assert cli.main(evaluate_argv(root, fold0, 1)) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "fsstools evaluate: error: fold 1: checkpoint" in err and "Traceback" not in err
    assert_names_the_leak(err, fold0)
    assert "--set checkpoint=<best.pt of a synth fold 1 run>" in err
    assert not (outputs / "eval").exists() and not (outputs / "cache" / "features").exists()


def test_evaluate_scores_the_fold_with_its_own_checkpoint(world, outputs, capsys):
    root, _, fold1 = world
    assert cli.main(evaluate_argv(root, fold1, 1)) == 0
    captured = capsys.readouterr()
    assert "results in" in captured.out and "warning" not in captured.err
    assert len(list((outputs / "eval").glob("synth-fold1-1shot-*/episodes.csv"))) == 1


def test_a_train_config_of_another_fold_is_refused_before_training(world, outputs, tmp_path,
                                                                   capsys):
    root, _, _ = world
    train = tmp_path / "train.yaml"
    train.write_text(TRAIN_YAML.format(root=root))
    (tmp_path / "eval.yaml").write_text(f"root: {root}\nlist_file: {LIST}\nsize: {SIZE}\n"
                                        f"shots: [1]\nn_episodes: 6\ntrain_config: {train}\n")
    argv = ["evaluate", "--config", str(tmp_path / "eval.yaml"), "--set", "fold=1"]
    assert cli.main(argv) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert f"synth fold 1 is evaluated but train_config {train} trains synth fold 0" in err
    assert "--set train_config=configs/synth/fold1.yaml" in err
    assert "--set train_overrides=[data.fold=1]" in err
    assert not (outputs / "runs").exists() and not (outputs / "eval").exists()
    # the way out given: the same training config, told the fold once more
    cfg = config_lib.load(EvalConfig, tmp_path / "eval.yaml", ["fold=1",
                                                               "train_overrides=[data.fold=1]"])
    assert evaluate.checked_train_config(cfg).data.fold == 1


def test_extract_refuses_a_checkpoint_of_another_fold(world, outputs, tmp_path, capsys):
    root, fold0, fold1 = world
    el = sample_episodes(root, LIST, EpisodeSettings("synth", 1, 1, 6))
    episodes = save_episodes(el, tmp_path / "fold1.json")
    argv = ["extract", "--checkpoint", str(fold0), "--episodes", str(episodes), "--size",
            str(SIZE)]
    assert cli.main(argv) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "fsstools extract: error: fold 1: checkpoint" in err
    first = el.episodes[0].class_id  # a novel class of fold 1, a base class of fold 0
    assert f"{first} ({splits.class_name('synth', first)})" in err
    assert "--checkpoint <best.pt of a synth fold 1 run>" in err
    assert not (outputs / "cache" / "features").exists()
    argv[2] = str(fold1)
    assert cli.main(argv) == 0


# ----------------------------------------------------------------------------- recipes, peers


def test_the_notebooks_recipe_path_refuses_a_checkpoint_of_another_fold(world, outputs,
                                                                        monkeypatch):
    root, fold0, fold1 = world
    prof = Profile("quick", root.parent, SynthConfig(size=SIZE, styles=("A",)), "unused.yaml")
    cfg = recipes.fold_eval_config(prof, 1, fold0, [1], 6)  # what fold_study and meta_study prepare
    with pytest.raises(ConflictError) as err:
        evaluate.prepare(cfg, progress=False)
    assert_names_the_leak(str(err.value), fold0)
    # fold_study (and the explorer over it) prepares through the same guard
    monkeypatch.setattr(recipes, "ensure_base_model", lambda *args, **kwargs: fold0)
    with pytest.raises(ConflictError, match="fold 1: checkpoint"):
        recipes.fold_study(prof, 1, [1], 6, progress=False)
    monkeypatch.setattr(recipes, "ensure_base_model", lambda *args, **kwargs: fold1)
    assert recipes.fold_study(prof, 1, [1], 6, progress=False).checkpoint == fold1


@pytest.mark.parametrize("peer", ["panet", "pfenet"])
def test_an_episodic_peer_is_refused_on_its_training_classes(world, outputs, tmp_path, peer):
    root, _, _ = world
    path = peer_checkpoint(tmp_path / f"{peer}.pt", peer, fold=0)
    with pytest.raises(ConflictError) as err:
        evaluate.prepare(eval_cfg(root, path, 1), progress=False)
    assert_names_the_leak(str(err.value), path)
    guard.check_disjoint(path, "synth", splits.test_classes("synth", 0), 0)  # its own fold


# ----------------------------------------------------------------------------- the comparison


def test_coco_classes_meet_pascal_classes_by_name():
    for fold in range(splits.N_FOLDS):
        seen = guard.seen_classes("coco", splits.base_classes("coco", fold), "pascal",
                                  range(1, 21))
        assert sorted(set(range(1, 21)) - set(seen)) == splits.coco_to_pascal_classes(fold)
    assert guard.seen_classes("coco", [58], "pascal", [18, 19]) == [18]  # couch is sofa
    assert guard.seen_classes("synth", [6, 7], "synth", [7, 8]) == [7]


def test_a_coco_checkpoint_is_refused_on_pascal_classes_it_saw(tmp_path):
    path = tmp_path / "coco0.pt"
    torch.save({"format": CHECKPOINT_FORMAT, **training_record(0, "coco")}, path)
    assert guard.trained_classes(path) == ("coco", splits.base_classes("coco", 0), 0)
    guard.check_disjoint(path, "pascal", splits.coco_to_pascal_classes(0), 0)
    with pytest.raises(ConflictError) as err:  # aeroplane is novel in COCO fold 0, sofa is not
        guard.check_disjoint(path, "pascal", [1, 18], 0, what="extract")
    message = str(err.value)
    assert "coco fold 0's base classes, which include 1 of the pascal classes" in message
    assert "18 (sofa)" in message and "aeroplane" not in message
    assert "fsstools train --config configs/coco/fold0.yaml" in message


def test_a_checkpoint_without_a_record_is_let_through_with_a_warning(tmp_path):
    path = tmp_path / "reference.pt"
    torch.save({"epoch": 50, "state_dict": {"module.layer0.0.weight": torch.zeros(1)}}, path)
    assert guard.trained_classes(path) is None
    with pytest.warns(UserWarning, match=r"records no training classes .* fold 1's test"):
        guard.check_disjoint(path, "synth", FOLD1_NOVEL, 1)


@pytest.mark.parametrize(("sets", "message"), [
    (dict(fold=1, train_config="configs/synth/fold0.yaml"),
     r"synth fold 1 is evaluated .* trains synth fold 0: .* train_overrides=\[data.fold=1\]"),
    (dict(dataset="pascal", coco_to_pascal=True, fold=1, train_config="configs/coco/fold0.yaml"),
     r"trains coco fold 0 \(interleaved scheme\): .* must train coco fold 1"),
    (dict(dataset="pascal", train_config="configs/synth/fold0.yaml"),
     r"pascal fold 0 is evaluated .* trains synth fold 0: .* must train pascal fold 0, .*; --set "
     r"train_config=configs/pascal/fold0.yaml$"),
])
def test_the_training_config_must_train_the_evaluated_split(sets, message):
    cfg = EvalConfig(**sets)
    with pytest.raises(ConfigError, match=message) as err:
        evaluate.checked_train_config(cfg)
    assert err.value.key == "train_config"


def test_the_shipped_configs_train_the_split_they_evaluate():
    for fold in range(splits.N_FOLDS):
        synth = EvalConfig(fold=fold, train_config=f"configs/synth/fold{fold}.yaml")
        assert evaluate.checked_train_config(synth).data.fold == fold
        c2p = EvalConfig(dataset="pascal", coco_to_pascal=True, fold=fold,
                         train_config=f"configs/coco/fold{fold}.yaml")
        assert evaluate.checked_train_config(c2p).data.dataset == "coco"
    shipped = config_lib.load(EvalConfig, paths.configs_dir() / "synth" / "eval.yaml")
    assert evaluate.checked_train_config(shipped).data.fold == shipped.fold


# ----------------------------------------------------------------------------- the fold guard


def test_the_guard_reads_the_fold_of_an_authors_file_from_its_path(tmp_path):
    """The authors' files record no classes; under model_ckpt/<dataset>/split=<fold>/ they
    hold that split's base classes, so the guard checks them like ours."""
    archive = write_authors_archive(tmp_path, folds=range(1, 2))
    fold1 = next(archive.rglob("split=1/**/best.pth"))
    trained = guard.trained_classes(fold1)
    assert trained == guard.Trained("pascal", splits.base_classes("pascal", 1), 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # checked, so no "records no classes" warning
        guard.check_disjoint(fold1, "pascal", splits.test_classes("pascal", 1), 1)
    with pytest.raises(ConflictError, match="fold 0: checkpoint .*split=1.* include 5 of the "
                                            "pascal classes fold 0 tests"):
        guard.check_disjoint(fold1, "pascal", splits.test_classes("pascal", 0), 0)
    elsewhere = tmp_path / "best.pth"  # out of the archive: nothing says what it saw
    elsewhere.write_bytes(fold1.read_bytes())
    assert guard.trained_classes(elsewhere) is None
    with pytest.warns(UserWarning, match="records no training classes"):
        guard.check_disjoint(elsewhere, "pascal", splits.test_classes("pascal", 0), 0)
    coco = write_authors_archive(tmp_path / "coco", "coco", folds=range(2, 3))
    trained = guard.trained_classes(next(coco.rglob("best.pth")))
    assert trained.classes == splits.base_classes("coco", 2)  # interleaved, as theirs
    seen = guard.seen_classes("coco", trained.classes, "pascal", range(1, 21))
    assert seen == sorted(set(range(1, 21)) - set(splits.coco_to_pascal_classes(2)))
