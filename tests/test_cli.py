import subprocess
import sys

import pytest

from fsstools import cli, config, paths
from fsstools.evaluate import EvalConfig


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_unknown_command_fails_with_usage(capsys):
    assert cli.main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_each_command_has_help(name):
    proc = subprocess.run(
        [sys.executable, "-m", "fsstools.cli", name, "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert f"fsstools {name}" in proc.stdout


def test_shipped_eval_config_loads():
    cfg = config.load(EvalConfig, paths.configs_dir() / "synth" / "eval.yaml")
    assert cfg.shots == (1, 5) and cfg.methods[-1] == "oracle_repri"
