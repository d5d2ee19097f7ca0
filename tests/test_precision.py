"""``run.amp: auto``: the bf16 detection, its resolution before the run key, and a run."""

import sys

import pytest
import torch
from torch.utils.data import TensorDataset

from fsstools import config as config_lib
from fsstools.training import (
    TrainConfig,
    TrainData,
    ensure_trained,
    main,
    run_directory,
    run_key,
    runtime,
)
from fsstools.training.config import OptimConfig, RunConfig, with_run
from fsstools.training.epoch import Precision, resolve_precision
from fsstools.training.runtime import auto_amp, native_bf16_flags, read_cpu_flags
from tests.tiny import TINY_MODEL

CPU = torch.device("cpu")
EPYC_FLAGS = "flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni"
XEON_FLAGS = "flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni"
SAPPHIRE_FLAGS = "flags\t\t: avx512f avx512_bf16 amx_bf16 amx_tile amx_int8"


@pytest.fixture
def bf16_cpu(monkeypatch):
    monkeypatch.setattr(runtime, "read_cpu_flags", lambda: EPYC_FLAGS)


@pytest.fixture
def fp32_cpu(monkeypatch):
    monkeypatch.setattr(runtime, "read_cpu_flags", lambda: XEON_FLAGS)


def tiny_config(out_dir, amp: str = "auto", **run) -> TrainConfig:
    run = {"epochs": 2, "progress": False, **run}
    run_cfg = RunConfig(out_dir=str(out_dir), amp=amp, device="cpu", workers=0, threads=1,
                        val_batch_size=8, **run)
    return TrainConfig(model=TINY_MODEL, optim=OptimConfig(batch_size=4, lr=0.05), run=run_cfg)


@pytest.fixture(scope="module")
def tiny_data():
    """Eight 24x24 images of noise with a 12x12 block of class 1 or 2 (base classes 6, 7)."""
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(8, 24, 24, dtype=torch.int64)
    for i in range(8):
        masks[i, 6:18, 6:18] = 1 + i % 2
    images = torch.randn(8, 3, 24, 24, generator=g) + masks[:, None].float()
    ds = TensorDataset(images, masks)
    return TrainData(ds, ds, (6, 7), fingerprint="tiny-blocks")


@pytest.mark.parametrize(("flags", "found"), [
    (EPYC_FLAGS, ("avx512_bf16",)),
    (XEON_FLAGS, ()),
    (SAPPHIRE_FLAGS, ("avx512_bf16", "amx_bf16")),
    ("flags : amx_bf16", ("amx_bf16",)),
    ("flags : avx512_bf16x avx512bf16", ()),  # whole flags only
    ("", ()),
])  # fmt: skip
def test_native_bf16_flags(flags, found):
    assert native_bf16_flags(flags) == found


def test_cpu_flags_are_empty_off_linux(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert read_cpu_flags() == ""


def test_auto_is_bf16_only_on_a_cpu_with_bf16_instructions(monkeypatch):
    for flags, expected in [(EPYC_FLAGS, "bf16"), (SAPPHIRE_FLAGS, "bf16"), (XEON_FLAGS, "fp32"),
                            ("", "fp32")]:
        monkeypatch.setattr(runtime, "read_cpu_flags", lambda flags=flags: flags)
        assert auto_amp(CPU)[0] == expected
        assert Precision.choose("auto", CPU).dtype == (
            torch.bfloat16 if expected == "bf16" else None)  # fmt: skip
    monkeypatch.setattr(runtime, "read_cpu_flags", lambda: SAPPHIRE_FLAGS)
    assert auto_amp(CPU)[1] == "this CPU has AVX512-BF16 and AMX-BF16"


def test_resolve_precision_keeps_explicit_values_and_says_why(bf16_cpu, tmp_path):
    cfg, line = resolve_precision(tiny_config(tmp_path), CPU)
    assert cfg.run.amp == "bf16" and line == "precision bf16 (run.amp=auto: this CPU has AVX512-BF16)"
    fp32 = tiny_config(tmp_path, amp="fp32")
    assert resolve_precision(fp32, CPU) == (fp32, "precision fp32 (run.amp=fp32)")


def test_run_key_holds_the_resolved_precision(monkeypatch, tmp_path):
    auto, bf16, fp32 = (tiny_config(tmp_path, amp=a) for a in ("auto", "bf16", "fp32"))
    monkeypatch.setattr(runtime, "read_cpu_flags", lambda: EPYC_FLAGS)
    assert run_key(auto, "d") == run_key(bf16, "d") != run_key(fp32, "d")
    assert run_directory(auto, "d") == run_directory(bf16, "d")
    monkeypatch.setattr(runtime, "read_cpu_flags", lambda: XEON_FLAGS)
    assert run_key(auto, "d") == run_key(fp32, "d") != run_key(bf16, "d")


def test_synth_configs_ask_for_auto_and_key_the_resolved_precision(bf16_cpu):
    cfg = config_lib.load(TrainConfig, "configs/synth/fold0.yaml")
    assert cfg.run.amp == "auto"
    assert run_key(cfg, "d") == run_key(with_run(cfg, amp="bf16"), "d")


def test_auto_run_records_resolves_resumes_and_is_reused(bf16_cpu, tmp_path, tiny_data, capsys):
    cfg = tiny_config(tmp_path, progress=True, stop_after_epoch=1)
    run_dir = main(cfg, tiny_data)  # interrupted after epoch 1 of 2
    assert run_dir == run_directory(with_run(cfg, amp="bf16"), tiny_data.fingerprint)
    assert "precision bf16 (run.amp=auto: this CPU has AVX512-BF16)" in capsys.readouterr().err
    saved = config_lib.load(TrainConfig, run_dir / "config.yaml")
    assert saved == with_run(cfg, amp="bf16")
    assert torch.load(run_dir / "last.pt", weights_only=True)["config"]["run"]["amp"] == "bf16"
    best = ensure_trained(cfg, tiny_data)  # resumes the interrupted run in its folder
    assert best.parent == run_dir and (run_dir / "done").is_file()
    assert len((run_dir / "metrics.csv").read_text().splitlines()) == 1 + 2
    stamp = best.stat().st_mtime_ns
    assert ensure_trained(cfg, tiny_data) == best and best.stat().st_mtime_ns == stamp


def test_auto_on_a_cpu_without_bf16_trains_in_fp32(fp32_cpu, tmp_path, tiny_data):
    run_dir = main(tiny_config(tmp_path, epochs=1), tiny_data)
    assert run_dir == run_directory(tiny_config(tmp_path, amp="fp32", epochs=1), "tiny-blocks")
    assert config_lib.load(TrainConfig, run_dir / "config.yaml").run.amp == "fp32"


@pytest.mark.gpu
def test_auto_on_cuda_follows_the_device():
    device = torch.device("cuda")
    major = torch.cuda.get_device_capability(device)[0]
    assert auto_amp(device)[0] == ("bf16" if major >= 8 or torch.version.hip else "fp32")
