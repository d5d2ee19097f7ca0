"""Progress bars send a bounded number of refreshes, so a long cell cannot flood a kernel's
output channel (ZMQ drops messages past its high-water mark, nbval's closing "idle" status
among them): a bar's refreshes, the messages of a training cell, and nbval itself on a
training cell from a cold outputs folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from fsstools import progress

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
import iopub_messages  # noqa: E402  (bench/ is not a package of the project)


class _Clock:
    """A fake clock for tqdm: every reading is one second later."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.mark.parametrize("total", [10, 1000, 100_000])
def test_a_bar_refreshes_at_most_max_refreshes_times(total, monkeypatch):
    refreshes = []
    bar = progress.bar(total=total, disable=False, file=open(os.devnull, "w"))
    bar._time = _Clock()  # a second per step: tqdm's own rate limit never holds it back
    monkeypatch.setattr(bar, "display", lambda *a, **k: refreshes.append(bar.n))
    for _ in range(total):
        bar.update()
    bar.close()
    assert len(refreshes) <= progress.MAX_REFRESHES + 2  # + the first and the last draw
    assert refreshes[-1] == total


def test_an_iterated_bar_is_bounded_too(monkeypatch):
    refreshes = []
    items = range(50_000)
    bar = progress.bar(items, disable=False, file=open(os.devnull, "w"))
    bar._time = _Clock()
    monkeypatch.setattr(bar, "display", lambda *a, **k: refreshes.append(bar.n))
    assert sum(1 for _ in bar) == len(items)
    assert len(refreshes) <= progress.MAX_REFRESHES + 2


def test_no_module_draws_a_raw_tqdm_bar():
    package = REPO / "fsstools"
    raw = [str(p.relative_to(package)) for p in sorted(package.rglob("*.py"))
           if p.name != "progress.py" and "tqdm(" in p.read_text()]
    assert not raw, f"use fsstools.progress.bar instead of tqdm in {raw}"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """Where the training cells of this module make (once) and share their data."""
    return tmp_path_factory.mktemp("iopub") / "synth_tiny"


@pytest.mark.notebooks
@pytest.mark.slow
def test_a_training_cell_sends_few_messages_and_its_idle_status_arrives(tiny_data):
    """Read as nbval reads (only after the cell's reply, 5 s per message): the cell's
    messages do not grow with the run, and the closing status is not dropped."""
    short, longer = (iopub_messages.run(epochs, read="after", data=tiny_data)
                     for epochs in (1, 3))
    assert short["idle"] and longer["idle"]
    n_short, n_longer = (sum(r["counts"].values()) for r in (short, longer))
    assert n_longer < 300, longer["counts"]  # ZMQ queues hold ~1000 each way
    assert n_longer - n_short < 60, (short["counts"], longer["counts"])


@pytest.mark.notebooks
@pytest.mark.slow
def test_nbval_runs_a_training_cell_on_a_cold_outputs_folder(tmp_path):
    """nbval with its default output wait, on a notebook whose cell trains the tiny config
    from nothing (fresh outputs and data)."""
    cell = iopub_messages.cell(tmp_path, epochs=2)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(cell),
                nbformat.v4.new_code_cell("print(os.listdir(os.environ['FSSTOOLS_OUTPUTS']))")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = tmp_path / "train_cell.ipynb"
    nbformat.write(nb, path)
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--nbval-lax", str(path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "2 passed" in done.stdout
    runs = list((tmp_path / "outputs" / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "done").is_file()
    assert json.loads((runs[0] / "done").read_text())["epoch"] >= 1
