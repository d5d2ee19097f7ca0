import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import fsstools
from fsstools import cli, config, paths
from fsstools.config import ConfigError
from fsstools.data.episodes import episode_hash, load_episodes
from fsstools.evaluation.pipeline import EvalConfig
from fsstools.inference import METHODS, MethodConfig, resolve_methods
from fsstools.models.checkpoints import CHECKPOINT_FORMAT
from fsstools.models.pspnet import build_model
from tests.tiny import TINY_MODEL, training_record

pytestmark = pytest.mark.filterwarnings("ignore:.*too few for 10-shot")  # the tiny benchmark


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_unknown_command_fails_with_usage(capsys):
    assert cli.main(["trian"]) == 2
    assert "unknown command 'trian' (did you mean 'train'?)" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_each_command_has_help(name, capsys):
    assert cli.main([name, "--help"]) == 0
    assert f"usage: fsstools {name}" in capsys.readouterr().out


def test_the_command_as_a_process_exits_2_with_one_error_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fsstools.cli", "evaluate", "--config", str(tmp_path / "no.yaml")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (f"fsstools evaluate: error: config file {tmp_path / 'no.yaml'} "
                                   "does not exist; check the path (configs/ holds examples)")


def test_shipped_eval_config_loads():
    cfg = config.load(EvalConfig, paths.configs_dir() / "synth" / "eval.yaml")
    assert cfg.shots == (1, 5) and cfg.methods[-1] == "oracle_repri"


# ----------------------------------------------------------------------------- help, version


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"fsstools {fsstools.__version__}"


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_option_is_explained_with_its_default_and_no_rst(name, capsys):
    parser = cli.COMMANDS[name].parser()
    for action in parser._actions:
        assert action.help, f"fsstools {name} {action.option_strings or action.dest}: no help"
    assert cli.main([name, "--help"]) == 0
    text = capsys.readouterr().out
    assert "`" not in text and "--debug" in text  # plain text, no RST or Markdown marks
    shown = [a for a in parser._actions if not a.required and "(default" not in a.help
             and not any(a.default is v for v in (None, False, argparse.SUPPRESS))]
    assert "(default: None)" not in text and "(default: False)" not in text
    for action in shown:
        assert f"(default: {action.default})" in " ".join(text.split()), action.dest


# ----------------------------------------------------------------------------- EvalConfig


def test_eval_config_takes_names_and_variants_and_loads_back_equal(tmp_path):
    variant = MethodConfig(name="fast", iterations=5)
    cfg = EvalConfig(shots=[1, 5], methods=["repri", {"name": "t2", "base": "repri",
                                                      "t_pi": (2,)}, variant])
    assert cfg.shots == (1, 5) and cfg.methods[1] == {"name": "t2", "base": "repri", "t_pi": [2]}
    assert resolve_methods(cfg.methods)["fast"] == variant
    path = config.save_yaml(cfg, tmp_path / "c.yaml")
    assert config.load(EvalConfig, path) == cfg


@pytest.mark.parametrize(("override", "message"), [
    ("fold=4", r"fold 4 does not exist; folds are 0, 1, 2, 3"),
    ("scheme=interleave", "did you mean 'interleaved'"),
    ("n_episodes=0", r"n_episodes \(episodes per list\) must be >= 1, got 0"),
    ("size=4", "size=4: the test size must be at least 8"),
    ("device=cude", "device 'cude' is not a torch device"),
    ("methods=[]", "methods is empty"),
    ("methods=[ce, ce]", "method label 'ce' is used twice"),
    ("coco_to_pascal=true", "coco_to_pascal tests PASCAL images"),
])
def test_eval_config_is_checked_when_loaded(override, message):
    with pytest.raises(ConfigError, match=message):
        config.load(EvalConfig, None, [override])


# ----------------------------------------------------------------------------- stages chained

SIZE = 32


