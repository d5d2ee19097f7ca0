"""Sweeps on submitit: grids checked before any job, points run by submitit's local, debug
and SLURM executors, reruns that reuse finished points, failures reported with their log,
and one gathered table.

The notebook sweeps run a quick notebook written here (two knobs, one CSV, a point that
fails on purpose) through papermill; the evaluation sweep runs the tiny embedded benchmark
with a tiny base model, which its two concurrent points need and train once.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from fsstools import cli, paths
from fsstools.data.synth.benchmark import SynthConfig, ensure_synth
from fsstools.errors import ConfigError
from fsstools.jobs import gather, sweep, sweep_plan

pytestmark = pytest.mark.filterwarnings("ignore:.*too few for 10-shot")

KNOBS = """a: int = 1  # first knob
b: list[int] = [1]  # second knob
output_dir: str = ""  # results folder"""
WORK = """assert a != 99, "a=99 fails on purpose"
out = Path(output_dir or ".")
rows = [f"m{j},{k},{a * k / 10},{a * k / 10 - 0.05},{a * k / 10 + 0.05}" for j in (1, 2) for k in b]
(out / "summary.csv").write_text("method,shots,miou,miou_low,miou_high\\n" + "\\n".join(rows))
print(f"a={a}: {len(rows)} rows")"""
TRAIN_YAML = """\
data: {{dataset: synth, root: {root}, crop_size: 32, val_size: 32}}
model: {{arch: small, widths: [4, 8, 8, 8], stem_width: 4, bottleneck_dim: 8, bins: [1, 2]}}
optim: {{batch_size: 4}}
run: {{name: tiny-sweep, workers: 0, threads: 1, amp: fp32, epochs: 1, val_batch_size: 16}}
"""
EVAL_YAML = """\
root: {root}
size: 32
n_episodes: 8
methods: [ce]
n_boot: 10
skip_small: true
train_config: {train}
"""


@pytest.fixture(scope="module")
def quick_notebook(tmp_path_factory) -> Path:
    """A notebook that runs in a second: parameters a (int) and b (list[int]), writes
    summary.csv with a miou per method and shot, and fails when a is 99."""
    cells = [new_markdown_cell("# Quick\n\nTwo knobs, one table."),
             new_code_cell("from pathlib import Path"), new_code_cell(KNOBS), new_code_cell(WORK)]
    cells[2].metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=cells, metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}})
    path = tmp_path_factory.mktemp("nb") / "quick.ipynb"
    nbformat.write(nb, path)
    return path


def _sweep(*argv: str) -> int:
    return cli.main(["sweep", *argv])


def _jobs(folder: Path) -> set[str]:
    return {p.name for p in (folder / sweep.JOBS_DIR).glob("*_submitted.pkl")}


# ----------------------------------------------------------------------------- the grid


def test_grid_words_join_and_points_are_named_by_their_values():
    grid = sweep_plan.parse_grid(["fold=[0,", "1]", "shots=[[1],[5,", "10]]", "tag=[a/b]"])
    assert grid == {"fold": [0, 1], "shots": [[1], [5, 10]], "tag": ["a/b"]}
    names = [p.name for p in sweep_plan.expand(grid, Path("/s"))]
    assert names == ["fold-0_shots-1_tag-ab", "fold-0_shots-5+10_tag-ab",
                     "fold-1_shots-1_tag-ab", "fold-1_shots-5+10_tag-ab"]
    clash = sweep_plan.expand({"tag": ["a/b", "ab"]}, Path("/s"))
    assert len({p.name for p in clash}) == 2 and all(p.name.startswith("tag-ab-") for p in clash)


