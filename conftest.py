"""Settings of every pytest run in this repository, tests/ and nbval's notebooks alike."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent


def pytest_configure(config):
    # Tests never write into the user's outputs/: they share a cache of their own (kept
    # between sessions; every entry is content-keyed). nbval's kernels inherit it.
    os.environ.setdefault("FSSTOOLS_OUTPUTS", str(REPO / "outputs" / "tests"))
    # Notebooks run on the test profile (a tiny set, models trained in seconds) unless a
    # test injects another: nbval's runs of the stored notebooks and the papermill tests.
    os.environ["FSSTOOLS_PROFILE"] = "tiny"
