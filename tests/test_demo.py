"""``fsstools demo`` on the tiny profile: what it prints and writes, and the sign of its gaps."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fsstools.cli import main
from fsstools.plots.style import label
from fsstools.studies.demo import run_demo
from fsstools.studies.profiles import get_profile

pytestmark = pytest.mark.slow


def _point(cell: str) -> float:
    return float(cell.split(" [")[0])


def test_the_gaps_are_repri_minus_each_baseline(tmp_path):
    result = run_demo(get_profile("tiny"), tmp_path, n_episodes=20)
    repri = result.table.loc[label("repri")]
    for method, gaps in result.gaps.iterrows():
        for shots, cell in gaps.items():
            expected = _point(repri[shots]) - _point(result.table.loc[method, shots])
            assert _point(cell) == pytest.approx(expected, abs=0.11), (method, shots)
    examples = result.files["examples"]
    assert Image.open(examples / "a.jpg").size == Image.open(examples / "a.png").size
    assert set(np.unique(np.asarray(Image.open(examples / "a.png")))) <= {0, 255}
    assert len(list((examples / "photos").glob("*.jpg"))) == 3
    assert (examples / "best.pt").is_file() and not (examples / "demo_images").exists()


def test_the_command_prints_the_table_and_every_path(tmp_path, capsys):
    assert main(["demo", "--profile", "tiny", "--n-episodes", "20", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert label("repri") in printed and "shots=5" in printed
    for name in ("scores.csv", "scores.png", "episode.png", "your_images"):
        assert str(tmp_path / name) in printed and (tmp_path / name).exists()


def test_a_bad_fold_is_refused_with_exit_2(capsys):
    assert main(["demo", "--fold", "7"]) == 2
    assert "--fold" in capsys.readouterr().err
