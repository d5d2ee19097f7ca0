"""GPU check: RePRI on CPU and CUDA side by side, inference and training speed, in one process.

    bench/gpu_check                              # every part, within 540 s
    bench/gpu_check --json gpu_check.json        # also write the figures as JSON
    bench/gpu_check --budget-s 120 --tasks 200 --parts equality inference

Without a CUDA device it prints one line saying so and exits 0, so CI can run it. With one,
it prints, part by part (each part, and each piece of one, is skipped, saying so, when its
estimated time exceeds what is left of ``--budget-s``):

- env: torch, CUDA and cuDNN versions, device name and memory.
- equality: RePRI on the same synthetic tasks (C=512, 53x53, 40 rows not padding) through
  ``run_method`` on the CPU and with ``device="cuda"``, clean and reference mode, 1- and
  5-shot: in float32 the largest |logit difference| and the share of valid query pixels
  predicted alike (must be >= 99.9%), in float64 on a few tasks the largest |logit
  difference| (must be <= 1e-9).
- inference: ``--tasks`` tasks (1000) per shot count, seconds and tasks/s (median of
  repeats after a warm-up, synchronised), the features made on the GPU; then again from
  pinned host memory, the transfer included; then with the features on the GPU in larger
  chunks (``--memory-budget-gib``: the library's 2 GiB, then 16 GiB).
- extraction: PSPNet-ResNet-50 bottleneck features at 417 px, images/s, bf16 autocast and
  fp32, channels_last (random weights and images: no ImageNet file offline).
- training: steps of PSPNet-ResNet-50 at 417 px, batch 12, bf16 autocast, channels_last,
  through ``fsstools.training.train_one_epoch`` on random images held in memory.
- ddp: with two GPUs or more, ``python -m fsstools.training`` under
  ``torch.distributed.run`` (2 processes, nccl) on a tiny generated dataset; both ranks must
  end with the same weights (the run's ``done`` file).

Exit status 0 when every part that ran passed its checks, 1 when one failed or raised (its
traceback is printed and the other parts still run). The JSON file is rewritten after each
part, so a run cut short keeps what it measured. ``--device cpu`` runs the same parts on
the CPU at whatever size is given: a way to test this script, not a source of figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import fsstools
from fsstools.artifacts import atomic_write_text
from fsstools.constants import IGNORE_INDEX
from fsstools.inference import (
    InferenceResult,
    MethodConfig,
    query_valid_mask,
    resolve_method,
    run_method,
)
from fsstools.inference.layout import DEFAULT_MEMORY_BUDGET, default_chunk
from fsstools.models import TRUNKS, ModelConfig, build_model

try:
    from bench.inference import synthetic_episodes, timed
except ModuleNotFoundError as error:
    if error.name != "bench":
        raise
    # run as ``python bench/gpu_check.py`` without the repository on the path: bench/ itself
    # is sys.path[0] then
    from inference import synthetic_episodes, timed

PARTS = ("equality", "inference", "extraction", "training", "ddp")
DEFAULT_BUDGET_S = 540.0
"""Leaves a minute of a 10-minute device call for starting Python and copying files back."""
GIB = 1024**3
METHOD = "repri"
ITERATIONS = resolve_method(METHOD).iterations
N_CLASSES = 16
"""PASCAL-5i's 15 base classes + background: the classifier size of the models built here."""
VALID_SHARE = 40 / 53
"""Query rows that are not padding: a 4:3 image padded to a square gives 40 of 53 rows."""
AGREE_MIN = 0.999
"""Float32 CPU and CUDA runs must predict alike on this share of valid query pixels; only
pixels whose logit is within rounding of 0 may differ."""
EXACT_TOL = 1e-9
"""Float64 CPU and CUDA logits (of order tau = 20) must agree to this."""
POOL_TASKS = 32
"""Distinct tasks the timed batches are tiled from (see :func:`tile`)."""
LARGE_MEMORY_BUDGET_GIB = 16.0
"""A second chunk size timed on the GPU: ~8x fewer chunks (so fewer kernel launches) than
the library's default memory budget."""
GOAL_S_PER_1000 = 1.0
"""The speed goal: 1000 tasks in well under a second on a data-centre GPU."""
TRANSFER_REPEATS = 3
TRAIN_WARMUP_STEPS = 2
TRAIN_AMP = "bf16"
DDP_PROCESSES = 2
DDP_TIMEOUT_S = 300.0