@pytest.mark.parametrize(("words", "message"), [
    (["fold=1"], "the values must be a YAML list"),
    (["fold=[]"], "the values must be a YAML list"),
    (["fold=[0]", "fold=[1]"], "--grid fold is given twice"),
    (["fold=[0, 0]"], "repeats a value"),
    (["fold=[0]", "nb.ipynb"], "'nb.ipynb' is not key=[v1, v2]; a notebook goes before"),
    ([], "nothing to sweep"),
])
def test_a_malformed_grid_is_refused(words, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        sweep_plan.parse_grid(words)


@pytest.mark.parametrize(("argv", "words"), [
    (["--grid", "c=[1, 2]"], ["--grid c", "no parameter 'c'", "a, b"]),
    (["--grid", "aa=[1]"], ["did you mean 'a'"]),
    (["--grid", "b=[1, 2]"], ["--grid b: 1 is not list[int] (second knob)", "b=[[1],[5]]"]),
    (["--grid", "a=[1, x]"], ['"x" is not int (first knob)']),
    (["--grid", "a=[1]", "--set", "a=2"], ["given by both --set and --grid"]),
    (["--grid", "output_dir=[x]"], ["each point writes into its own folder"]),
    (["--grid", "a=[1]", "--executor", "slurm"], ["srun is not on this machine"]),
])
def test_a_bad_grid_exits_2_before_any_job(quick_notebook, outputs, capsys, argv, words):
    assert _sweep(str(quick_notebook), *argv, "--name", "bad") == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err
    for word in words:
        assert word in err, (word, err)
    assert not outputs.exists()  # no folder, no job, nothing to clean


EVAL = paths.configs_dir() / "synth" / "eval.yaml"


def test_a_bad_evaluation_value_exits_2_naming_the_point(outputs, capsys):
    assert _sweep("--eval", str(EVAL), "--grid", "fold=[0, 7]") == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "point fold=7: fold 7 does not exist" in err and "(from --grid fold=7)" in err
    # folds need their own base models: a fixed fold-0 training config is refused, with the way
    assert _sweep("--eval", str(EVAL), "--grid", "fold=[0, 1]") == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "point fold=1: synth fold 1 is evaluated but train_config" in err
    assert "--set train_config=configs/synth/fold{fold}.yaml" in err
    assert not outputs.exists()


def test_a_fixed_value_names_a_grid_key_in_braces_to_follow_it(tmp_path):
    target = sweep_plan.make_target(None, EVAL, ["train_config=configs/synth/fold{fold}.yaml",
                                                 "train_overrides=['run.name=f{fold}-{shots}']"])
    points = sweep_plan.plan(target, {"fold": [0, 3], "shots": [[1]]}, tmp_path)
    assert points[1].parameters(target) == {
        "train_config": "configs/synth/fold3.yaml", "train_overrides": ["run.name=f3-{shots}"],
        "fold": 3, "shots": [1]}  # a list value is not written into text
    assert sweep_plan.point_eval_config(target, points[1]).train_config == "configs/synth/fold3.yaml"


# ----------------------------------------------------------------------------- notebooks


@pytest.mark.slow
@pytest.mark.notebooks
def test_a_2x2_local_sweep_gathers_one_table_and_a_rerun_reuses_it(
        quick_notebook, outputs, capsys):
    argv = [str(quick_notebook), "--grid", "a=[1, 2]", "--grid", "b=[[1], [2, 3]]",
            "--jobs", "2", "--name", "two"]
    assert _sweep(*argv) == 0
    out = capsys.readouterr().out
    folder = outputs / "sweeps" / "two"
    points = sorted(p.name for p in folder.iterdir() if (p / "point.json").is_file())
    assert points == ["a-1_b-1", "a-1_b-2+3", "a-2_b-1", "a-2_b-2+3"]
    for name in points:
        record = json.loads((folder / name / "point.json").read_text())
        assert record["state"] == "done" and record["parameters"] == record["values"]
        assert (folder / name / "quick.ipynb").is_file()  # the executed notebook
        assert f"a={record['values']['a']}:" in (folder / name / "log.txt").read_text()
    recorded = json.loads((folder / "sweep.json").read_text())
    assert recorded["grid"] == {"a": [1, 2], "b": [[1], [2, 3]]}
    assert {p["state"] for p in recorded["points"]} == {"done"}
    assert len({p["job_id"] for p in recorded["points"]}) == 4
    assert out.count("submitted ") == 4 and "[two] 4 done" in out

    table = pd.read_csv(folder / "table.csv")
    assert len(table) == 2 * (1 + 1 + 2 + 2)  # two methods x the shots of each point
    assert list(table.columns[:4]) == ["point", "state", "a", "b"]
    row = table.query("a == 2 and shots == 3 and method == 'm1'")
    assert row["b"].item() == "[2, 3]" and row["miou"].item() == pytest.approx(0.6)
    assert "| done | 2 | [2, 3] | m1 | 3 | 0.600 |" in (folder / "table.md").read_text()
    assert (folder / "miou_by_a.png").stat().st_size > 0

    jobs = _jobs(folder)
    assert _sweep(*argv) == 0  # the same sweep again: every point reused, nothing submitted
    again = capsys.readouterr().out
    assert again.count("reusing point ") == 4 and "submitted" not in again
    assert _jobs(folder) == jobs
    pd.testing.assert_frame_equal(pd.read_csv(folder / "table.csv"), table)


@pytest.mark.slow
@pytest.mark.notebooks
def test_a_failed_point_is_reported_with_its_log_and_the_others_complete(
        quick_notebook, outputs, capsys):
    argv = [str(quick_notebook), "--grid", "a=[1, 99]", "--jobs", "2", "--name", "fail"]
    assert _sweep(*argv) == 1
    out = capsys.readouterr().out
    assert "FAILED: a=99: cell 4: AssertionError: a=99 fails on purpose" in out
    folder = outputs / "sweeps" / "fail"
    table = pd.read_csv(folder / "table.csv")
    assert set(table["state"]) == {"done", "failed"} and (table["state"] == "done").sum() == 2
    failed = table[table["state"] == "failed"].iloc[0]
    assert failed["a"] == 99 and "AssertionError" in failed["error"]
    assert failed["log"] == str(folder / "a-99" / "log.txt")
    text = (folder / "table.md").read_text()
    assert "### a-99 (failed)" in text and "----> 1 assert a != 99" in text  # the log's end

    assert _sweep(*argv) == 1  # again: the finished point reused, the failed one run anew
    again = capsys.readouterr().out
    assert "reusing point a=1 " in again and "submitted a=99 " in again
    assert "submitted a=1 " not in again


@pytest.mark.slow
@pytest.mark.notebooks
def test_gather_alone_and_the_debug_executor(quick_notebook, outputs, capsys):
    argv = [str(quick_notebook), "--grid", "a=[3]", "--executor", "debug", "--name", "dbg"]
    assert _sweep(*argv) == 0
    folder = outputs / "sweeps" / "dbg"
    assert json.loads((folder / "a-3" / "point.json").read_text())["state"] == "done"
    capsys.readouterr()
    assert cli.main(["gather", str(folder), "--metric", "miou_high"]) == 0
    assert "| done | 3 | m1 | 1 | 0.350 |" in capsys.readouterr().out
    assert (folder / "miou_high_by_a.png").is_file()
    assert cli.main(["gather", str(folder), "--metric", "iou"]) == cli.EXIT_USER_ERROR
    assert "--metric iou: the gathered table has no such column" in capsys.readouterr().err
    assert cli.main(["gather", str(outputs)]) == cli.EXIT_USER_ERROR


def test_a_sweep_folder_of_another_target_is_refused(quick_notebook, outputs, capsys):
    folder = outputs / "sweeps" / "mine"
    folder.mkdir(parents=True)
    target = sweep_plan.Target("notebook", quick_notebook.resolve(), {"b": [1]})
    (folder / "sweep.json").write_text(json.dumps({"target": target.record()}))
    assert _sweep(str(quick_notebook), "--grid", "a=[1]", "--name", "mine") == 2
    assert "differs in fixed: choose another --name" in capsys.readouterr().err


# ----------------------------------------------------------------------------- evaluation


@pytest.fixture(scope="module")
def tiny_eval(tmp_path_factory) -> Path:
    """An evaluation config of the tiny benchmark whose base model is trained on demand."""
    work = tmp_path_factory.mktemp("eval")
    ensure_synth(work / "synth", SynthConfig(n_train=24, n_val=48, size=32, styles=("A",)),
                 progress=False, workers=1)
    train = work / "train.yaml"
    train.write_text(TRAIN_YAML.format(root=work / "synth" / "A"))
    config = work / "eval.yaml"
    config.write_text(EVAL_YAML.format(root=work / "synth" / "A", train=train))
    return config


@pytest.mark.slow
def test_two_concurrent_evaluation_points_train_their_shared_base_model_once(
        tiny_eval, outputs, capsys):
    argv = ["--eval", str(tiny_eval), "--grid", "shots=[[1], [2]]", "--jobs", "2"]
    assert _sweep(*argv) == 0
    folder = outputs / "sweeps" / "eval-shots"
    records = [json.loads((folder / n / "point.json").read_text())
               for n in ("shots-1", "shots-2")]
    assert all(r["state"] == "done" for r in records)
    first, second = sorted(records, key=lambda r: r["started"])
    assert second["started"] < first["finished"]  # the two jobs ran at the same time
    assert len(list((outputs / "runs").iterdir())) == 1  # one base model for both
    logs = [(folder / n / "log.txt").read_text() for n in ("shots-1", "shots-2")]
    assert sum("reusing base model tiny-sweep" in log for log in logs) == 1
    assert sum("epoch 1/1" in log for log in logs) == 1  # trained by one of them only
    table = pd.read_csv(folder / "table.csv")
    assert sorted(table["shots"]) == [1, 2] and set(table["method"]) == {"ce"}
    for name, shots in (("shots-1", 1), ("shots-2", 2)):
        saved = (folder / name / "config.yaml").read_text()
        assert f"shots:\n- {shots}\n" in saved and f"out_dir: {folder / name}" in saved
    assert (folder / "miou_by_shots.png").is_file()


# ----------------------------------------------------------------------------- SLURM


def _fake(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_slurm_points_go_to_one_submitit_job_array(quick_notebook, outputs, tmp_path,
                                                   monkeypatch):
    """submitit's SlurmExecutor, with stand-ins for srun (found) and sbatch (records the
    file submitit wrote and answers a job id): the flags reach the sbatch file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake(bin_dir, "srun", "exit 0")
    _fake(bin_dir, "sbatch", f'cp "$1" {tmp_path}/submitted.sh\necho "Submitted batch job 4242"')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    res = sweep.Resources("slurm", jobs=2, partition="gpu", gpus=1, cpus=8, time_min=30)
    sweep.check_executor(res)
    target = sweep_plan.make_target(quick_notebook, None, [])
    folder = outputs / "sweeps" / "cluster"
    points = sweep_plan.plan(target, {"a": [1, 2, 3]}, folder)
    executor = sweep.make_executor(res, folder / sweep.JOBS_DIR, "cluster")
    ledger = sweep.Ledger(folder, target, {"a": [1, 2, 3]}, res, points, io.StringIO())
    folder.mkdir(parents=True)
    jobs = sweep.submit_all(executor, target, points, ledger)

    script = (tmp_path / "submitted.sh").read_text()
    for flag in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--time=30",
                 "--array=0-2%2", "--job-name=fsstools-cluster"):
        assert f"#SBATCH {flag}\n" in script, flag
    assert "-m submitit.core._submit" in script
    assert [job.job_id for _, job in jobs.values()] == ["4242_0", "4242_1", "4242_2"]
    recorded = json.loads((folder / "sweep.json").read_text())["points"]
    assert [p["job_id"] for p in recorded] == ["4242_0", "4242_1", "4242_2"]
    assert {p["state"] for p in recorded} == {"running"}


# ----------------------------------------------------------------------------- gather


def test_gather_lists_unfinished_points_and_keeps_the_points_own_columns(tmp_path):
    folder = tmp_path / "s"
    entries = [{"name": f"shots-{k}", "values": {"shots": [k]}, "state": s}
               for k, s in ((1, "done"), (5, "cancelled"))]
    (folder / "shots-1").mkdir(parents=True)
    (folder / "shots-1" / "point.json").write_text(json.dumps({"state": "done"}))
    (folder / "shots-1" / "summary.csv").write_text("method,shots,miou\nce,1,0.5\nrepri,1,0.6\n")
    (folder / "sweep.json").write_text(json.dumps({
        "name": "s", "target": {"kind": "eval", "path": "e.yaml", "fixed": {}},
        "grid": {"shots": [[1], [5]]}, "points": entries}))
    done = gather.gather(folder)
    assert list(done.table["state"]) == ["done", "done", "missing"]
    assert list(done.table["shots"].astype(str)) == ["1", "1", "[5]"]  # the points' own column
    assert done.failed == ("shots-5",) and done.figure.name == "miou_by_shots.png"
    assert "### shots-5 (missing)" in done.markdown.read_text()
