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
     "fsstools.cache", "fsstools.progress"),  # foundation: no torch
    ("fsstools.data",),
    ("fsstools.inference",),  # pure tensors; models pool prototypes with it
    ("fsstools.models",),
    ("fsstools.metrics",),
    ("fsstools.features",),  # one feature cache: inference's and the PFENet-style head's
    ("fsstools.training",),
    ("fsstools.own_images",),  # your own images: backbone, features, a method, files
    ("fsstools.evaluation",),  # config, pipeline, scores, fold guard, statistics, views
    ("fsstools.plots",),  # DataFrames and views in, Figures out
    ("fsstools.studies",),  # what notebooks call: recipes, readings, reports, widgets
    ("fsstools.jobs",),  # notebooks run, docs published, sweeps planned, run and gathered
    ("fsstools.cli",),
]
MAX_LINES = 450
"""A module longer than this holds more than one concern: split it."""

INFERENCE_MAY_IMPORT = {"fsstools.constants", "fsstools.config", "fsstools.errors"}
"""inference/ takes and returns tensors: no files, no logging, no data or models."""


def modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
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


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.name)
def test_no_module_is_over_the_line_limit(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path} has {lines} lines (limit {MAX_LINES}): split it"


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