# Rough rates, used only to decide what fits in the budget; set low on purpose (a part
# skipped is better than a device call cut off). Replace them once a GPU run has measured.
GEN_FLOATS_PER_S = 4e7
"""Feature values bench/inference.py's generator makes per second (4.5e7 on 2 busy cores)."""
CPU_FIT_READS_PER_S = 8e9
"""Feature values the CPU fit reads per second (8.4e9 at 1-shot on 2 cores)."""
GPU_FIT_READS_PER_S = 2e11
"""Likewise on the GPU (a device-to-device copy on an H200 moves ~5e11 float32 values/s)."""
HOST_BYTES_PER_S = 2e9
"""Bytes per second pinned, filled or sent from host memory."""
EXTRACT_IMAGES_PER_S = 100
"""PSPNet-ResNet-50 forward passes per second at 417 px (~0.2 TFLOP each)."""
TRAIN_IMAGES_PER_S = 30
"""Training images per second at 417 px (forward, backward, SGD step)."""
OVERHEAD_S = {"equality": 5.0, "inference": 10.0, "extraction": 30.0, "training": 60.0,
              "ddp": 120.0}
"""Fixed cost of each part: building models, cuDNN autotuning, starting torchrun."""


class Skip(Exception):
    """A part cannot run here; the message says why."""


@dataclass
class Budget:
    """Seconds allowed for the whole check, counted from construction."""

    seconds: float
    clock: Callable[[], float] = time.perf_counter
    start: float = field(init=False)

    def __post_init__(self) -> None:
        self.start = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def fits(self, seconds: float) -> bool:
        """Whether something expected to take ``seconds`` ends within the budget."""
        return seconds <= self.left()


@dataclass
class Part:
    """One part's view of the budget, its figures (filled as they are measured, so a part
    that fails half-way keeps what it measured before) and the notes it prints and records."""

    name: str
    budget: Budget
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def say(self, message: str) -> None:
        print(f"[{self.name}] {message}", flush=True)

    def note(self, message: str) -> None:
        self.notes.append(message)
        self.say(message)

    def fits(self, seconds: float, what: str) -> bool:
        """Whether ``what`` (expected to take ``seconds``) fits; if not, says it is skipped."""
        if self.budget.fits(seconds):
            return True
        self.note(f"skipped {what}: needs about {seconds:.0f} s, {max(0.0, self.budget.left()):.0f}"
                  f" s left of the {self.budget.seconds:.0f} s budget")
        return False


# ----------------------------------------------------------------------------- arguments


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="bench/gpu_check", description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--budget-s", type=_non_negative, default=DEFAULT_BUDGET_S,
                    help="skip what would end later than this many seconds after the start")
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), metavar="PART",
                    help=f"parts to run, of {', '.join(PARTS)} (env is always printed)")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                    help="cpu runs the parts on the CPU to test this script (no figures)")
    ap.add_argument("--shots", nargs="+", type=_positive_int, default=[1, 5],
                    help="shot counts of the equality and timing parts")
    ap.add_argument("--tasks", type=_positive_int, default=1000, help="tasks per timed batch")
    ap.add_argument("--repeats", type=_positive_int, default=5, help="timed repeats (median)")
    ap.add_argument("--eq-tasks", type=_positive_int, default=256,
                    help="1-shot tasks compared on CPU and CUDA; S shots use about as many "
                         "features (2 * N / (S + 1) tasks)")
    ap.add_argument("--exact-tasks", type=_positive_int, default=4,
                    help="tasks compared in float64")
    ap.add_argument("--channels", type=_positive_int, default=512, help="feature channels C")
    ap.add_argument("--grid", type=int, default=53, help="feature grid side h = w (>= 2)")
    ap.add_argument("--memory-budget-gib", nargs="+", type=float, metavar="GIB",
                    default=[DEFAULT_MEMORY_BUDGET / GIB, LARGE_MEMORY_BUDGET_GIB],
                    help="run_method's memory_budget on the GPU (sets the chunk size); the "
                         "first is the main figure, the others are timed with the features "
                         "on the GPU only")
    ap.add_argument("--arch", choices=sorted(TRUNKS), default="resnet50",
                    help="PSPNet trunk of the extraction and training parts")
    ap.add_argument("--image-size", type=_positive_int, default=417, help="image side, px")
    ap.add_argument("--extract-batch", type=_positive_int, default=32,
                    help="images per forward pass")
    ap.add_argument("--extract-batches", type=_positive_int, default=8,
                    help="forward passes per timed repeat")
    ap.add_argument("--train-batch", type=_positive_int, default=12, help="training batch")
    ap.add_argument("--train-steps", type=_positive_int, default=20, help="timed steps")
    ap.add_argument("--seed", type=int, default=0, help="seed of tasks, weights and images")
    args = ap.parse_args(argv)
    if args.grid < 2:
        ap.error(f"--grid must be >= 2, got {args.grid}")
    if not all(gib > 0 for gib in args.memory_budget_gib):  # also refuses nan
        ap.error(f"--memory-budget-gib must be > 0, got {args.memory_budget_gib}")
    args.shots = sorted(set(args.shots))
    args.parts = [p for p in PARTS if p in args.parts]
    return args


