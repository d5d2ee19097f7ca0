"""The numbered notebooks: structure rules, parameters, reproduce configs, papermill runs.

nbval runs every notebook as stored (`pytest --nbval-lax notebooks/`); the papermill tests
here inject non-default parameters and check the numbers the notebooks record as CSV, the
parameters they record as JSON, and the errors a bad parameter gives.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from fsstools import paths
from fsstools.data import splits
from fsstools.data.sbd import prepare_pascal
from fsstools.errors import ConfigError, MissingError
from fsstools.studies import meta_learning, parameters, profiles, recipes
from tests.fixtures import (
    make_voc_folder,
    write_authors_archive,
    write_base_checkpoint,
    write_pascal_sources,
)

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ALLOWED_IMPORTS = {"fsstools", "pandas", "matplotlib", "IPython"}
NOTEBOOK_LAYER = {"fsstools.studies.recipes", "fsstools.studies.meta_learning",
                  "fsstools.studies.generalized",
                  "fsstools.studies.report", "fsstools.studies.readings",
                  "fsstools.studies.fold_readings",
                  "fsstools.studies.widgets", "fsstools.evaluation.stats", "fsstools.plots"}
"""What notebooks import from fsstools: the recipes, statistics, reporting and readings,
plots, widgets."""
TEACHING_LAYER = {"00_walkthrough": {"fsstools.inference"}}
"""Notebooks that may also import the inference primitives (00 runs RePRI's loop by hand)."""
DATA_PARAMETERS = ("profile", "dataset", "data_root", "train_config")
"""The parameters of the notebooks that run on the embedded benchmark or real data."""
REAL_DATA_NOTEBOOKS = {"00_walkthrough", "01_base_training", "02_loss_ablations",
                       "03_shot_scaling", "05_proportion_prior"}


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _parameters_cells(nb: nbformat.NotebookNode) -> list:
    return [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]


def _parameters(nb: nbformat.NotebookNode) -> dict:
    (cell,) = _parameters_cells(nb)
    return {
        stmt.target.id: ast.literal_eval(stmt.value) for stmt in ast.parse(cell.source).body
    }


def test_nine_notebooks_are_there():
    stems = [p.stem[:2] for p in NOTEBOOKS]
    assert stems == ["00", "01", "02", "03", "04", "05", "06", "07", "08"]


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
                if isinstance(node, ast.ImportFrom) and node.module.startswith("fsstools"):
                    names = [f"{node.module}.{a.name}" for a in node.names]
                fs = {n for n in names if n.startswith("fsstools")}
                allowed = NOTEBOOK_LAYER | TEACHING_LAYER.get(path.stem, set())
                outside = {n for n in fs if not any(n == a or n.startswith(a + ".")
                                                    for a in allowed)}
                assert not outside, f"{path.name} imports {outside}"
        assert "sys.path" not in cell.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_holds_annotated_literals_with_help(path):
    nb = _read(path)
    (cell,) = _parameters_cells(nb)
    for stmt in ast.parse(cell.source).body:
        assert isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
        ast.literal_eval(stmt.value)  # raises on calls, names, arithmetic on names
        assert stmt.lineno == stmt.end_lineno, "one line per parameter: papermill reads lines"
    declared = parameters.parse_declarations(cell.source)
    for d in declared.values():
        assert parameters.fits(d.default, d.annotation), d
        assert d.help, f"{path.name}: {d.name} has no help comment"
    # what `papermill --help-notebook` shows: every parameter with its type and its help
    from papermill.translators import PythonTranslator

    shown = {p.name: p for p in PythonTranslator.inspect(cell)}
    assert list(shown) == list(declared)
    for name, p in shown.items():
        assert p.inferred_type_name == declared[name].annotation
        assert p.help == declared[name].help
    params = _parameters(nb)
    assert params["profile"] == "quick"
    assert params["output_dir"] == ""  # default: <outputs>/quick/<notebook>-<hash>
    if path.stem in REAL_DATA_NOTEBOOKS:
        assert all(n in params for n in DATA_PARAMETERS)
        assert params["dataset"] == "synth" and params["data_root"] == ""
    # the first code cell after the parameters checks them
    code = [c for c in nb.cells if c.cell_type == "code"]
    first = ast.parse(code[2].source).body[0]
    assert "recipes.start" in ast.unparse(first) and path.stem in ast.unparse(first)


def test_help_notebook_lists_types_and_help():
    out = subprocess.run(
        [sys.executable, "-m", "papermill", "--help-notebook",
         str(REPO / "notebooks" / "03_shot_scaling.ipynb")],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "Unknown type" not in out
    for line in ("shots: list[int] (default [1, 5, 10])", "n_episodes: int (default 200)",
                 "shot counts to evaluate", "dataset: str"):
        assert line in out, out


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


def _execute(name: str, out_dir: Path, output_dir: str | None = None, **params
             ) -> nbformat.NotebookNode:
    """Run a notebook with papermill in ``out_dir`` (its working folder); results go to
    ``output_dir`` (default ``out_dir``; "" for the notebook's own default)."""
    import papermill as pm

    return pm.execute_notebook(
        str(REPO / "notebooks" / f"{name}.ipynb"),
        str(out_dir / f"{name}.ipynb"),
        parameters={**params, "output_dir": str(out_dir) if output_dir is None else output_dir},
        cwd=str(out_dir),
        kernel_name="python3",
        progress_bar=False,
    )


def _stray_values(nb: nbformat.NotebookNode) -> list[str]:
    """Values a cell shows because its last line returns one (e.g. a PosixPath)."""
    return [o["data"]["text/plain"] for c in nb.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if o.get("output_type") == "execute_result"]


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
    nb = _execute("02_loss_ablations", tmp_path, methods=methods, shots=shots, n_episodes=n,
                  n_boot=50)
    assert _stray_values(nb) == []
    recorded = json.loads((tmp_path / parameters.RECORD_NAME).read_text())
    assert recorded["parameters"]["methods"] == methods
    assert sorted(recorded["injected"]) == sorted(
        ["methods", "shots", "n_episodes", "n_boot", "output_dir"])
    summary = pd.read_csv(tmp_path / "summary.csv")
    _check_summary(summary, methods, shots)
    episodes = pd.read_csv(tmp_path / "episodes.csv")
    assert len(episodes) == len(methods) * len(shots) * n
    diff = pd.read_csv(tmp_path / "difference_to_repri.csv")
    assert set(diff["method"]) == {"inductive", "ce"}
    traces = pd.read_csv(tmp_path / "traces.csv")
    assert set(traces["method"]) == {"ce", "repri"}  # inductive takes no step
    assert (tmp_path / "ablation_bars.png").stat().st_size > 0
    text = (tmp_path / "summary.md").read_text()
    assert "| RePRI (paper text) |" in text
    _check_per_fold(tmp_path, methods, shots, n, diff, text)


def _check_per_fold(out: Path, methods: list[str], shots: list[int], n: int,
                    diff: pd.DataFrame, summary_text: str) -> None:
    """The per-fold CSVs (one fold here: each equals its fold mean) and their tables in the
    summary fragment."""
    per_fold = pd.read_csv(out / "per_fold.csv")
    assert len(per_fold) == len(methods) * len(shots) and set(per_fold["fold"]) == {0}
    assert (per_fold["n_episodes"] == n).all()
    summary = pd.read_csv(out / "summary.csv").set_index(["method", "shots"])
    assert per_fold.set_index(["method", "shots"])["miou"].to_dict() == pytest.approx(
        summary["miou"].to_dict())
    fold_diff = pd.read_csv(out / "difference_to_repri_per_fold.csv")
    assert set(fold_diff["fold"]) == {0} and set(fold_diff["method"]) == set(diff["method"])
    assert fold_diff.set_index(["method", "shots"])["miou"].to_dict() == pytest.approx(
        diff.set_index(["method", "shots"])["miou"].to_dict())
    assert "### Per fold" in summary_text
    assert "| method | fold 0 | mean over folds |" in summary_text


@pytest.mark.notebooks
@pytest.mark.slow
def test_papermill_shot_scaling_records_csv(tmp_path):
    methods, shots, n = ["inductive", "oracle_repri"], [1, 3], 20
    _execute("03_shot_scaling", tmp_path, methods=methods, shots=shots, n_episodes=n, n_boot=50)
    summary = pd.read_csv(tmp_path / "summary.csv")
    _check_summary(summary, methods, shots)
    text = (tmp_path / "summary.md").read_text()
    assert "shots=3" in text
    diff = pd.read_csv(tmp_path / "difference_to_repri.csv")
    assert set(diff["method"]) == {"inductive"}  # against the last method, without RePRI
    _check_per_fold(tmp_path, methods, shots, n, diff, text)
    assert "mIoU (%) per fold, 3 shots:" in text


@pytest.mark.notebooks
@pytest.mark.slow
def test_papermill_domain_shift_runs_coco_to_pascal_when_given_data(tmp_path):
    """The COCO -> PASCAL branch, wired with stand-ins: the test profile's synthetic set (VOC
    layout, PASCAL-like ids 1..20) as the PASCAL root and its checkpoint as the COCO model."""
    prof = recipes.get_profile("tiny")
    checkpoint = recipes.ensure_base_model(prof, 0, progress=False).resolve()
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
    per_fold = pd.read_csv(tmp_path / "per_fold.csv")
    assert len(per_fold) == 2 * len(methods) and set(per_fold["domain"]) == {"A -> A", "A -> B"}
    fold_diff = pd.read_csv(tmp_path / "difference_to_repri_per_fold.csv")
    assert set(fold_diff["method"]) == {"inductive"} and set(fold_diff["fold"]) == {0}
    assert "Difference to RePRI per fold, mIoU points (paired 95% interval), A -> B, 1 shot:" \
        in (tmp_path / "summary.md").read_text()
    assert "COCO-20i -> PASCAL" in (tmp_path / "summary.md").read_text()


@pytest.mark.notebooks
@pytest.mark.slow
def test_papermill_meta_learning_records_csv(tmp_path):
    """06 with other shots and episode counts: every arm scored on the same episodes, the
    peers without a prior, the 2x2, the paired contrasts and the closing notes recorded
    (on the test profile: the tiny peers are trained once and cached, shared with nbval's
    run of 06)."""
    shots, n = [1, 3], 16
    nb = _execute("06_meta_learning", tmp_path, shots=shots, n_episodes=n, n_boot=50)
    assert _stray_values(nb) == []
    recorded = json.loads((tmp_path / parameters.RECORD_NAME).read_text())
    assert recorded["parameters"]["shots"] == shots and "shots" in recorded["injected"]
    arms = [a.label for a in meta_learning.ARMS]
    _check_summary(pd.read_csv(tmp_path / "summary.csv"), arms, shots)
    episodes = pd.read_csv(tmp_path / "episodes.csv")
    assert len(episodes) == len(arms) * len(shots) * n
    assert set(episodes["training"]) == set(meta_learning.TRAININGS)
    tasks = episodes.sort_values(["shots", "episode"]).groupby("method")["class_id"].apply(tuple)
    assert tasks.nunique() == 1  # the very same tasks for every arm
    peers = episodes["peer_method"].isin(["panet", "pfenet"])
    assert episodes.loc[peers, "pi"].isna().all() and episodes.loc[~peers, "pi"].notna().all()
    diffs = pd.read_csv(tmp_path / "differences.csv")
    assert len(diffs) == len(meta_learning.CONTRASTS) * len(shots)
    assert (diffs["miou_low"] <= diffs["miou"] + 1e-9).all()
    grid = pd.read_csv(tmp_path / "two_by_two.csv")
    assert list(grid["training"]) == ["ce", "episodic-panet"]
    assert list(grid.columns[1:]) == ["1-shot two prototypes", "1-shot repri",
                                      "3-shot two prototypes", "3-shot repri"]
    models = pd.read_csv(tmp_path / "models.csv")
    assert set(models["training"]) == set(meta_learning.TRAININGS)
    text = (tmp_path / "summary.md").read_text()
    assert "## 06 Meta-learning" in text and "3-shot, RePRI against PFENet-style" in text
    assert "3-shot scores come from their 1-shot models" in text
    assert (tmp_path / "shot_curves.png").stat().st_size > 0


@pytest.mark.notebooks
@pytest.mark.slow
def test_papermill_generalized_fss_records_csv(tmp_path):
    """08 with other shots, runs and methods: every method on the same support sets and
    queries, the four scores with intervals over runs, the contrasts and the figures."""
    shots, n_runs, n_queries = [1, 2], 2, 20
    methods, priors = ["gfss_prototypes", "diam"], ["self", "upperbound"]
    nb = _execute("08_generalized_fss", tmp_path, shots=shots, n_runs=n_runs,
                  n_queries=n_queries, methods=methods, pi_strategies=priors, n_boot=50)
    assert _stray_values(nb) == []
    recorded = json.loads((tmp_path / parameters.RECORD_NAME).read_text())
    assert recorded["parameters"]["pi_strategies"] == priors
    labels = ["base_model", "gfss_prototypes", "diam", "diam pi=upperbound"]
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert sorted(summary["method"].unique()) == sorted(labels)
    assert len(summary) == len(labels) * len(shots) and (summary["n_runs"] == n_runs).all()
    for v in ("base", "novel", "mean", "hmean"):
        assert summary[v].between(0, 1).all()
        assert (summary[f"{v}_low"] <= summary[v] + 1e-9).all()
        assert (summary[v] <= summary[f"{v}_high"] + 1e-9).all()
    assert (summary["hmean"] <= summary["mean"] + 1e-9).all()
    assert (summary.loc[summary["method"] == "base_model", "novel"] == 0).all()
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert len(runs) == len(labels) * len(shots) * n_runs
    classes = pd.read_csv(tmp_path / "classes_per_run.csv")
    queries = classes.groupby(["method", "shots", "run"])["target"].sum().unstack("method")
    assert (queries.nunique(axis=1) == 1).all()  # the same queries for every method
    contrasts = pd.read_csv(tmp_path / "contrasts.csv")
    pairs = set(zip(contrasts["first"], contrasts["second"], strict=True))
    assert pairs == {("diam", "gfss_prototypes"), ("gfss_prototypes", "base_model"),
                     ("diam", "base_model"), ("diam pi=upperbound", "diam")}
    text = (tmp_path / "summary.md").read_text()
    assert "## 08 Generalized few-shot segmentation" in text and "**Forgetting** at 2 shots" in text
    for figure in ("tradeoff", "query_classes"):
        assert (tmp_path / f"{figure}.png").stat().st_size > 0


# ----------------------------------------------------------------------------- parameters


DECLARED = '''shots: list[int] = [1, 5]  # shot counts to evaluate
n_episodes: int = 200  # tasks per shot count
lr: float = 0.5  # a step size
data_root: str = ""  # where the data is
output_dir: str = ""  # results folder
'''


def _namespace(injected: str = "", **values) -> dict:
    history = ["", "import pandas", DECLARED]
    if injected:
        history.append(f"# Parameters\n{injected}")
    history.append('prof, out = recipes.start("demo", globals())')
    ns = {"shots": [1, 5], "n_episodes": 200, "lr": 0.5, "data_root": "", "output_dir": ""}
    return {**ns, **values, "In": history}


def test_check_accepts_declared_values_and_hashes_them():
    params = parameters.check("demo", _namespace("n_episodes = 20\nlr = 1", n_episodes=20, lr=1))
    assert params["n_episodes"] == 20 and params["lr"] == 1  # an int fits a float
    assert params.injected == ("n_episodes", "lr")
    assert params.declared["shots"].help == "shot counts to evaluate"
    other = parameters.check("demo", _namespace(n_episodes=21))
    assert len(params.key) == parameters.HASH_LENGTH and params.key != other.key
    moved = parameters.check("demo", _namespace(n_episodes=20, lr=1, output_dir="/elsewhere"))
    assert moved.key == params.key  # where results go is not what they are


@pytest.mark.parametrize("name, value, expected", [
    ("shots", 5, "expected list[int] (shot counts to evaluate), got 5 (int); pass a list"),
    ("shots", [1, "5"], "expected list[int]"),
    ("n_episodes", 20.5, "expected int (tasks per shot count), got 20.5 (float)"),
    ("n_episodes", True, "expected int"),
    ("data_root", 3, "expected str"),
])
def test_check_names_the_parameter_and_its_type(name, value, expected):
    with pytest.raises(ConfigError, match=r"parameter " + name) as err:
        parameters.check("demo", _namespace(f"{name} = {value!r}", **{name: value}))
    assert expected in str(err.value)


def test_check_rejects_unknown_parameters():
    with pytest.raises(ConfigError, match="has no parameter shot") as err:
        parameters.check("demo", _namespace("shot = [5]", shot=[5]))
    assert "shots" in str(err.value)  # lists what the notebook takes


def test_check_without_history_reads_the_notebook_file():
    ns = {k: v for k, v in _parameters(_read(REPO / "notebooks" / "03_shot_scaling.ipynb")).items()}
    params = parameters.check("03_shot_scaling", ns)
    assert params["shots"] == [1, 5, 10] and params.injected == ()
    with pytest.raises(ConfigError, match="parameter folds"):
        parameters.check("03_shot_scaling", {**ns, "folds": 0})


def test_recorded_parameters_resolve_paths_against_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = parameters.check("demo", _namespace("data_root = 'voc'", data_root="voc"))
    path = params.record(tmp_path / "out")
    recorded = json.loads(path.read_text())
    assert recorded["parameters"]["data_root"] == str(tmp_path / "voc")
    assert recorded["parameters"]["output_dir"] == ""  # empty stays empty
    assert recorded["declared"]["lr"] == {"type": "float", "default": 0.5, "help": "a step size"}


def test_start_makes_a_hashed_default_folder_and_checks_values(outputs, monkeypatch):
    monkeypatch.delenv(profiles.PROFILE_ENV)
    ns = _parameters(_read(REPO / "notebooks" / "03_shot_scaling.ipynb"))
    _, out = recipes.start("03_shot_scaling", ns)
    key = parameters.check("03_shot_scaling", ns).key
    assert out == outputs / "quick" / f"03_shot_scaling-{key}"
    assert json.loads((out / "parameters.json").read_text())["key"] == key
    with pytest.raises(ConfigError, match="parameter folds: fold 7"):
        recipes.start("03_shot_scaling", {**ns, "folds": [7]})
    with pytest.raises(ConfigError, match="parameter methods: unknown method 'repi'"):
        recipes.start("03_shot_scaling", {**ns, "methods": ["repi"]})
    with pytest.raises(ConfigError, match="parameter data_root: dataset pascal needs"):
        recipes.start("03_shot_scaling", {**ns, "dataset": "pascal"})
    with pytest.raises(MissingError, match="parameter data_root: .*nowhere"):
        recipes.start("03_shot_scaling", {**ns, "dataset": "pascal", "data_root": "/nowhere"})
    with pytest.raises(ConfigError, match="parameter dataset: 'voc'"):
        recipes.start("03_shot_scaling", {**ns, "dataset": "voc", "data_root": "/x"})


def test_start_checks_the_generalized_notebooks_methods_and_priors(outputs, monkeypatch):
    monkeypatch.delenv(profiles.PROFILE_ENV)
    ns = _parameters(_read(REPO / "notebooks" / "08_generalized_fss.ipynb"))
    prof, _ = recipes.start("08_generalized_fss", ns)  # GFSS methods are its methods
    assert prof.name == "quick"
    with pytest.raises(ConfigError, match="parameter methods: unknown generalized method 'repri'"):
        recipes.start("08_generalized_fss", {**ns, "methods": ["repri"]})
    with pytest.raises(ConfigError, match="parameter pi_strategies: 'oracle' is not a prior"):
        recipes.start("08_generalized_fss", {**ns, "pi_strategies": ["self", "oracle"]})
    with pytest.raises(ConfigError, match="parameter n_queries must be >= 0, got -1"):
        recipes.start("08_generalized_fss", {**ns, "n_queries": -1})
    with pytest.raises(ConfigError, match="parameter n_runs must be >= 1, got 0"):
        recipes.start("08_generalized_fss", {**ns, "n_runs": 0})


def test_the_environment_picks_the_profile_unless_one_is_injected(outputs, monkeypatch,
                                                                   capsys):
    nb = _read(REPO / "notebooks" / "03_shot_scaling.ipynb")
    ns = _parameters(nb)
    monkeypatch.setenv(profiles.PROFILE_ENV, "tiny")
    prof, out = recipes.start("03_shot_scaling", ns)
    assert prof.name == "tiny" and out.parent == outputs / "tiny"
    assert "profile tiny from FSSTOOLS_PROFILE" in capsys.readouterr().out
    recorded = json.loads((out / "parameters.json").read_text())
    assert recorded["parameters"]["profile"] == "tiny"
    (declared,) = _parameters_cells(nb)
    injected = {**ns, "profile": "full",
                "In": ["", declared.source, "# Parameters\nprofile = 'full'\n"]}
    prof, _ = recipes.start("03_shot_scaling", injected)
    assert prof.name == "full"  # a caller's choice wins
    monkeypatch.setenv(profiles.PROFILE_ENV, "huge")
    with pytest.raises(ConfigError, match="FSSTOOLS_PROFILE='huge' is not a profile"):
        recipes.start("03_shot_scaling", ns)


# ----------------------------------------------------------------------------- papermill: errors, sweeps, real data


@pytest.mark.notebooks
@pytest.mark.slow
def test_papermill_wrong_type_or_unknown_parameter_fails_naming_it(tmp_path):
    from papermill.exceptions import PapermillExecutionError

    with pytest.raises(PapermillExecutionError) as err:
        _execute("03_shot_scaling", tmp_path, shots=5)
    assert err.value.ename == "ConfigError"
    assert "parameter shots of notebook 03_shot_scaling: expected list[int]" in err.value.evalue
    with pytest.raises(PapermillExecutionError) as err:
        _execute("03_shot_scaling", tmp_path, n_shots=[5])
    assert "has no parameter n_shots" in err.value.evalue


@pytest.mark.notebooks
@pytest.mark.slow
def test_papermill_sweep_writes_one_folder_per_setting(tmp_path):
    """Two runs that differ in shots and set no output_dir: two folders, each with its
    parameters, under <outputs>/tiny/03_shot_scaling-<hash> (the test profile)."""
    folders = []
    for k in (1, 2):
        run = tmp_path / f"shots{k}"
        run.mkdir()
        nb = _execute("03_shot_scaling", run, output_dir="", shots=[k], methods=["inductive"],
                      n_episodes=10, n_boot=20)
        assert _stray_values(nb) == []
        key = parameters.check("03_shot_scaling", {
            **_parameters(_read(REPO / "notebooks" / "03_shot_scaling.ipynb")), "profile": "tiny",
            "shots": [k], "methods": ["inductive"], "n_episodes": 10, "n_boot": 20}).key
        folder = paths.outputs_dir() / "tiny" / f"03_shot_scaling-{key}"
        recorded = json.loads((folder / parameters.RECORD_NAME).read_text())
        assert recorded["parameters"]["shots"] == [k]
        assert set(pd.read_csv(folder / "summary.csv")["shots"]) == {k}
        folders.append(folder)
    assert folders[0] != folders[1]


TINY_PASCAL_CONFIG = """\
# a tiny PSPNet on the tiny PASCAL-layout folder of the test: seconds on a CPU
data:
  dataset: pascal
  train_list: lists/train.txt
  val_list: lists/val.txt
  crop_size: 32
  val_size: 32
  scale: [1.0, 1.0]
  rotation: 0.0
model:
  arch: small
  pretrained: null
  widths: [4, 8, 8, 8]
  stem_width: 4
  bottleneck_dim: 8
  bins: [1, 2]
optim:
  lr: 0.05
  batch_size: 4
run:
  name: tiny-pascal
  epochs: 1
  workers: 0
  threads: 1
  amp: fp32
  progress: false
  val_batch_size: 8
"""


@pytest.mark.notebooks
@pytest.mark.slow
def test_papermill_loss_ablations_on_pascal_layout_data(tmp_path, outputs):
    """02 on real-data parameters: a tiny PASCAL-layout folder (SegmentationClassAug and
    reference list files) and a tiny training config, all given relative to the folder
    papermill runs in."""
    root = make_voc_folder(tmp_path / "voc", list_name="train", mask_dir="SegmentationClassAug")
    (root / "lists" / "val.txt").write_text((root / "lists" / "train.txt").read_text())
    (tmp_path / "tiny.yaml").write_text(TINY_PASCAL_CONFIG)
    methods, n = ["inductive", "ce", "repri"], 6
    nb = _execute("02_loss_ablations", tmp_path, output_dir="results", dataset="pascal",
                  data_root="voc", train_config="tiny.yaml", methods=methods, shots=[1],
                  n_episodes=n, n_boot=20)
    assert _stray_values(nb) == []
    out = tmp_path / "results"
    episodes = pd.read_csv(out / "episodes.csv")
    assert len(episodes) == len(methods) * n
    assert set(episodes["class_id"]) <= set(splits.test_classes("pascal", 0))
    _check_summary(pd.read_csv(out / "summary.csv"), methods, [1])
    recorded = json.loads((out / parameters.RECORD_NAME).read_text())["parameters"]
    assert recorded["data_root"] == str(root) and recorded["dataset"] == "pascal"
    assert recorded["train_config"] == str(tmp_path / "tiny.yaml")
    # trained from tiny.yaml, its run named per fold (one config file serves every fold)
    assert list((outputs / "runs").glob("pascal-fold0-*/done"))
    # a missing root is named by its parameter
    from papermill.exceptions import PapermillExecutionError

    with pytest.raises(PapermillExecutionError) as err:
        _execute("02_loss_ablations", tmp_path, dataset="pascal", data_root="no_such_root",
                 train_config="tiny.yaml")
    assert err.value.ename == "MissingError"
    assert "parameter data_root" in err.value.evalue and "no_such_root" in err.value.evalue


AUTHORS_PASCAL_CONFIG = """\
# the PASCAL recipe's data at the tiny test size; ResNet-50, the trunk of the authors' models
data:
  dataset: pascal
  val_size: 48
model:
  arch: resnet50
  pretrained: null
"""


@pytest.fixture(scope="module")
def authors_world(tmp_path_factory) -> Path:
    """A PASCAL root made by prepare-pascal (the test's lists installed as the paper's), the
    authors' archive with their PASCAL models of every fold and their COCO model of fold 1,
    a training config naming their trunk, and a random tiny base model of the embedded
    benchmark's fold 0 (``synth0.pt``, for 04's synthetic part). Nothing here is trained."""
    tmp = tmp_path_factory.mktemp("authors")
    voc, sbd, lists = write_pascal_sources(tmp / "sources")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(paths, "lists_dir", lambda: lists)
        prepare_pascal(voc, sbd, tmp / "pascal", progress=False)
    write_authors_archive(tmp / "repri")
    write_authors_archive(tmp / "repri", "coco", folds=range(1, 2))
    (tmp / "authors.yaml").write_text(AUTHORS_PASCAL_CONFIG)
    write_base_checkpoint(tmp / "synth0.pt", 0)
    return tmp


def _on_the_authors_models(name: str, world: str) -> dict:
    """The real-data parameters of ``name``: the prepared PASCAL root and the authors' archive
    (04: their COCO models, tested on PASCAL; the synthetic part on a given model)."""
    if name == "04_domain_shift":
        return {"checkpoints": f"{world}/synth{{fold}}.pt", "pascal_root": f"{world}/pascal",
                "coco_checkpoint": f"{world}/repri"}
    return {"dataset": "pascal", "data_root": f"{world}/pascal",
            "train_config": f"{world}/authors.yaml", "checkpoints": f"{world}/repri"}


AUTHORS_RUNS = {
    "00_walkthrough": {"fold": 1, "shots": [1], "n_episodes": 2, "show_iterations": [0, 50]},
    "01_base_training": {"folds": [0, 1], "n_pca_images": 2},
    "02_loss_ablations": {"shots": [1], "methods": ["inductive", "repri"], "n_episodes": 3,
                          "n_boot": 20},
    "03_shot_scaling": {"folds": [0, 2], "base_seeds": [0, 1], "shots": [1],
                        "methods": ["repri", "oracle_repri"], "n_episodes": 3, "n_boot": 20},
    "04_domain_shift": {"shots": [1], "methods": ["inductive", "repri"], "n_episodes": 3,
                        "n_boot": 20, "coco_folds": [1], "coco_n_episodes": 3,
                        "coco_size": 48},
    "05_proportion_prior": {"shots": [1], "deltas": [0.0, 0.3], "t_pi_values": [[], [10]],
                            "n_episodes": 3, "n_boot": 20},
}
"""Tiny runs of the studies on the authors' models: few folds, tasks and resamples."""


@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(AUTHORS_RUNS))
def test_papermill_on_the_authors_checkpoints_trains_nothing(name, authors_world, tmp_path,
                                                             outputs, monkeypatch):
    """Every study on a PASCAL root made by prepare-pascal with the authors' archive as
    ``checkpoints`` (04: COCO -> PASCAL with their COCO models as ``coco_checkpoint``, the
    synthetic part on a given tiny model), the paths given relative to the folder papermill
    runs in: each fold scored with its own file, results written, no base model trained."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel's torch: tiny tensors, one thread
    world = os.path.relpath(authors_world, tmp_path)
    params = {**AUTHORS_RUNS[name], **_on_the_authors_models(name, world)}
    nb = _execute(name, tmp_path, output_dir="results", **params)
    assert _stray_values(nb) == []
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "(nothing is trained)" in printed
    out = tmp_path / "results"
    recorded = json.loads((out / parameters.RECORD_NAME).read_text())["parameters"]
    resolved = _on_the_authors_models(name, str(authors_world))  # where papermill ran
    assert {k: recorded[k] for k in resolved} == resolved
    assert (out / "summary.md").stat().st_size > 0
    assert not (outputs / "runs").exists()  # nothing was trained
    AUTHORS_CHECKS[name](out, params, printed)


def _check_walkthrough(out: Path, params: dict, printed: str) -> None:
    walk = pd.read_csv(out / "walkthrough.csv")
    class_id = int(walk["class"].item().split()[0])
    assert class_id in splits.test_classes("pascal", params["fold"])
    gap = pd.read_csv(out / "checks.csv")["loop_vs_library_max_abs_diff"].item()
    assert gap < 1e-4  # the hand-written loop matches the library on the authors' features


def _check_base_models(out: Path, params: dict, printed: str) -> None:
    models = pd.read_csv(out / "base_models.csv")
    assert list(models["fold"]) == params["folds"]
    assert (models["selected_epoch"] == 99).all()  # what the authors' files record
    assert models["val_miou_base_classes"].between(0, 1).all()
    assert models["epochs"].isna().all()  # no training run behind them
    assert pd.read_csv(out / "training_history.csv").empty
    assert "no training curves: the base models are given checkpoints" in printed
    scores = pd.read_csv(out / "base_class_iou.csv")
    for fold in params["folds"]:
        classes = scores[scores["fold"] == fold]["class_id"]
        assert list(classes) == [0, *splits.base_classes("pascal", fold)]  # background first


def _check_scored(out: Path, params: dict, printed: str) -> None:
    folds = params.get("folds", [0])
    episodes = pd.read_csv(out / "episodes.csv")
    assert len(episodes) == len(params["methods"]) * len(folds) * params["n_episodes"]
    assert set(episodes["base_seed"]) == {0}
    for fold in folds:
        tested = set(episodes[episodes["fold"] == fold]["class_id"])
        assert tested <= set(splits.test_classes("pascal", fold))
    _check_summary(pd.read_csv(out / "summary.csv"), params["methods"], params["shots"])


def _check_shot_scaling(out: Path, params: dict, printed: str) -> None:
    _check_scored(out, params, printed)  # one base seed, not two
    assert "base models given for fold(s) 0, 2 (nothing is trained); base seeds [0, 1] " \
           "collapse to one model per fold" in printed


def _check_domain_shift(out: Path, params: dict, printed: str) -> None:
    c2p = pd.read_csv(out / "coco_to_pascal_episodes.csv")
    assert len(c2p) == len(params["methods"]) * params["coco_n_episodes"]
    assert set(c2p["class_id"]) <= set(splits.coco_to_pascal_classes(1))
    _check_summary(pd.read_csv(out / "coco_to_pascal_summary.csv"), params["methods"],
                   params["shots"])
    assert "COCO-20i -> PASCAL" in (out / "summary.md").read_text()
    assert "COCO base models given for fold(s) 1 (nothing is trained)" in printed


def _check_prior(out: Path, params: dict, printed: str) -> None:
    errors = pd.read_csv(out / "prior_errors.csv")
    per_stage = errors.groupby("stage").size()  # RePRI's initial and final prior, per task
    assert len(per_stage) == 2 and (per_stage == params["n_episodes"]).all()
    assert set(pd.read_csv(out / "t_pi_ablation.csv")["t_pi"].astype(str)) == {"none", "10"}
    deltas = pd.read_csv(out / "delta_sensitivity.csv")
    assert set(deltas["prior_delta"]) == set(params["deltas"])


AUTHORS_CHECKS = {
    "00_walkthrough": _check_walkthrough,
    "01_base_training": _check_base_models,
    "02_loss_ablations": _check_scored,
    "03_shot_scaling": _check_shot_scaling,
    "04_domain_shift": _check_domain_shift,
    "05_proportion_prior": _check_prior,
}


# ----------------------------------------------------------------------------- reproduce


def _tiny_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# tiny"),
        nbformat.v4.new_code_cell('epochs: int = 2  # epochs to print\n'
                                  'output_dir: str = ""  # results folder',
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import time\nfor e in range(1, epochs + 1):\n"
                                  "    print(f'epoch {e}/{epochs} loss 0.5', flush=True)\n"
                                  "    time.sleep(0.2)"),
        nbformat.v4.new_code_cell("open(output_dir + '/fig.png', 'wb').write(b'png')\n"
                                  "open(output_dir + '/summary.md', 'w').write('## tiny\\n')"),
    ]
    nbformat.write(nb, path)
    return path


@pytest.mark.slow
def test_reproduce_streams_cells_and_output_over_ipc(tmp_path, capfd):
    import io

    from fsstools.jobs import reproduce
    book = _tiny_notebook(tmp_path / "07_tiny.ipynb")
    stream = io.StringIO()
    run = reproduce.run_notebook(book, tmp_path / "out", {"epochs": 3, "shots": [1]},
                                 stream=stream)
    assert run.error is None, run.error
    lines = stream.getvalue().splitlines()
    assert "[07_tiny] cell 3/5: (parameters injected by papermill)" in lines
    assert "[07_tiny] cell 4/5: import time" in lines
    assert [ln.strip() for ln in lines if "epoch " in ln] == [
        f"epoch {e}/3 loss 0.5" for e in (1, 2, 3)]
    assert "without encryption" not in capfd.readouterr().err  # IPC, not TCP
    summary = reproduce.write_summary([run], tmp_path / "out").read_text()
    assert "## tiny" in summary
    assert "![07_tiny: fig](07_tiny/fig.png)" in summary
