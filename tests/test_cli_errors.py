"""Bad inputs through the command line, as a new user would make them.

Each case runs one ``fsstools`` command in-process and checks what a tool owes its user:
exit status 2, one ``error:`` line (no traceback) naming the thing at fault, and nothing
left behind: no result, run or episode file, no temporary file, no feature folder, no lock
file or empty folder; only finished cache entries of the stages that did succeed (the class
index) may appear.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fsstools import cli
from fsstools import config as config_lib
from fsstools.data.episodes import EpisodeSettings, load_episodes, sample_episodes, save_episodes
from fsstools.models.backbones import TRUNKS, DilatedResNet
from fsstools.models.checkpoints import CHECKPOINT_FORMAT
from fsstools.models.pspnet import build_model
from tests.fixtures import default_masks, list_path, make_voc_folder, write_image, write_mask
from tests.tiny import TINY_MODEL

SIZE = 32  # 24x32 test images -> padded 32x32 -> 4x4 features
N_IMAGES = 40  # each class the main class of two images: enough for 1-shot episodes
N_BASE_OUTPUTS = 16  # 15 base classes + background
TRAIN_YAML = """\
data: {{dataset: synth, root: {root}, crop_size: 32, val_size: 32}}
model: {{arch: small, widths: [4, 8, 8, 8], stem_width: 4, bottleneck_dim: 8, bins: [1, 2]}}
optim: {{batch_size: 4}}
run: {{name: tiny, workers: 0, threads: 1, amp: fp32, epochs: 1, progress: false}}
"""
CACHE_STAGE = re.compile(r"cache(/[^/]+)?")  # the cache folder and its stage folders
CLASS_INDEX = re.compile(r"cache/class_index/\w+\.json")
FEATURES = re.compile(r"cache/features/\w+(/[\w.]+)?")


def write_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, N_BASE_OUTPUTS)
    torch.save({"format": CHECKPOINT_FORMAT, "model": model.state_dict(),
                "model_config": config_lib.to_dict(TINY_MODEL), "n_classes": N_BASE_OUTPUTS},
               path)
    return path


def data_folder(path: Path) -> Path:
    return make_voc_folder(path, default_masks(N_IMAGES), list_name="val")


def episodes_file(root: Path, path: Path, shots: int = 1, fold: int = 0) -> Path:
    el = sample_episodes(root, list_path(list_name="val"), EpisodeSettings("synth", fold, shots, 6))
    return save_episodes(el, path)


@dataclass
class World:
    """Good inputs shared by the cases, which each spoil one thing."""

    root: Path
    checkpoint: Path
    episodes: Path
    train_yaml: Path
    work: Path  # where cases write their own files

    def evaluate(self, *sets: str) -> list[str]:
        """``fsstools evaluate`` on the good inputs, plus ``--set`` items."""
        base = [f"checkpoint={self.checkpoint}", f"root={self.root}",
                f"list_file={list_path(list_name='val')}", f"size={SIZE}", "n_episodes=6",
                "shots=[1]", "methods=[ce]", "n_boot=10"]
        return ["evaluate", *[a for s in (*base, *sets) for a in ("--set", s)]]

    def fresh_data(self) -> tuple[Path, Path]:
        """A data folder this case may spoil, and a 1-shot episode file drawn from it."""
        root = data_folder(self.work / "voc")
        return root, episodes_file(root, self.work / "ep.json")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    base = tmp_path_factory.mktemp("shared")
    root = data_folder(base / "voc")
    train_yaml = base / "tiny.yaml"
    train_yaml.write_text(TRAIN_YAML.format(root=root))
    episodes = episodes_file(root, base / "ep.json")
    return root, write_checkpoint(base / "best.pt"), episodes, train_yaml


@pytest.fixture
def world(shared, tmp_path, outputs):
    work = tmp_path / "work"
    work.mkdir()
    return World(*shared, work=work)


# ----------------------------------------------------------------------------- cases
# Each case spoils one input and returns (argv, words the error must hold, extra paths
# under the outputs folder that may appear: caches of stages that succeeded first).

Case = Callable[[World], tuple[list[str], list[str], tuple[re.Pattern, ...]]]


def lr_not_a_number(w: World):
    argv = ["train", "--config", str(w.train_yaml), "--set", "optim.lr=abc"]
    return argv, ["optim.lr must be a number, got 'abc'", "(from --set optim.lr=abc)"], ()


def unknown_key_given_by_set(w: World):
    argv = ["train", "--config", str(w.train_yaml), "--set", "optim.lrr=0.1"]
    return argv, ["unknown key optim.lrr", "did you mean 'optim.lr'", "(from --set"], ()


def method_name_in_the_wrong_case(w: World):
    words = ["unknown method 'RePRI' (did you mean 'repri'?)", "known methods: inductive"]
    return w.evaluate("methods=[repri,RePRI]"), words, ()  # refused before any data is read


def negative_shots(w: World):
    return w.evaluate("shots=[-1]"), ["shots", "must be >= 1, got [-1]", "--set shots=[-1]"], ()


def negative_shots_when_sampling(w: World):
    argv = ["episodes", "--root", str(w.root), "--list", list_path(list_name="val"),
            "--dataset", "synth", "--fold", "0", "--shots", "-1", "--out", str(w.work / "e.json")]
    return argv, ["argument --shots: must be >= 1, got -1"], ()


def unknown_fold_and_dataset(w: World):
    return w.evaluate("fold=7", "dataset=pascall"), ["got 'pascall'",
                                                      "did you mean 'pascal'"], ()


def truncated_checkpoint(w: World):
    cut = w.work / "cut.pt"
    cut.write_bytes(w.checkpoint.read_bytes()[:2000])
    argv = ["extract", "--checkpoint", str(cut), "--episodes", str(w.episodes), "--size", "32"]
    return argv, [f"checkpoint {cut}", "truncated"], ()


def foreign_checkpoint(w: World):
    other = w.work / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    argv = ["extract", "--checkpoint", str(other), "--episodes", str(w.episodes)]
    return argv, [f"checkpoint {other} is neither an fsstools checkpoint"], ()


def missing_checkpoint(w: World):
    argv = w.evaluate(f"checkpoint={w.work / 'nope.pt'}")
    return argv, [f"checkpoint {w.work / 'nope.pt'} does not exist"], ()


def sixteen_bit_mask_with_value_300(w: World):
    root = data_folder(w.work / "voc")
    mask = np.array(Image.open(root / "SegmentationClass/img005.png")).astype(np.uint16)
    mask[3, 3] = 300
    Image.fromarray(mask).save(root / "SegmentationClass/img005.png")  # 16-bit PNG
    argv = ["episodes", "--root", str(root), "--list", list_path(list_name="val"), "--dataset",
            "synth", "--fold", "0", "--out", str(w.work / "e.json")]
    return argv, ["img005.png (I;16) holds the value(s) 300", "1..20 (class ids) and 255"], ()


def missing_data_root(w: World):
    argv = ["episodes", "--root", str(w.work / "nowhere"), "--list", "lists/val.txt",
            "--dataset", "synth", "--fold", "0", "--out", str(w.work / "e.json")]
    return argv, [f"data root {w.work / 'nowhere'} does not exist"], ()


def corrupt_image(w: World):
    root, episodes = w.fresh_data()
    query = load_episodes(episodes).episodes[0].query[0]
    (root / query).write_bytes(b"these bytes are no JPEG")
    argv = ["extract", "--checkpoint", str(w.checkpoint), "--episodes", str(episodes)]
    return argv, [f"cannot read image {root / query}", "corrupt"], ()


def image_and_mask_sizes_differ(w: World):
    root, episodes = w.fresh_data()
    query = load_episodes(episodes).episodes[0].query[0]
    write_image(root / query, 10, 12)
    argv = ["extract", "--checkpoint", str(w.checkpoint), "--episodes", str(episodes)]
    return argv, [f"image {root / query} is 10x12 but its mask"], ()


def support_without_foreground(w: World):
    root, episodes = w.fresh_data()
    ep = load_episodes(episodes).episodes[0]
    mask_path = root / ep.supports[0][1]
    mask = np.array(Image.open(mask_path))
    mask[mask == ep.class_id] = 0  # the object is gone from the labels after sampling
    write_mask(mask_path, mask)
    argv = w.evaluate(f"episodes=[{episodes}]")
    words = [f"support {ep.supports[0][0]} holds no pixel of class {ep.class_id}"]
    return argv, words, (CACHE_STAGE, FEATURES)


def edited_episode_file(w: World):
    data = json.loads(w.episodes.read_text())
    data["episodes"].pop()
    edited = w.work / "edited.json"
    edited.write_text(json.dumps(data))
    return w.evaluate(f"episodes=[{edited}]"), ["does not match its hash", "--accept-edited"], ()


def episode_file_of_another_fold(w: World):
    return w.evaluate(f"episodes=[{w.episodes}]", "fold=1"), ["--set fold=0"], ()


def too_few_images_for_the_shots(w: World):
    words = ["is held by 4 image(s)", "fewer than the 6 an episode needs", "--set skip_small=true"]
    return w.evaluate("shots=[5]"), words, (CACHE_STAGE, CLASS_INDEX)


def missing_config_file(w: World):
    argv = ["evaluate", "--config", str(w.work / "nope.yaml")]
    return argv, [f"config file {w.work / 'nope.yaml'} does not exist"], ()


def bad_method_variant(w: World):
    words = ["method repri_t1", "t_pi", "(from --set methods="]
    return w.evaluate("methods=[{name: repri_t1, base: repri, t_pi: [1]}]"), words, ()


def value_that_is_not_yaml(w: World):
    return w.evaluate("shots=[1,"), ["--set 'shots=[1,'", "not valid YAML"], ()


def unknown_notebook_parameter(w: World):
    return ["reproduce", "--only", "02", "--set", "n_episode=5"], [
        "--set n_episode", "did you mean 'n_episodes'"], ()


def device_this_machine_lacks(w: World):
    argv = ["train", "--config", str(w.train_yaml), "--set", "run.device=cuda:3"]
    return argv, ["run.device='cuda:3'", "CUDA device(s)", "run.device=cpu"], ()


def device_that_is_not_a_device(w: World):
    argv = ["train", "--config", str(w.train_yaml), "--set", "run.device=gpu"]
    return argv, ["run.device='gpu' is not a torch device"], ()


def training_fold_that_does_not_exist(w: World):
    argv = ["train", "--config", str(w.train_yaml), "--set", "data.fold=4"]
    return argv, ["fold 4 does not exist", "folds are 0, 1, 2, 3"], ()


def imagenet_weights_with_the_other_stem(w: World):
    spec = dataclasses.replace(TRUNKS["small"], widths=(4, 8, 8, 8), stem_width=4)
    weights = w.work / "resnet50_v2.pth"
    torch.save(DilatedResNet(spec, deep_stem=True).state_dict(), weights)
    data = data_folder(w.work / "voc")
    (data / "lists/train.txt").write_text((data / "lists/val.txt").read_text())
    (w.work / "tiny.yaml").write_text(TRAIN_YAML.format(root=data))
    argv = ["train", "--config", str(w.work / "tiny.yaml"), "--set", f"model.pretrained={weights}"]
    words = [f"ImageNet weights {weights} have a deep stem", "model.deep_stem is false",
             "--set model.deep_stem=true"]
    return argv, words, (CACHE_STAGE, CLASS_INDEX)


def unknown_notebook(w: World):
    return ["reproduce", "--only", "99"], ["matches --only 99", "00_walkthrough"], ()


CASES: list[Case] = [
    lr_not_a_number, unknown_key_given_by_set, method_name_in_the_wrong_case, negative_shots,
    negative_shots_when_sampling, unknown_fold_and_dataset, truncated_checkpoint,
    foreign_checkpoint, missing_checkpoint, sixteen_bit_mask_with_value_300, missing_data_root,
    corrupt_image, image_and_mask_sizes_differ, support_without_foreground, edited_episode_file,
    episode_file_of_another_fold, too_few_images_for_the_shots, missing_config_file,
    bad_method_variant, value_that_is_not_yaml, unknown_notebook_parameter, unknown_notebook,
    device_this_machine_lacks, device_that_is_not_a_device, training_fold_that_does_not_exist,
    imagenet_weights_with_the_other_stem,
]


def snapshot(*folders: Path) -> dict[str, bool]:
    """Relative path -> is a folder, for everything under ``folders``."""
    return {f"{i}:{p.relative_to(folder).as_posix()}": p.is_dir()
            for i, folder in enumerate(folders) if folder.exists() for p in folder.rglob("*")}


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_a_bad_input_fails_like_a_tool(case, world, outputs, capsys):
    argv, words, may_appear = case(world)
    before = snapshot(outputs, world.work)
    capsys.readouterr()
    status = cli.main(argv)
    err = capsys.readouterr().err
    assert status == cli.EXIT_USER_ERROR, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith(f"fsstools {argv[0]}: error: "), err
    assert sum("error:" in line for line in lines) == 1, err  # one error paragraph
    for word in words:
        assert word in lines[-1], (word, lines[-1])
    if case is sixteen_bit_mask_with_value_300:
        assert "colour" not in lines[-1]

    after = snapshot(outputs, world.work)
    new = sorted(set(after) - set(before))
    allowed = may_appear
    for entry in new:
        where, rel = entry.split(":", 1)
        assert where == "0" and any(p.fullmatch(rel) for p in allowed), f"left behind: {entry}"
    for entry, is_dir in after.items():
        name = entry.rsplit("/", 1)[-1].split(":")[-1]
        assert not name.startswith(".") and not name.endswith(".tmp"), f"temporary: {entry}"
        folder = (outputs if entry.startswith("0:") else world.work) / entry.split(":", 1)[1]
        if is_dir:
            assert any(folder.iterdir()), f"empty folder left behind: {entry}"


def test_enough_bad_inputs_are_covered():
    assert len(CASES) >= 12


@pytest.mark.parametrize("where", ["before", "after", "env"])
def test_debug_shows_the_traceback(world, capsys, monkeypatch, where):
    argv = ["evaluate", "--config", str(world.work / "nope.yaml")]
    if where == "env":
        monkeypatch.setenv(cli.DEBUG_ENV, "1")
    else:
        argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    assert cli.main(argv) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "Traceback" in err and "MissingError" in err
    assert err.strip().splitlines()[-1].startswith("fsstools evaluate: error: config file")


def test_an_unexpected_failure_keeps_its_traceback(monkeypatch):
    def broken(args):
        raise RuntimeError("a bug, not a user error")

    command = dataclasses.replace(cli.COMMANDS["evaluate"], run=broken)
    monkeypatch.setitem(cli.COMMANDS, "evaluate", command)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["evaluate"])


def test_a_failed_training_leaves_no_run_folder(world, outputs, capsys):
    data = shutil.copytree(world.root, world.work / "voc")
    (data / "lists/train.txt").write_text((data / "lists/val.txt").read_text())
    yaml_file = world.work / "tiny.yaml"
    yaml_file.write_text(TRAIN_YAML.format(root=data))
    argv = ["train", "--config", str(yaml_file), "--set", "optim.batch_size=1000"]
    assert cli.main(argv) == cli.EXIT_USER_ERROR
    assert "cannot fill one batch of 1000" in capsys.readouterr().err
    assert not (outputs / "runs").exists() or not any((outputs / "runs").iterdir())