# ----------------------------------------------------------------------------- sizes and estimates


def valid_rows(grid: int) -> int:
    """Query rows that are not padding (:data:`VALID_SHARE`), at least 2."""
    return max(2, round(VALID_SHARE * grid))


def equality_tasks(tasks_1shot: int, shots: int) -> int:
    """Tasks of ``shots`` shots holding about as many features as ``tasks_1shot`` 1-shot ones."""
    return max(1, round(2 * tasks_1shot / (shots + 1)))


def feature_values(tasks: int, shots: int, channels: int, grid: int) -> float:
    """Support and query feature values of ``tasks`` tasks."""
    return float(tasks) * (shots + 1) * channels * grid * grid


def fit_reads(tasks: int, shots: int, channels: int, grid: int) -> float:
    """Feature values a RePRI fit reads: all of them twice an iteration (scores, gradient)."""
    return feature_values(tasks, shots, channels, grid) * 2 * (ITERATIONS + 1)


def equality_case_s(args: argparse.Namespace, shots: int) -> float:
    """Expected seconds of one shot count's equality case (both modes; the CPU dominates)."""
    n = equality_tasks(args.eq_tasks, shots)
    k = min(args.exact_tasks, n)
    made = feature_values(n, shots, args.channels, args.grid) / GEN_FLOATS_PER_S
    # two modes; float64 costs about twice float32
    fits = 2 * (fit_reads(n, shots, args.channels, args.grid)
                + 2 * fit_reads(k, shots, args.channels, args.grid)) / CPU_FIT_READS_PER_S
    return made + fits


def timing_case_s(args: argparse.Namespace, shots: int) -> float:
    """Expected seconds of one shot count's timing with features on the device (one
    memory budget)."""
    made = feature_values(POOL_TASKS, shots, args.channels, args.grid) / GEN_FLOATS_PER_S
    runs = (1 + args.repeats) * fit_reads(args.tasks, shots, args.channels, args.grid)
    return made + runs / GPU_FIT_READS_PER_S


def transfer_case_s(args: argparse.Namespace, shots: int) -> float:
    """Expected seconds of one shot count's timing from pinned host memory."""
    nbytes = 4 * feature_values(args.tasks, shots, args.channels, args.grid)
    runs = 1 + min(args.repeats, TRANSFER_REPEATS)
    return (1 + runs) * nbytes / HOST_BYTES_PER_S + runs * fit_reads(
        args.tasks, shots, args.channels, args.grid) / GPU_FIT_READS_PER_S


def extraction_images(args: argparse.Namespace) -> int:
    """Images of one precision's extraction: a warm-up call and the timed repeats."""
    return (1 + args.repeats) * args.extract_batches * args.extract_batch


def estimate_s(part: str, args: argparse.Namespace, device: torch.device) -> float:
    """Expected seconds of ``part`` (an upper bound with the rates above)."""
    if part == "equality":
        work = sum(equality_case_s(args, s) for s in args.shots)
    elif part == "inference":
        work = sum(timing_case_s(args, s) for s in args.shots)
        if device.type == "cuda":
            work += sum(transfer_case_s(args, s)
                        + (len(args.memory_budget_gib) - 1) * timing_case_s(args, s)
                        for s in args.shots)
    elif part == "extraction":
        work = 2 * extraction_images(args) / EXTRACT_IMAGES_PER_S
    elif part == "training":
        work = (TRAIN_WARMUP_STEPS + args.train_steps) * args.train_batch / TRAIN_IMAGES_PER_S
    else:
        work = 0.0
    return OVERHEAD_S[part] + work


