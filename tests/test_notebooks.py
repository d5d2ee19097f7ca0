"""The numbered notebooks: structure rules, reproduce configs, and papermill runs.

nbval runs every notebook as stored (`pytest --nbval-lax notebooks/`); the papermill tests
here inject non-default parameters and check the numbers the notebooks record as CSV.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from fsstools import study
from fsstools.data import splits

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ALLOWED_IMPORTS = {"fsstools", "pandas", "matplotlib", "IPython"}
NOTEBOOK_LAYER = {"fsstools.study", "fsstools.stats", "fsstools.report", "fsstools.plots",
                  "fsstools.widgets"}
"""What notebooks import from fsstools: the recipes, statistics, reporting, plots, widgets."""


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _parameters_cells(nb: nbformat.NotebookNode) -> list:
    return [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]


def _parameters(nb: nbformat.NotebookNode) -> dict:
    (cell,) = _parameters_cells(nb)
    return {
        stmt.targets[0].id: ast.literal_eval(stmt.value) for stmt in ast.parse(cell.source).body
    }


def test_six_notebooks_are_there():
    stems = [p.stem[:2] for p in NOTEBOOKS]
    assert stems == ["00", "01", "02", "03", "04", "05"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_structure(path):
    nb = _read(path)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    assert "**Purpose.**" in first.source
    code = [c for c in nb.cells if c.cell_type == "code"]
    params = _parameters_cells(nb)
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    # imports come before the parameters, the rest after
    assert code.index(params[0]) == 1
    assert all(ast.parse(code[0].source).body), "imports cell is empty"
    assert all(isinstance(s, ast.Import | ast.ImportFrom) for s in ast.parse(code[0].source).body)
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, "commit without outputs"
        tree = ast.parse(cell.source)
        for node in ast.walk(tree):
            assert not isinstance(
                node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda
            ), f"{path.name}: no def/class/lambda in notebooks"
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = (
                    [node.module]
                    if isinstance(node, ast.ImportFrom)
                    else [a.name for a in node.names]
                )
                assert {n.split(".")[0] for n in names} <= ALLOWED_IMPORTS, names
                if isinstance(node, ast.ImportFrom) and node.module == "fsstools":
                    names = [f"fsstools.{a.name}" for a in node.names]
                fs = {n for n in names if n.startswith("fsstools")}
                assert fs <= NOTEBOOK_LAYER, f"{path.name} imports {fs - NOTEBOOK_LAYER}"
        assert "sys.path" not in cell.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_holds_plain_assignments(path):
    (cell,) = _parameters_cells(_read(path))
    for stmt in ast.parse(cell.source).body:
        assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
        assert isinstance(stmt.targets[0], ast.Name)
        ast.literal_eval(stmt.value)  # raises on calls, names, arithmetic on names
    params = _parameters(_read(path))
    assert params["profile"] == "quick"
    assert params["output_dir"] == ""  # default: <outputs>/quick/<notebook>


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_reproduce_config_matches_parameters(path):
    config = REPO / "configs" / "reproduce" / f"{path.stem}.yaml"
    values = yaml.safe_load(config.read_text())
    unknown = set(values) - set(_parameters(_read(path)))
    assert not unknown, f"{config.name} sets parameters the notebook does not have: {unknown}"
    assert values["profile"] == "full"
    assert "output_dir" not in values  # reproduce sets it per notebook
    if "folds" in values:
        assert values["folds"] == [0, 1, 2, 3]
    if "n_episodes" in values and path.stem != "00_walkthrough":
        assert values["n_episodes"] == 1000


# ----------------------------------------------------------------------------- papermill


def _execute(name: str, out_dir: Path, **params) -> None:
    import papermill as pm

    pm.execute_notebook(
        str(REPO / "notebooks" / f"{name}.ipynb"),
        str(out_dir / f"{name}.ipynb"),
        parameters={**params, "output_dir": str(out_dir)},
        cwd=str(out_dir),
        kernel_name="python3",
        progress_bar=False,
    )


def _check_summary(summary: pd.DataFrame, methods: list[str], shots: list[int]) -> None:
    assert {
        "method",
        "shots",
        "n_folds",
        "miou",
        "miou_low",
        "miou_high",
        "fbiou",
        "fbiou_low",
        "fbiou_high",
    } <= set(summary.columns)
    assert len(summary) == len(methods) * len(shots)
    assert not summary.duplicated(["method", "shots"]).any()
    assert set(summary["method"]) == set(methods) and set(summary["shots"]) == set(shots)
    for v in ("miou", "fbiou"):
        assert summary[v].between(0, 1).all()
        assert (summary[f"{v}_low"] <= summary[v] + 1e-9).all()
        assert (summary[v] <= summary[f"{v}_high"] + 1e-9).all()


@pytest.mark.notebooks
@pytest.mark.slow
def test_papermill_loss_ablations_records_csv(tmp_path):
    methods, shots, n = ["inductive", "ce", "repri"], [1], 24
    _execute("02_loss_ablations", tmp_path, methods=methods, shots=shots, n_episodes=n, n_boot=50)
    summary = pd.read_csv(tmp_path / "summary.csv")
    _check_summary(summary, methods, shots)
    episodes = pd.read_csv(tmp_path / "episodes.csv")
    assert len(episodes) == len(methods) * len(shots) * n
    diff = pd.read_csv(tmp_path / "difference_to_repri.csv")
    assert set(diff["method"]) == {"inductive", "ce"}
    traces = pd.read_csv(tmp_path / "traces.csv")
    assert set(traces["method"]) == {"ce", "repri"}  # inductive takes no step
    assert (tmp_path / "ablation_bars.png").stat().st_size > 0
    assert "| RePRI (paper text) |" in (tmp_path / "summary.md").read_text()


@pytest.mark.notebooks
@pytest.mark.slow
def test_papermill_shot_scaling_records_csv(tmp_path):
    methods, shots, n = ["inductive", "oracle_repri"], [1, 3], 20
    _execute("03_shot_scaling", tmp_path, methods=methods, shots=shots, n_episodes=n, n_boot=50)
    summary = pd.read_csv(tmp_path / "summary.csv")
    _check_summary(summary, methods, shots)
    per_fold = pd.read_csv(tmp_path / "per_fold.csv")
    assert set(per_fold["fold"]) == {0}
    assert (per_fold["n_episodes"] == n).all()
    assert "shots=3" in (tmp_path / "summary.md").read_text()


@pytest.mark.notebooks
@pytest.mark.slow
def test_papermill_domain_shift_runs_coco_to_pascal_when_given_data(tmp_path):
    """The COCO -> PASCAL branch, wired with stand-ins: the quick synthetic set (VOC layout,
    PASCAL-like ids 1..20) as the PASCAL root and the quick checkpoint as the COCO model."""
    prof = study.get_profile("quick")
    checkpoint = study.ensure_base_model(prof, 0, progress=False).resolve()
    methods, shots = ["inductive", "repri"], [1]
    _execute(
        "04_domain_shift",
        tmp_path,
        methods=methods,
        shots=shots,
        n_episodes=16,
        n_boot=50,
        pascal_root=str((REPO / prof.synth_root / "A").resolve()),
        coco_checkpoint=str(checkpoint),
        coco_folds=[1],
        coco_n_episodes=12,
        coco_size=prof.synth.size,
    )
    c2p = pd.read_csv(tmp_path / "coco_to_pascal_episodes.csv")
    assert len(c2p) == len(methods) * 12
    # COCO fold 1 trains on 60 classes; the PASCAL classes left are those absent by name
    assert set(c2p["class_id"]) <= set(splits.coco_to_pascal_classes(1))
    _check_summary(pd.read_csv(tmp_path / "coco_to_pascal_summary.csv"), methods, shots)
    drop = pd.read_csv(tmp_path / "drop.csv")
    assert set(drop["method"]) == set(methods) and "drop_points" in drop
    assert "COCO-20i -> PASCAL" in (tmp_path / "summary.md").read_text()
