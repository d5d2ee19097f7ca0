"""bench/gpu_check: the clean skip without CUDA, its CPU-checkable pieces, the whole script on
the CPU standing in for the GPU, and (marked gpu) the real thing at a small size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import gpu_check
from fsstools.inference import InferenceResult

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "gpu_check"

TINY = ["--tasks", "6", "--eq-tasks", "6", "--exact-tasks", "2", "--channels", "16",
        "--grid", "10", "--repeats", "2", "--arch", "small", "--image-size", "48",
        "--extract-batch", "2", "--extract-batches", "1", "--train-batch", "2",
        "--train-steps", "1"]
"""Sizes at which every part runs in seconds on the CPU."""


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def result(logits: list[list[float]], pi: list[float]) -> InferenceResult:
    lg = torch.tensor(logits).reshape(len(logits), 1, -1)  # (B, 1, w)
    B, C = lg.shape[0], 3
    return InferenceResult(lg, torch.tensor(pi), torch.zeros(B, C), torch.zeros(B))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the skip without CUDA")
def test_skips_cleanly_without_cuda(tmp_path):
    out = tmp_path / "report.json"
    proc = subprocess.run([str(SCRIPT), "--json", str(out)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device found" in lines[0]
    assert "Traceback" not in proc.stderr
    assert json.loads(out.read_text())["skipped"] == lines[0]


def test_budget_counts_from_its_start():
    clock = FakeClock()
    budget = gpu_check.Budget(60.0, clock=clock)
    clock.now += 45.0
    assert budget.elapsed() == 45.0 and budget.left() == 15.0
    assert budget.fits(15.0) and not budget.fits(15.5)
    part = gpu_check.Part("inference", budget)
    assert part.fits(10.0, "1-shot timing") and part.notes == []
    assert not part.fits(20.0, "5-shot timing")
    assert part.notes == ["skipped 5-shot timing: needs about 20 s, 15 s left of the 60 s budget"]


def test_run_part_skips_what_overruns_and_keeps_going_after_a_failure(capsys):
    clock = FakeClock()
    budget = gpu_check.Budget(100.0, clock=clock)
    ran = []

    def fine(part):
        ran.append(part.name)
        clock.now += 7.0
        part.figures.update(figure=1.5, ok=True)

    def broken(part):
        part.figures["1-shot"] = {"tasks_per_s": 900.0}
        raise RuntimeError("CUDA error: out of memory")

    def missing(part):
        raise gpu_check.Skip("needs 2 GPUs, found 1")

    done = gpu_check.run_part("a", fine, 50.0, budget)
    assert done == {"status": "done", "figure": 1.5, "ok": True, "part_s": 7.0, "notes": []}
    skipped = gpu_check.run_part("b", fine, 94.0, budget)  # 93 s left
    assert skipped["status"] == "skipped" and ran == ["a"]
    assert "needs about 94 s, 93 s left" in skipped["notes"][0]
    failed = gpu_check.run_part("c", broken, 1.0, budget)
    assert failed["status"] == "error" and "out of memory" in failed["error"]
    assert failed["1-shot"] == {"tasks_per_s": 900.0}  # measured before the failure: kept
    assert "Traceback" in capsys.readouterr().err
    absent = gpu_check.run_part("d", missing, 1.0, budget)
    assert absent["status"] == "skipped" and "found 1" in absent["notes"][0]
    assert [gpu_check.passed(r) for r in (done, skipped, failed, absent)] == [
        True, True, False, True]
    assert not gpu_check.passed({"status": "done", "ok": False})


def test_a_failed_check_makes_the_exit_status_1(tmp_path, monkeypatch, capsys):
    def mismatch(args, device, part):
        part.figures["ok"] = False

    monkeypatch.setitem(gpu_check.PART_FUNCTIONS, "equality", mismatch)
    out = tmp_path / "report.json"
    assert gpu_check.main(["--device", "cpu", "--parts", "equality", "--json", str(out)]) == 1
    assert not json.loads(out.read_text())["ok"]
    assert capsys.readouterr().out.splitlines()[-1].endswith("FAILED: equality")


def test_compare_measures_logit_gaps_and_agreement_on_valid_pixels():
    a = result([[2.0, -1.0, 0.5, 3.0], [1.0, 1.0, -2.0, -2.0]], [0.5, 0.25])
    b = result([[2.0, -1.5, -0.1, 3.0], [1.0, 1.0, -2.0, 4.0]], [0.5, 0.5])
    valid = torch.tensor([[True, True, True, True], [True, True, True, False]]).reshape(2, 1, 4)
    figures = gpu_check.compare(a, b, valid)
    # task 0 pixel 2 flips (valid); task 1 pixel 3 flips too but is padding
    assert figures["pixels"] == 7 and figures["disagree_pixels"] == 1
    assert figures["agree"] == pytest.approx(6 / 7)
    assert figures["max_logit_diff"] == pytest.approx(6.0)  # padding counts for the gap
    assert figures["max_pi_diff"] == pytest.approx(0.25)
    assert figures["max_abs_logit"] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="one shape"):
        gpu_check.compare(a, b, valid[:1])


def test_arguments_defaults_and_refusals():
    args = gpu_check.parse_args([])
    assert (args.tasks, args.channels, args.grid, args.image_size, args.train_batch) == (
        1000, 512, 53, 417, 12)
    assert args.shots == [1, 5] and args.arch == "resnet50" and args.device == "cuda"
    assert args.budget_s == gpu_check.DEFAULT_BUDGET_S and args.parts == list(gpu_check.PARTS)
    args = gpu_check.parse_args(["--parts", "training", "equality", "--shots", "5", "1", "5"])
    assert args.parts == ["equality", "training"] and args.shots == [1, 5]
    for bad in (["--tasks", "0"], ["--budget-s", "-1"], ["--grid", "1"], ["--parts", "x"],
                ["--memory-budget-gib", "0"]):
        with pytest.raises(SystemExit):
            gpu_check.parse_args(bad)


def test_default_run_fits_its_budget_by_its_own_estimates():
    args = gpu_check.parse_args([])
    cuda = torch.device("cuda")
    estimates = {p: gpu_check.estimate_s(p, args, cuda) for p in gpu_check.PARTS}
    # one GPU: the DDP part is skipped at once, so it needs no room
    assert sum(v for p, v in estimates.items() if p != "ddp") < gpu_check.DEFAULT_BUDGET_S
    bigger = gpu_check.parse_args(["--tasks", "2000"])
    assert gpu_check.estimate_s("inference", bigger, cuda) > estimates["inference"]
    assert gpu_check.equality_tasks(256, 1) == 256 and gpu_check.equality_tasks(256, 5) == 85
    assert gpu_check.valid_rows(53) == 40


def test_tile_repeats_the_pool_in_turn():
    pool = [torch.arange(3.0).reshape(3, 1), torch.tensor([[True], [False], [True]])]
    values, flags = gpu_check.tile(pool, 7, torch.device("cpu"))
    assert values.flatten().tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert flags.flatten().tolist() == [True, False, True, True, False, True, True]


def test_ddp_command_passes_every_override_with_its_own_set(tmp_path):
    overrides = gpu_check.ddp_overrides(tmp_path / "A", tmp_path / "runs", torch.device("cuda"))
    assert "run.device=cuda" in overrides and "run.amp=bf16" in overrides
    assert f"optim.batch_size={4 * gpu_check.DDP_PROCESSES}" in overrides
    cmd = gpu_check.ddp_command(tmp_path / "c.yaml", overrides, 2)
    assert cmd[:6] == [sys.executable, "-m", "torch.distributed.run", "--standalone",
                       "--nproc_per_node=2", "-m"]
    sets = cmd[cmd.index("--config") + 2:]
    assert sets[::2] == ["--set"] * len(overrides) and sets[1::2] == overrides
    env = gpu_check.child_env(tmp_path / "outputs")
    assert env["PYTHONPATH"].split(":")[0] == str(REPO)
    assert env["FSSTOOLS_OUTPUTS"] == str(tmp_path / "outputs")


def test_budget_of_zero_skips_every_part_saying_so(tmp_path, capsys):
    out = tmp_path / "report.json"
    assert gpu_check.main(["--device", "cpu", "--budget-s", "0", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["parts"]) == set(gpu_check.PARTS) and report["ok"]
    for name, part in report["parts"].items():
        assert part["status"] == "skipped", name
        assert "left of the 0 s budget" in part["notes"][0]
    assert capsys.readouterr().out.count("skipped this part") == len(gpu_check.PARTS)


@pytest.mark.slow
def test_cpu_stands_in_for_the_gpu_in_every_part_but_ddp(tmp_path):
    out = tmp_path / "report.json"
    parts = ["equality", "inference", "extraction", "training"]
    code = gpu_check.main(["--device", "cpu", "--json", str(out), "--parts", *parts, *TINY])
    report = json.loads(out.read_text())
    assert code == 0 and report["ok"], report
    assert {p: report["parts"][p]["status"] for p in parts} == dict.fromkeys(parts, "done")
    cases = report["parts"]["equality"]["cases"]
    assert {(c["shots"], c["mode"]) for c in cases} == {
        (s, m) for s in (1, 5) for m in ("clean", "reference")}
    # the same CPU code on both sides: identical, which the checks accept
    assert all(c["float32"]["agree"] == 1.0 and c["float64"]["max_logit_diff"] == 0.0
               for c in cases)
    timing = report["parts"]["inference"]
    for shots in (1, 5):
        assert timing[f"{shots}-shot"]["tasks"] == 6
        assert timing[f"{shots}-shot"]["tasks_per_s"] > 0
        assert len(timing[f"{shots}-shot"]["repeats_s"]) == 2
    extraction = report["parts"]["extraction"]
    assert extraction["feature_shape"] == [512, 6, 6]  # ceil(48 / 8)
    assert extraction["bf16"]["images_per_s"] > 0 and extraction["fp32"]["images_per_s"] > 0
    training = report["parts"]["training"]
    assert training["steps"] == 1 and training["images_per_s"] > 0 and training["ok"]


@pytest.mark.slow
def test_ddp_part_on_cpu_trains_two_gloo_ranks_to_equal_weights(tmp_path):
    out = tmp_path / "report.json"
    assert gpu_check.main(["--device", "cpu", "--parts", "ddp", "--json", str(out)]) == 0
    ddp = json.loads(out.read_text())["parts"]["ddp"]
    assert ddp["status"] == "done" and ddp["backend"] == "gloo" and ddp["ok"]
    assert len(ddp["param_digests"]) == 2 and len(set(ddp["param_digests"])) == 1


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_check_on_cuda_records_every_figure(tmp_path):
    out = tmp_path / "report.json"
    small = ["--tasks", "100", "--eq-tasks", "16", "--exact-tasks", "2", "--repeats", "2",
             "--image-size", "225", "--extract-batch", "4", "--extract-batches", "2",
             "--train-batch", "2", "--train-steps", "2", "--budget-s", "400"]
    proc = subprocess.run([str(SCRIPT), "--json", str(out), *small], capture_output=True,
                          text=True, timeout=600)
    report = json.loads(out.read_text())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["ok"] and report["env"]["device_name"] and report["env"]["memory_gib"] > 0
    parts = report["parts"]
    for name in ("equality", "inference", "extraction", "training"):
        assert parts[name]["status"] == "done", (name, parts[name])
    assert all(c["ok"] for c in parts["equality"]["cases"])
    for shots in (1, 5):
        timing = parts["inference"][f"{shots}-shot"]
        assert timing["tasks_per_s"] > 0 and timing["chunk"] >= 1
        assert timing["with_transfer"]["pinned"] and timing["with_transfer"]["tasks_per_s"] > 0
    assert parts["extraction"]["bf16"]["images_per_s"] > 0
    assert parts["extraction"]["fp32"]["images_per_s"] > 0
    assert parts["training"]["images_per_s"] > 0 and parts["training"]["ok"]
    if torch.cuda.device_count() >= 2:
        assert parts["ddp"]["status"] == "done" and parts["ddp"]["ok"]
    else:
        assert parts["ddp"]["status"] == "skipped"