# ----------------------------------------------------------------------------- helpers


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release_memory() -> None:
    """Free what the last part left, so the next one starts with the whole device."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def compare(a: InferenceResult, b: InferenceResult, valid: torch.Tensor) -> dict[str, Any]:
    """How far two runs of one method on the same B tasks are apart.

    Args:
        a, b: the two results (any devices; compared on the CPU in float64).
        valid: (B, h, w) bool, the query pixels that count for agreement (the padding
            does not).

    Returns:
        ``max_logit_diff`` (largest |logit difference| over all query pixels),
        ``max_abs_logit`` (of ``a``, for scale), ``max_pi_diff``, ``pixels`` (valid ones),
        ``disagree_pixels`` (valid pixels predicted foreground by one run only) and
        ``agree`` (the share of valid pixels predicted alike; foreground is logit > 0).
    """
    la, lb = a.logits.detach().cpu().double(), b.logits.detach().cpu().double()
    valid = valid.cpu()
    if la.shape != lb.shape or la.shape != valid.shape:
        raise ValueError(f"logits {tuple(la.shape)} and {tuple(lb.shape)} and valid "
                         f"{tuple(valid.shape)} must have one shape")
    differ = ((la > 0) != (lb > 0)) & valid
    pixels, disagree = int(valid.sum()), int(differ.sum())
    return {
        "max_logit_diff": float((la - lb).abs().max()),
        "max_abs_logit": float(la.abs().max()),
        "max_pi_diff": float((a.pi.detach().cpu().double() - b.pi.detach().cpu().double())
                             .abs().max()),
        "pixels": pixels,
        "disagree_pixels": disagree,
        "agree": (pixels - disagree) / pixels if pixels else float("nan"),
    }


def tile(pool: Sequence[torch.Tensor], tasks: int, device: torch.device,
         pinned: bool = False) -> list[torch.Tensor]:
    """``tasks`` tasks repeating the pool's tasks in turn, on ``device`` or in pinned memory.

    A RePRI fit runs a fixed number of iterations whatever its task holds, and a task
    (~11 MB at 1-shot) is far larger than the GPU's cache, so repeated tasks take as long
    as distinct ones; tiling spares generating gigabytes on the host.

    Args:
        pool: CPU tensors whose first dimension is the pool's tasks.
        tasks: tasks wanted.
        device: where to put them (ignored when ``pinned``).
        pinned: fill page-locked host tensors instead (for timing the transfer).
    """
    index = torch.arange(tasks) % pool[0].shape[0]
    if pinned or device.type == "cpu":
        return [torch.index_select(t, 0, index, out=torch.empty(
            (tasks, *t.shape[1:]), dtype=t.dtype, pin_memory=pinned)) for t in pool]
    return [t.to(device)[index.to(device)] for t in pool]


def repeat_timed(fn: Callable[[], object], repeats: int, device: torch.device, part: Part,
                 what: str) -> dict[str, Any]:
    """One warm-up call, then up to ``repeats`` synchronised timed calls (fewer, saying so,
    when the next would overrun the budget).

    Returns:
        ``seconds`` (median), ``repeats_s``, ``warmup_s``, ``peak_mb`` (device memory above
        what was in use before the call, largest over the repeats).
    """
    warm, _, _, _ = timed(fn, 1, device)  # allocator pools, cuBLAS handles, kernel caches
    times: list[float] = []
    peak = 0.0
    for i in range(repeats):
        if times and not part.fits(max(times), f"{what}: repeat {i + 1} of {repeats}"):
            break
        walls, _, mb, _ = timed(fn, 1, device)
        times.append(walls[0])
        peak = max(peak, mb)
    return {"seconds": statistics.median(times), "repeats_s": times, "warmup_s": warm[0],
            "peak_mb": peak}


def environment(device: torch.device) -> dict[str, Any]:
    """Versions, the device and its memory, and the float32 precision settings in force."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        free, total = torch.cuda.mem_get_info(device)
        info.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                    multiprocessors=props.multi_processor_count, memory_gib=total / GIB,
                    free_gib=free / GIB, device_count=torch.cuda.device_count())
    else:
        info.update(device_name=platform.processor() or platform.machine(), device_count=1)
    return info


# ----------------------------------------------------------------------------- parts


