"""The package's import structure: no circle, and no import from a lower layer to a higher one.

The layer order is written here, once; the README's architecture section draws it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fsstools import cache

PACKAGE = Path(cache.__file__).resolve().parent

LAYERS: list[tuple[str, ...]] = [
    ("fsstools", "fsstools.constants", "fsstools.errors", "fsstools.paths", "fsstools.config",
     "fsstools.artifacts", "fsstools.cache"),  # foundation: no torch, no data
    ("fsstools.data",),
    ("fsstools.models",),
    ("fsstools.inference",),  # pure tensors
    ("fsstools.metrics",),
    ("fsstools.stats",),
    ("fsstools.training",),
    ("fsstools.features",),
    ("fsstools.guard",),  # a checkpoint is never scored on its training classes
    ("fsstools.eval_config", "fsstools.evaluate"),  # EvalConfig, then the pipeline using it
    ("fsstools.inspect",),
    ("fsstools.report", "fsstools.readings"),
    ("fsstools.plots",),
    ("fsstools.widgets",),
    ("fsstools.parameters", "fsstools.profiles", "fsstools.study",
     "fsstools.meta"),  # recipes: what notebooks call, with stats, report, plots, widgets
    ("fsstools.reproduce", "fsstools.publish", "fsstools.sweep_plan", "fsstools.gather",
     "fsstools.sweep"),  # jobs: notebooks run, sweeps planned, run on submitit, gathered
    ("fsstools.cli",),
]
ENTRY_POINTS = {"__main__"}
"""Modules that only start a command (``python -m fsstools.training``) sit above everything."""

INFERENCE_MAY_IMPORT = {"fsstools.constants", "fsstools.config", "fsstools.errors"}
"""inference/ takes and returns tensors: no files, no logging, no data or models."""


def modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] in ENTRY_POINTS:
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def layer(name: str) -> int:
    best = None
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and (
                best is None or len(prefix) > len(best[1])
            ):
                best = (rank, prefix)
    assert best is not None, f"{name} is in no layer; add it to LAYERS in {__file__}"
    return best[0]


GRAPH = {name: cache.imported_modules(name) for name in modules()}


def test_every_module_has_a_layer():
    for name in GRAPH:
        layer(name)


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_no_import_from_a_lower_layer_to_a_higher_one(name):
    upward = sorted(m for m in GRAPH[name] if layer(m) > layer(name))
    assert not upward, f"{name} (layer {layer(name)}) imports higher layers: {upward}"


def test_inference_imports_nothing_but_tensor_code():
    for name, imported in GRAPH.items():
        if name.startswith("fsstools.inference"):
            outside = {m for m in imported if not m.startswith("fsstools.inference")}
            assert outside <= INFERENCE_MAY_IMPORT, f"{name} imports {outside}"


def test_no_import_circle():
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for dep in sorted(GRAPH.get(name, ())):
            if state.get(dep) == "open":
                circle = path[path.index(dep):] + [dep] if dep in path else [name, dep]
                pytest.fail(f"import circle: {' -> '.join(circle)}")
            if dep not in state:
                visit(dep, [*path, dep])
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])


def test_the_stages_code_versions_cover_what_feeds_them():
    """A cached stage's code version hashes every module it imports, directly or not: the
    masks fed to inference come from features, episodes and constants, so a score cached
    before an edit of any of them is never served after it."""
    feeding = set(cache.modules_feeding("fsstools.evaluate"))
    assert {"fsstools.features", "fsstools.data.episodes", "fsstools.constants",
            "fsstools.inference.stacked", "fsstools.metrics"} <= feeding
    assert {"fsstools.data.voc", "fsstools.data.transforms", "fsstools.models.pspnet"} <= set(
        cache.modules_feeding("fsstools.features"))
    assert {"fsstools.training.loop", "fsstools.data.datasets", "fsstools.models.backbones"} <= set(
        cache.modules_feeding("fsstools.training"))
    assert "fsstools.plots" not in feeding and "fsstools.study" not in feeding
