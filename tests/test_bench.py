"""bench/timing.py (device, machine name, warm-up, repeats, medians), the --device option of
bench/inference.py and bench/train.py, and bench/gpu_check's commands and its skip without
CUDA."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import inference, timing
from bench import train as train_bench

REPO = Path(__file__).resolve().parent.parent
GPU_CHECK = REPO / "bench" / "gpu_check"
SCRIPTS = {"inference": inference.main, "train": train_bench.cli}
TINY_TRAIN = ["--no-loader", "--steps", "1", "--rounds", "1", "--set", "model.widths=[4,8,8,8]",
              "model.stem_width=4", "model.bottleneck_dim=8", "data.crop_size=32",
              "optim.batch_size=2", "run.threads=1"]
"""bench/train.py at a size that runs in about a second."""

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def gpu_check_commands() -> list[tuple[str, list[str]]]:
    """(script, arguments) of each bench/*.py step of bench/gpu_check."""
    text = GPU_CHECK.read_text().replace("\\\n", " ")
    return [(m[1], shlex.split(m[2])) for m in
            re.finditer(r'"\$python" bench/(\w+)\.py (.*)', text)]


def test_open_device_refuses_cuda_without_it(no_cuda, capsys):
    with pytest.raises(SystemExit) as stop:
        timing.open_device("cuda", "inference.py")
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("inference.py: error: --device cuda") and "--device cpu" in err


def test_open_device_names_the_cpu(capsys, tmp_path):
    assert timing.open_device("cpu", "x") == torch.device("cpu")
    assert capsys.readouterr().out == f"{timing.machine(torch.device('cpu'))}\n"
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: X\nmodel name\t: Test CPU 9000 @ 3 GHz\n")
    assert timing.cpu_name(info) == "Test CPU 9000 @ 3 GHz"
    assert timing.cpu_name(tmp_path / "absent")  # falls back on what platform knows


def test_timed_warms_up_then_times_each_repeat():
    calls = []
    walls, cpus, peak_mb, out = timing.timed(lambda: calls.append(1) or len(calls), 3,
                                             torch.device("cpu"), warmup=2)
    assert len(calls) == 5 and out == 5  # two untimed calls first; the last output returned
    assert len(walls) == len(cpus) == 3 and min(walls) >= 0 and peak_mb >= 0


def test_rate_is_the_count_over_the_median_time():
    assert timing.rate(10, [1.0, 5.0, 2.0]) == 5.0  # the mean (8/3 s) would give 3.75
    assert timing.rate(6, [1.0, 3.0]) == 3.0


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_scripts_refuse_cuda_without_it(script, no_cuda, capsys):
    with pytest.raises(SystemExit) as stop:
        SCRIPTS[script](["--device", "cuda"])
    assert stop.value.code == 2 and "finds no CUDA device" in capsys.readouterr().err


def test_gpu_check_commands_parse(no_cuda, capsys):
    """Every bench step of bench/gpu_check gets past its script's argument parsing (and
    bench/train.py's config loading), which run before the CUDA check: a renamed or dropped
    option, or a bad config key, fails here rather than on a GPU."""
    commands = gpu_check_commands()
    assert sorted({script for script, _ in commands}) == sorted(SCRIPTS)
    for script, args in commands:
        assert "--device" in args and args[args.index("--device") + 1] == "cuda"
        with pytest.raises(SystemExit) as stop:
            SCRIPTS[script](args)
        err = capsys.readouterr().err
        assert stop.value.code == 2 and "finds no CUDA device" in err, (script, err)


def test_inference_bench_runs_on_cpu(capsys):
    args = ["--device", "cpu", "--tasks", "2", "--channels", "8", "--grid", "8", "--repeats", "1"]
    assert inference.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("device cpu: ") and lines[-1].startswith("tasks/s=")
    assert float(lines[-1].partition("=")[2]) > 0


def test_train_bench_runs_on_cpu(tmp_path, capsys):
    out = tmp_path / "train.json"
    assert train_bench.cli(["--device", "cpu", "--json", str(out), *TINY_TRAIN]) == 0
    results = json.loads(out.read_text())
    assert results["device"] == "cpu"
    rates = results["step_images_per_s"]
    assert set(rates) == {"fp32", "fp32+channels_last", "bf16", "bf16+channels_last"}
    assert min(rates.values()) > 0 and not any(k.startswith("loader") for k in results)
    assert capsys.readouterr().out.splitlines()[-1] == f"speedup={results['speedup']:.2f}"


def test_train_bench_refuses_an_unknown_key(capsys):
    assert train_bench.cli(["--device", "cpu", "--no-loader", "--set", "model.nope=1"]) == 2
    err = capsys.readouterr().err
    assert "error: unknown key model.nope" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_gpu_check_says_there_is_no_cuda_and_exits_2():
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run([str(GPU_CHECK)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ("bench/gpu_check: torch finds no CUDA device here; nothing checked "
                           "(run it on a GPU)\n")


def test_features_times_bench_compares_both_forms(capsys):
    from bench import features_times

    assert features_times.main(["--rounds", "1", "--calls", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    shapes = [line for line in out if line.startswith("B=")]
    assert len(shapes) == len(features_times.SHAPES)
    assert all("row True" in line for line in shapes)  # the loops' form: same bits batched
    assert out[-1].startswith("speedup=") and float(out[-1].partition("=")[2]) > 0


@pytest.mark.parametrize("method", ["repri", "oracle_repri"])
def test_loops_bench_finds_both_loops_give_the_same_bits(capsys, method):
    from bench import loops

    args = ["--channels", "16", "--grid", "8", "--tasks", "6", "--shots", "2", "--repeats",
            "1", "--method", method]
    assert loops.main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert "max |logit difference| 0.00e+00" in out[-2]  # the same arithmetic in both loops
    assert "agree on 100.0000%" in out[-2]
    assert out[-1].startswith("general_over_one_block=")
    assert float(out[-1].partition("=")[2]) > 0


def test_loops_bench_refuses_a_peer_method(capsys):
    from bench import loops

    with pytest.raises(SystemExit) as exit_info:
        loops.main(["--method", "panet", "--tasks", "1"])
    assert exit_info.value.code == 2
    assert "not fitted by these loops" in capsys.readouterr().err


def test_chunks_bench_finds_every_budget_gives_the_same_bits(capsys):
    from bench import chunks

    # 0.25 MiB a task: 24 tasks to a 6 MiB chunk, all 40 in one under the larger budgets
    args = ["--method", "repri", "--channels", "128", "--grid", "16", "--tasks", "40",
            "--rounds", "1"]
    assert chunks.main(args) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if "tasks/s" in line]
    assert len(rows) == 4 and rows[0].lstrip().startswith("6 MiB: chunks of <=  24 tasks")
    assert "chunks of <=  40 tasks" in rows[1]  # 16 MiB
    assert all(line.endswith("same bits as the first: True") for line in rows)
    assert out[-1].startswith("speedup=") and float(out[-1].partition("=")[2]) > 0


def test_chunks_bench_refuses_tasks_that_are_streamed(capsys):
    from bench import chunks

    with pytest.raises(SystemExit) as exit_info:
        chunks.main(["--channels", "512", "--grid", "53", "--tasks", "1", "--rounds", "1"])
    assert exit_info.value.code == 2
    assert "runs alone, streamed" in capsys.readouterr().err


def test_bandwidth_bench_times_both_products_and_bf16(capsys, monkeypatch):
    from bench import bandwidth
    from fsstools.inference import layout

    monkeypatch.setattr(layout, "chunk_bytes", lambda: 2 * layout.CACHE_BYTES)
    args = ["--channels", "16", "--grid", "8", "--rounds", "1", "--calls", "2"]
    assert bandwidth.main(args) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if "iteration" in line]
    # 1 and 5 shots, each under this CPU's budget and under the fixed one (twice the tasks)
    tasks = [int(line.split()[0]) for line in rows]
    assert len(rows) == 4 and tasks[0] == 2 * tasks[1] and tasks[2] == 2 * tasks[3]
    errors = [float(line.rpartition("up to ")[2].split()[0]) for line in rows]
    assert all(0 < e < 1 for e in errors)  # bfloat16 rounds the scores, a little
    assert out[-1].startswith("bf16_over_fp32=") and float(out[-1].partition("=")[2]) > 0