def check_equality(args: argparse.Namespace, device: torch.device, part: Part) -> None:
    """RePRI on the CPU against ``device`` on the same tasks (see the module doc)."""
    part.figures.update(agree_min=AGREE_MIN, exact_tol=EXACT_TOL, cases=[])
    cases = part.figures["cases"]
    for shots in args.shots:
        n = equality_tasks(args.eq_tasks, shots)
        k = min(args.exact_tasks, n)
        if not part.fits(equality_case_s(args, shots), f"{shots}-shot equality"):
            continue
        sf, sm, qf, qv, qm = synthetic_episodes(n, shots, valid_rows(args.grid), args.seed + shots,
                                                torch.device("cpu"), args.channels, args.grid)
        for reference in (False, True):
            cfg = resolve_method(METHOD, reference=reference)
            valid = query_valid_mask(qm, qv, reference)
            single = compare(run_method(cfg, sf, sm, qf, valid),
                             run_method(cfg, sf, sm, qf, valid, device=device), valid)
            sf64, qf64 = sf[:k].double(), qf[:k].double()
            double = compare(run_method(cfg, sf64, sm[:k], qf64, valid[:k]),
                             run_method(cfg, sf64, sm[:k], qf64, valid[:k], device=device),
                             valid[:k])
            ok = single["agree"] >= AGREE_MIN and double["max_logit_diff"] <= EXACT_TOL
            mode = "reference" if reference else "clean"
            cases.append({"shots": shots, "mode": mode, "tasks": n, "float32": single,
                          "float64_tasks": k, "float64": double, "ok": ok})
            part.say(f"{shots}-shot {mode}: float32 on {n} tasks max |logit diff| "
                     f"{single['max_logit_diff']:.2e} (logits up to "
                     f"{single['max_abs_logit']:.1f}), same prediction on "
                     f"{100 * single['agree']:.4f}% of {single['pixels']} valid query pixels; "
                     f"float64 on {k} tasks max |logit diff| {double['max_logit_diff']:.2e}"
                     f" -> {'ok' if ok else 'MISMATCH'}")
    if not cases:
        raise Skip("no shot count fitted in the budget")
    part.figures["ok"] = all(c["ok"] for c in cases)


def time_inference(args: argparse.Namespace, device: torch.device, part: Part) -> None:
    """RePRI on ``--tasks`` tasks per shot count, features on the device, then from the host."""
    cfg = resolve_method(METHOD)
    main_gib, *other_gib = args.memory_budget_gib
    part.figures.update(method=cfg.name, iterations=cfg.iterations, channels=args.channels,
                        grid=args.grid)
    for shots in args.shots:
        if not part.fits(timing_case_s(args, shots), f"{shots}-shot timing"):
            continue
        sf, sm, qf, qv, _ = synthetic_episodes(POOL_TASKS, shots, valid_rows(args.grid),
                                               args.seed + shots, torch.device("cpu"),
                                               args.channels, args.grid)
        pool = (sf, sm, qf, qv)
        res = part.figures[f"{shots}-shot"] = _time_case(cfg, pool, args, device, main_gib,
                                                         part, shots)
        if device.type != "cuda":
            part.note("no host transfer and no chunk size to time on the CPU")
            continue
        if part.fits(transfer_case_s(args, shots), f"{shots}-shot timing from host memory"):
            res["with_transfer"] = _time_case(cfg, pool, args, device, main_gib, part, shots,
                                              pinned=True)
            release_memory()
        res["other_memory_budgets"] = {}
        for gib in other_gib:
            if part.fits(timing_case_s(args, shots), f"{shots}-shot timing at {gib:g} GiB"):
                res["other_memory_budgets"][f"{gib:g}"] = _time_case(cfg, pool, args, device,
                                                                     gib, part, shots)
                release_memory()


def _time_case(cfg: MethodConfig, pool: Sequence[torch.Tensor], args: argparse.Namespace,
               device: torch.device, memory_gib: float, part: Part, shots: int,
               pinned: bool = False) -> dict[str, Any]:
    """Time ``run_method`` on ``args.tasks`` tasks tiled from ``pool`` (on ``device``, or in
    pinned host memory and computed on ``device``) with chunks of ``memory_gib`` GiB."""
    memory = int(memory_gib * GIB)
    sf, sm, qf, qv = tile(pool, args.tasks, device, pinned)
    where = "pinned host memory" if pinned else f"{device} memory"
    repeats = min(args.repeats, TRANSFER_REPEATS) if pinned else args.repeats
    res = repeat_timed(lambda: run_method(cfg, sf, sm, qf, qv, device=device,
                                          memory_budget=memory),
                       repeats, device, part, f"{shots}-shot from {where}")
    res.update(tasks=args.tasks, shots=shots, features_in=where, pinned=sf.is_pinned(),
               memory_budget_gib=memory_gib,
               feature_gb=4 * feature_values(args.tasks, shots, args.channels, args.grid) / 1e9,
               chunk=default_chunk(sf, device, memory),
               tasks_per_s=args.tasks / res["seconds"],
               per_1000_s=1000 * res["seconds"] / args.tasks)
    part.say(f"{shots}-shot, features in {where}: {args.tasks} tasks in {res['seconds']:.3f} s "
             f"({res['tasks_per_s']:.0f} tasks/s, {res['per_1000_s']:.3f} s per 1000, goal "
             f"well under {GOAL_S_PER_1000:.0f} s; median of {len(res['repeats_s'])}; chunks "
             f"of {res['chunk']} tasks ({memory_gib:g} GiB budget); {res['feature_gb']:.1f} GB "
             f"of features; peak "
             f"{res['peak_mb'] / 1e3:.1f} GB more on the device)")
    return res


