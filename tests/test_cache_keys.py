"""Each cached stage keys on the code that computes it, and nothing else.

Base training keys on the run machinery, its recipe, the models and the data reading;
features on the models and the extraction; scores on inference, the metrics and the
feature store. Plots, reports, the benchmark's contact sheet, the CLI and the other kind of
training run feed none of them: editing those reuses every finished result (announced),
while editing the training loop recomputes the run and everything after it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fsstools import cache
from fsstools.training import base, episodic, run

ROOT = Path(__file__).resolve().parents[1]
NOT_COMPUTING = ("fsstools.plots", "fsstools.studies.report", "fsstools.studies.readings", "fsstools.jobs.publish",
                 "fsstools.cli", "fsstools.studies.recipes", "fsstools.studies.widgets",
                 "fsstools.data.synth.sheet", "fsstools.progress")


def closure(*modules: str) -> set[str]:
    return {m for name in modules for m in cache.modules_feeding(name)}


def computing(found: set[str], *outside: str) -> list[str]:
    """Modules of ``found`` under any of ``outside`` (packages count with their modules)."""
    return sorted(m for m in found for o in outside if m == o or m.startswith(o + "."))


def test_a_base_run_keys_on_training_models_and_data_reading_only():
    found = closure(run.__name__, base.RECIPE.code)
    assert {"fsstools.training.epoch", "fsstools.training.base", "fsstools.models.pspnet",
            "fsstools.data.datasets", "fsstools.data.transforms", "fsstools.data.voc"} <= found
    # the models pool prototypes with inference.prototype, and nothing else of inference
    assert not computing(found - {"fsstools.inference.prototype"}, *NOT_COMPUTING,
                         "fsstools.training.episodic", "fsstools.features",
                         "fsstools.data.synth.generate", "fsstools.inference",
                         "fsstools.evaluation.pipeline")


def test_an_episodic_run_keys_on_its_own_recipe_too():
    found = closure(run.__name__, episodic.RECIPE.code)
    assert {"fsstools.training.episodic", "fsstools.features", "fsstools.models.pfenet"} <= found
    assert "fsstools.training.base" not in found
    assert not computing(found, *NOT_COMPUTING)


def test_features_key_on_the_models_and_the_extraction_only():
    found = closure("fsstools.features")
    assert {"fsstools.models.pspnet", "fsstools.data.transforms", "fsstools.data.voc"} <= found
    assert not computing(found - {"fsstools.inference.prototype"}, *NOT_COMPUTING,
                         "fsstools.training", "fsstools.inference",
                         "fsstools.data.synth.generate", "fsstools.data.synth.render")


def test_scores_key_on_inference_metrics_and_features_only():
    found = closure("fsstools.evaluation.scoring")
    # the masks fed to inference come from features, episodes and constants
    assert {"fsstools.inference.loop", "fsstools.metrics", "fsstools.features",
            "fsstools.data.episodes", "fsstools.constants"} <= found
    assert not computing(found, *NOT_COMPUTING, "fsstools.training", "fsstools.evaluation.guard",
                         "fsstools.evaluation.pipeline", "fsstools.evaluation.config", "fsstools.evaluation.stats")


def test_readers_do_not_import_the_generator():
    found = closure("fsstools.data.voc", "fsstools.data.splits")
    assert not computing(found, "fsstools.data.synth.generate", "fsstools.data.synth.render")


PIPELINE = """
import sys
from pathlib import Path
import fsstools
print("package", Path(fsstools.__file__).parent.parent)
from fsstools.data.synth.benchmark import SynthConfig, ensure_synth
from tests.test_cached_stages import SYNTH, pipeline
data = Path(sys.argv[1])
ensure_synth(data, SynthConfig(seed=1, **SYNTH), progress=True, workers=1)
ckpt, study, rows = pipeline(data / "A")
print("checkpoint", ckpt)
print("features", study.store.key)
print("scores", rows[["fg_inter", "fg_union", "pi"]].to_numpy().sum())
"""


@pytest.fixture
def scratch(tmp_path):
    """A copy of the package to edit, and a runner of the tiny pipeline against it."""
    package = tmp_path / "src"
    shutil.copytree(ROOT / "fsstools", package / "fsstools",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package), str(ROOT)]),
           "FSSTOOLS_OUTPUTS": str(tmp_path / "outputs"), "OMP_NUM_THREADS": "1"}

    def pipeline() -> str:
        done = subprocess.run([sys.executable, "-c", PIPELINE, str(tmp_path / "data")], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"package {package}" in done.stdout  # the edited copy ran, not the checkout
        return done.stdout

    def edit(module: str, line: str) -> None:
        path = package / Path(*module.split(".")).with_suffix(".py")
        path.write_text(path.read_text() + f"\n{line}\n")

    return pipeline, edit


STAGES_REUSED = ("reusing synthetic data", "reusing base model", "reusing features of",
                 "reused from")


def _results(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.split(" ")[0] in
            ("checkpoint", "features", "scores")]


@pytest.mark.slow
def test_editing_plots_or_the_contact_sheet_reuses_every_result(scratch):
    pipeline, edit = scratch
    first = pipeline()
    assert not any(line in first for line in STAGES_REUSED)
    edit("fsstools.plots.style", "EDITED_FOR_A_TEST = 1")
    edit("fsstools.data.synth.sheet", "GAP = 5")
    again = pipeline()
    for line in STAGES_REUSED:
        assert line in again, f"{line!r} missing after an edit of plots and the sheet:\n{again}"
    assert _results(again) == _results(first)


@pytest.mark.slow
def test_editing_the_training_loop_recomputes_the_run_and_what_follows(scratch):
    pipeline, edit = scratch
    first = pipeline()
    edit("fsstools.training.epoch", "EDITED_FOR_A_TEST = 1")
    again = pipeline()
    assert "reusing synthetic data" in again  # the data do not depend on the trainer
    for line in ("reusing base model", "reusing features of", "reused from"):
        assert line not in again, f"{line!r} after an edit of the training loop"
    checkpoint = dict(line.split(" ", 1) for line in _results(again))["checkpoint"]
    assert checkpoint != dict(line.split(" ", 1) for line in _results(first))["checkpoint"]