def tiny_checkpoint(path: Path, fold: int) -> Path:
    """A random tiny base model that records the base classes of synth ``fold``."""
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, 16)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": CHECKPOINT_FORMAT, "model": model.state_dict(),
                "model_config": config.to_dict(TINY_MODEL), "n_classes": 16,
                **training_record(fold)}, path)
    return path


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A tiny embedded benchmark made by `fsstools synth`, and a random tiny checkpoint of
    fold 0."""
    base = tmp_path_factory.mktemp("synth")
    argv = ["synth", "--out", str(base / "synth"), "--n-train", "4", "--n-val", "96",
            "--size", str(SIZE), "--styles", "A", "--workers", "1", "--no-progress"]
    assert cli.main(argv) == 0
    return base / "synth" / "A", tiny_checkpoint(base / "best.pt", fold=0)


@pytest.fixture(scope="module")
def fold1_checkpoint(synth):
    """A random tiny checkpoint of fold 1 (fold 1 is scored with it, never with fold 0's)."""
    return tiny_checkpoint(synth[1].parent / "fold1" / "best.pt", fold=1)


def _results(out: str) -> Path:
    return Path(re.search(r"^results in (.+)$", out, re.M)[1])


def test_episodes_extract_evaluate_chain_through_files(synth, outputs, tmp_path, capsys):
    root, ckpt = synth
    folder = tmp_path / "my eps: #1"  # the printed command must quote this for shell and YAML
    folder.mkdir()
    files = []
    for shots in (1, 2):
        files.append(folder / f"ep{shots}.json")
        argv = ["episodes", "--root", str(root), "--list", "lists/val.txt", "--dataset",
                "synth", "--fold", "0", "--shots", str(shots), "--n", "12", "--out",
                str(files[-1])]
        assert cli.main(argv) == 0
    argv = ["extract", "--checkpoint", str(ckpt), "--episodes", *map(str, files), "--size",
            str(SIZE)]
    assert cli.main(argv) == 0
    printed = re.search(r"^evaluate on them with: (.+)$", capsys.readouterr().out, re.M)[1]
    command = shlex.split(printed)[1:]  # exactly what extract printed, after "fsstools"
    extra = ["--set", "methods=[ce, repri]", "--set", "n_boot=20"]

    assert cli.main([*command, *extra]) == 0
    out = capsys.readouterr().out
    assert "reusing features of" in out  # extract's features, not a second extraction
    results = _results(out)
    assert results.parent == outputs / "eval" and results.name.startswith("synth-fold0-1-2shot-")
    rows = pd.read_csv(results / "episodes.csv")
    assert rows.groupby(["method", "shots"]).size().to_dict() == {
        ("ce", 1): 12, ("ce", 2): 12, ("repri", 1): 12, ("repri", 2): 12}
    meta = json.loads((results / "meta.json").read_text())
    assert meta["episode_hashes"] == {f"{k}shot-seed0": load_episodes(f).hash
                                      for k, f in zip((1, 2), files, strict=True)}
    words = command + extra
    sets = [s for flag, s in zip(words[:-1], words[1:], strict=True) if flag == "--set"]
    assert config.load(EvalConfig, results / "config.yaml") == config.load(EvalConfig, None, sets)

    # A deliberately edited file: refused with the way out, then accepted under its new hash.
    data = json.loads(files[0].read_text())
    data["episodes"] = data["episodes"][:-1]
    files[0].write_text(json.dumps(data))
    assert cli.main([*command, *extra]) == cli.EXIT_USER_ERROR
    assert "--accept-edited" in capsys.readouterr().err
    assert cli.main([*command, *extra, "--accept-edited"]) == 0
    captured = capsys.readouterr()
    assert re.search(r"^fsstools evaluate: warning: episode file .*ep1\.json was edited",
                     captured.err, re.M)
    edited = _results(captured.out)
    assert edited != results and results.is_dir()  # its own folder; the first one kept
    new_hash = json.loads((edited / "meta.json").read_text())["episode_hashes"]["1shot-seed0"]
    with pytest.warns(UserWarning, match="was edited"):
        assert new_hash == episode_hash(load_episodes(files[0], accept_edited=True))
    assert len(pd.read_csv(edited / "episodes.csv").query("shots == 1")) == 2 * 11


def test_each_fold_lands_in_its_own_folder_and_out_dir_is_never_overwritten(
    synth, fold1_checkpoint, outputs, tmp_path, capsys
):
    root, ckpt = synth
    common = [f"root={root}", f"size={SIZE}", "shots=[1]", "n_episodes=8", "methods=[ce]",
              "n_boot=10"]
    checkpoints = {0: ckpt, 1: fold1_checkpoint}  # each fold scored by its own base model

    def evaluate(fold: int, *sets: str) -> int:
        sets = (*common, f"fold={fold}", f"checkpoint={checkpoints[fold]}", *sets)
        return cli.main(["evaluate", *[a for s in sets for a in ("--set", s)]])

    folders = []
    for fold in (0, 1):
        assert evaluate(fold) == 0
        folders.append(_results(capsys.readouterr().out))
    assert folders[0] != folders[1]
    for fold, folder in enumerate(folders):
        assert folder.name.startswith(f"synth-fold{fold}-1shot-")
        assert config.load(EvalConfig, folder / "config.yaml").fold == fold

    mine = tmp_path / "mine"
    assert evaluate(0, f"out_dir={mine}") == 0
    capsys.readouterr()
    assert evaluate(1, f"out_dir={mine}") == cli.EXIT_USER_ERROR
    assert "holds the results of another configuration (it differs in checkpoint, fold)" in (
        capsys.readouterr().err)
    assert config.load(EvalConfig, mine / "config.yaml").fold == 0


def test_a_yaml_method_variant_is_evaluated(synth, outputs, tmp_path, capsys):
    root, ckpt = synth
    (tmp_path / "eval.yaml").write_text(f"""\
root: {root}
checkpoint: {ckpt}
size: {SIZE}
shots: [1]
n_episodes: 10
n_boot: 20
methods:
  - repri
  - {{name: repri_tpi2, base: repri, t_pi: [2]}}
  - name: ce_short
    base: ce
    iterations: 5
    lr: 1e-1
""")
    assert cli.main(["evaluate", "--config", str(tmp_path / "eval.yaml")]) == 0
    folder = _results(capsys.readouterr().out)
    loaded = config.load(EvalConfig, tmp_path / "eval.yaml")
    assert config.load(EvalConfig, folder / "config.yaml") == loaded
    meta = json.loads((folder / "meta.json").read_text())["methods"]
    assert meta["repri_tpi2"] == {**config.to_dict(METHODS["repri"]), "name": "repri_tpi2",
                                  "t_pi": [2]}
    assert (meta["ce_short"]["iterations"], meta["ce_short"]["lr"]) == (5, 0.1)
    rows = pd.read_csv(folder / "episodes.csv")
    assert set(rows["method"]) == {"repri", "repri_tpi2", "ce_short"}
    pi = rows.pivot(index="episode", columns="method", values="pi")
    assert not np.allclose(pi["repri"], pi["repri_tpi2"])  # the prior was re-estimated earlier