def time_extraction(args: argparse.Namespace, device: torch.device, part: Part) -> None:
    """Bottleneck features of random images, bf16 autocast then fp32, channels_last."""
    # fsstools.training takes seconds to import; the skip without CUDA needs none of it
    from fsstools.training.loop import Precision

    torch.manual_seed(args.seed)
    model = build_model(ModelConfig(arch=args.arch), N_CLASSES).to(device).eval()
    model = model.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(args.seed)
    size = args.image_size
    images = torch.randn(args.extract_batch, 3, size, size, generator=g)
    images = images.to(device).contiguous(memory_format=torch.channels_last)  # (B, 3, H, W)
    with torch.inference_mode():
        shape = tuple(model.extract_features(images[:1]).shape)  # (1, C, h, w)
    part.figures.update(arch=args.arch, image_size=size, batch=args.extract_batch,
                        channels_last=True, cudnn_benchmark=torch.backends.cudnn.benchmark,
                        feature_shape=list(shape[1:]))
    for amp in ("bf16", "fp32"):
        if not part.fits(extraction_images(args) / EXTRACT_IMAGES_PER_S, f"{amp} extraction"):
            continue
        precision = Precision.choose(amp, device)

        def forward(precision: Precision = precision) -> torch.Tensor:
            with torch.inference_mode(), precision.autocast(device):
                for _ in range(args.extract_batches):
                    # what features.extract stores: float32, L2-normalised over channels
                    feats = F.normalize(model.extract_features(images).float(), dim=1)
            return feats

        res = repeat_timed(forward, args.repeats, device, part, f"{amp} extraction")
        res["images_per_s"] = args.extract_batch * args.extract_batches / res["seconds"]
        part.figures[amp] = res
        part.say(f"{amp}: {res['images_per_s']:.1f} images/s at {size} px (batch "
                 f"{args.extract_batch}, median of {len(res['repeats_s'])} x "
                 f"{args.extract_batches} batches; features {list(shape[1:])})")


def random_segmentation_set(n: int, size: int, seed: int) -> TensorDataset:
    """``n`` random images (3, size, size) and masks (size, size) over :data:`N_CLASSES`
    classes, the top rows ignored as padding would be."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=g)
    masks = torch.randint(0, N_CLASSES, (n, size, size), generator=g)
    masks[:, : max(1, size // 50)] = IGNORE_INDEX
    return TensorDataset(images, masks)


def time_training(args: argparse.Namespace, device: torch.device, part: Part) -> None:
    """Training steps of the PASCAL recipe's model and optimiser through ``train_one_epoch``."""
    from fsstools.training import OptimConfig, train_one_epoch
    from fsstools.training.loop import Precision, build_optimizer, cosine_lambda

    torch.manual_seed(args.seed)
    model = build_model(ModelConfig(arch=args.arch), N_CLASSES).to(device)
    model = model.to(memory_format=torch.channels_last)
    optim_cfg = OptimConfig()
    optimizer = build_optimizer(model, optim_cfg)
    batch, steps = args.train_batch, args.train_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_lambda(TRAIN_WARMUP_STEPS + steps))
    precision = Precision.choose(TRAIN_AMP, device)
    scaler = torch.amp.GradScaler(device.type, enabled=False)  # bf16 needs no loss scaling
    data = random_segmentation_set((TRAIN_WARMUP_STEPS + steps) * batch, args.image_size,
                                   args.seed)
    images, masks = data.tensors
    cut = TRAIN_WARMUP_STEPS * batch

    def epoch(first: int, last: int) -> tuple[dict[str, float], float]:
        loader = DataLoader(TensorDataset(images[first:last], masks[first:last]),
                            batch_size=batch, drop_last=True, num_workers=0,
                            pin_memory=device.type == "cuda")
        synchronize(device)
        tic = time.perf_counter()
        stats = train_one_epoch(model, loader, optimizer, scheduler, scaler,
                                optim_cfg.label_smoothing, device, precision,
                                channels_last=True)
        synchronize(device)
        return stats, time.perf_counter() - tic

    # as fsstools.training.run does on CUDA: fixed input sizes, let cuDNN pick kernels
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = device.type == "cuda"
    try:
        _, warm_s = epoch(0, cut)
        per_step = warm_s / TRAIN_WARMUP_STEPS  # an upper bound: includes cuDNN's choosing
        fitting = int(part.budget.left() // per_step)
        if fitting < 1:
            raise Skip(f"one step takes about {per_step:.0f} s, "
                       f"{max(0.0, part.budget.left()):.0f} s left")
        if fitting < steps:
            part.note(f"timing {fitting} of {steps} steps: the rest would overrun the budget")
            steps = fitting
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        stats, seconds = epoch(cut, cut + steps * batch)
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    finally:
        torch.backends.cudnn.benchmark = benchmark
    res = part.figures
    res.update(arch=args.arch, image_size=args.image_size, batch=batch, steps=steps,
               amp=TRAIN_AMP, channels_last=True, optimizer=optim_cfg.name, warmup_s=warm_s,
               seconds=seconds, images_per_s=stats["images"] / seconds, loss=stats["loss"],
               peak_gb=peak / 1e9, ok=math.isfinite(stats["loss"]))
    part.say(f"{steps} steps of batch {batch} at {args.image_size} px, {TRAIN_AMP}: "
             f"{res['images_per_s']:.1f} images/s ({seconds / steps:.3f} s/step; loss "
             f"{stats['loss']:.3f}; peak {res['peak_gb']:.1f} GB)")


DDP_RUN_NAME = "gpu-check-ddp"
DDP_SET = {"n_train": 48, "n_val": 16, "size": 64}
"""The tiny generated dataset of the DDP run: images per split and their side in pixels."""


def ddp_overrides(root: Path, out_dir: Path, device: torch.device) -> list[str]:
    """``--set`` values of a one-epoch base training of a small PSPNet on the tiny set."""
    cuda = device.type == "cuda"
    size = DDP_SET["size"]
    return [
        "data.dataset=synth", f"data.root={root}", f"data.crop_size={size}",
        f"data.val_size={size}", "data.rotation=0.0",
        "model.arch=small", "model.widths=[16,32,32,32]", "model.stem_width=16",
        "model.bottleneck_dim=32",
        "optim.name=adamw", "optim.lr=0.002", f"optim.batch_size={4 * DDP_PROCESSES}",
        "run.epochs=1", f"run.out_dir={out_dir}", f"run.device={device.type}",
        f"run.amp={'bf16' if cuda else 'fp32'}", "run.workers=0", "run.preload=true",
        "run.progress=false", "run.val_batch_size=8",
        *([] if cuda else ["run.threads=1"]),
    ]


def ddp_command(config: Path, overrides: Sequence[str], processes: int) -> list[str]:
    """``python -m torch.distributed.run ... -m fsstools.training`` with one ``--set`` each."""
    sets = [arg for value in overrides for arg in ("--set", value)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={processes}", "-m", "fsstools.training",
            "--config", str(config), *sets]


def child_env(outputs: Path) -> dict[str, str]:
    """Environment of the torchrun processes: this fsstools importable, outputs (locks,
    caches) in the scratch folder, one OpenMP thread per process."""
    env = dict(os.environ)
    source = str(Path(fsstools.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    env["FSSTOOLS_OUTPUTS"] = str(outputs)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_process_group(cmd: Sequence[str], env: dict[str, str], timeout: float
                      ) -> tuple[int, str]:
    """Run ``cmd`` in a process group of its own; its exit status and its output.

    On timeout the whole group is killed (torchrun's ranks too, not only torchrun).
    """
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise RuntimeError(f"torchrun ran past {timeout:.0f} s and was killed; its output "
                           f"ended with:\n{out[-2000:]}") from None
    return proc.returncode, out


def check_ddp(args: argparse.Namespace, device: torch.device, part: Part) -> None:
    """Two processes base-train one epoch under torchrun; both must end with equal weights."""
    from fsstools.data.synthetic import SynthConfig, generate

    if device.type == "cuda" and torch.cuda.device_count() < DDP_PROCESSES:
        raise Skip(f"needs {DDP_PROCESSES} GPUs, found {torch.cuda.device_count()}")
    with tempfile.TemporaryDirectory(prefix="gpu_check_ddp_") as scratch:
        scratch = Path(scratch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its classes are too rare for 10-shot episodes
            generate(scratch / "synth", SynthConfig(**DDP_SET, styles=("A",)),
                     workers=min(4, os.cpu_count() or 1), progress=False)
        config = scratch / "ddp.yaml"
        config.write_text(f"run:\n  name: {DDP_RUN_NAME}\n")
        cmd = ddp_command(config, ddp_overrides(scratch / "synth" / "A", scratch / "runs", device),
                          DDP_PROCESSES)
        tic = time.perf_counter()
        code, out = run_process_group(cmd, child_env(scratch / "outputs"),
                                      min(DDP_TIMEOUT_S, max(1.0, part.budget.left())))
        seconds = time.perf_counter() - tic
        if code != 0:
            raise RuntimeError(f"torchrun exited with status {code}; its output ended with:\n"
                               f"{out[-3000:]}")
        runs = sorted((scratch / "runs").glob(f"{DDP_RUN_NAME}-*"))
        if len(runs) != 1 or not (runs[0] / "done").is_file():
            raise RuntimeError(f"expected one finished run under {scratch / 'runs'}, found "
                               f"{[r.name for r in runs]}")
        digests = json.loads((runs[0] / "done").read_text())["param_digests"]
    ok = len(digests) == DDP_PROCESSES and len(set(digests)) == 1
    backend = "nccl" if device.type == "cuda" else "gloo"
    part.say(f"{DDP_PROCESSES} processes ({backend}), one epoch in {seconds:.1f} s: ranks end "
             f"with {'the same' if ok else 'DIFFERENT'} weights {digests}")
    part.figures.update(processes=DDP_PROCESSES, backend=backend, seconds_torchrun=seconds,
                        param_digests=digests, ok=ok)


# ----------------------------------------------------------------------------- driver

PART_FUNCTIONS: dict[str, Callable[[argparse.Namespace, torch.device, Part], None]] = {
    "equality": check_equality,
    "inference": time_inference,
    "extraction": time_extraction,
    "training": time_training,
    "ddp": check_ddp,
}


def run_part(name: str, fn: Callable[[Part], None], estimate: float, budget: Budget
             ) -> dict[str, Any]:
    """Run one part unless its estimate overruns the budget; never raises an Exception.

    Args:
        name: the part's name (printed before its lines).
        fn: fills ``part.figures`` (and ``part.figures["ok"]`` where it checks something);
            raises :class:`Skip` when it cannot run here.
        estimate: its expected seconds.
        budget: the whole check's budget.

    Returns:
        ``status`` ("done", "skipped" or "error", then ``error``), the figures it measured
        (an error keeps those measured before it), ``part_s`` (its wall time) and ``notes``
        (what was skipped or failed, as printed).
    """
    part = Part(name, budget)
    start = budget.elapsed()
    status: dict[str, Any] = {"status": "done"}
    if not part.fits(estimate, "this part"):
        status = {"status": "skipped"}
    else:
        try:
            fn(part)
        except Skip as e:
            part.note(f"skipped: {e}")
            status = {"status": "skipped"}
        except Exception as e:  # one part failing must not cost the other parts' figures
            traceback.print_exc()
            part.note(f"FAILED: {type(e).__name__}: {e}")
            status = {"status": "error", "error": f"{type(e).__name__}: {e}"}
        release_memory()
    return {**status, **part.figures, "part_s": round(budget.elapsed() - start, 3),
            "notes": part.notes}


def passed(result: dict[str, Any]) -> bool:
    """A part passed unless it raised or a check of it failed (a skipped part passes)."""
    return result["status"] != "error" and result.get("ok", True) is not False


def write_report(path: Path | None, report: dict[str, Any]) -> None:
    if path is not None:
        atomic_write_text(path, json.dumps(report, indent=1) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    if args.device == "cuda" and not torch.cuda.is_available():
        line = (f"gpu_check: no CUDA device found (torch {torch.__version__}, CUDA build "
                f"{torch.version.cuda}); nothing checked")
        print(line, flush=True)
        write_report(args.json, {"tool": "bench/gpu_check", "settings": settings,
                                 "skipped": line})
        return 0
    device = (torch.device("cuda", torch.cuda.current_device()) if args.device == "cuda"
              else torch.device("cpu"))
    budget = Budget(args.budget_s)
    env = environment(device)
    report: dict[str, Any] = {"tool": "bench/gpu_check", "settings": settings, "env": env,
                              "parts": {}}
    memory = f", {env['memory_gib']:.1f} GiB" if "memory_gib" in env else ""
    print(f"gpu_check on {env['device_name']}{memory} ({env['device_count']} device(s)); torch "
          f"{env['torch']}, CUDA {env['cuda_build']}, cuDNN {env['cudnn']}, Python "
          f"{env['python']}, {env['cpu_count']} CPUs; budget {args.budget_s:.0f} s", flush=True)
    write_report(args.json, report)
    for name in args.parts:
        report["parts"][name] = run_part(
            name, lambda part, fn=PART_FUNCTIONS[name]: fn(args, device, part),
            estimate_s(name, args, device), budget)
        report["total_s"] = budget.elapsed()
        write_report(args.json, report)
    failed = [name for name, result in report["parts"].items() if not passed(result)]
    report["ok"] = not failed
    write_report(args.json, report)
    print(f"total {budget.elapsed():.1f} s of the {args.budget_s:.0f} s budget; "
          + (f"FAILED: {', '.join(failed)}" if failed else "all checks passed"), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
