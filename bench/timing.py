"""What every bench script times with: the device, the machine's name, warm-up, timed
repeats (synchronised on CUDA), peak memory, medians and the load average.

    device = open_device(args.device, parser.prog)   # prints the machine; exit 2 without CUDA
    walls, cpus, peak_mb, out = timed(fn, repeats=3, device=device)
    print(f"{rate(tasks, walls):.1f} tasks/s  [{load()}]")
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

CPUINFO = Path("/proc/cpuinfo")
CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")
GIB = 1024**3


def cpu_name(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's model name (as ``lscpu`` shows it), else what ``platform`` knows."""
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> str:
    """One line naming what the figures were measured on: the GPU (when ``device`` is
    CUDA), the CPU, its torch threads and the torch build."""
    host = f"{cpu_name()}, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs"
    if device.type != "cuda":
        return f"device cpu: {host}; torch {torch.__version__}"
    props = torch.cuda.get_device_properties(device)
    return (f"device {device}: {props.name}, {props.total_memory / GIB:.1f} GiB; host {host}; "
            f"torch {torch.__version__}, CUDA {torch.version.cuda}")


def open_device(name: str, prog: str) -> torch.device:
    """The device ``--device`` names ("cpu" or "cuda"), after printing :func:`machine`.

    Exits with status 2 and one message on stderr when CUDA is asked for but absent.
    """
    if name == "cuda" and not torch.cuda.is_available():
        print(f"{prog}: error: --device cuda, but torch {torch.__version__} (CUDA build "
              f"{torch.version.cuda}) finds no CUDA device here; run on a machine with a GPU, "
              f"or pass --device cpu", file=sys.stderr)
        raise SystemExit(2)
    device = torch.device(name)
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    print(machine(device), flush=True)
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA runs asynchronously; the CPU does not)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_kb(field: str) -> int:
    for line in STATUS.read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


class PeakMemory:
    """Peak memory of a block above what was in use when it started, in MB (``.mb``):
    allocated CUDA memory on a GPU, the resident set size on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        elif CLEAR_REFS.exists():
            CLEAR_REFS.write_text("5")  # resets the peak resident set size (VmHWM)
            self.base = _rss_kb("VmRSS:") * 1024
        else:
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif CLEAR_REFS.exists():
            peak = _rss_kb("VmHWM:") * 1024
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.mb = max(0, peak - self.base) / 1e6


def warm_up(fn: Callable[[], object], calls: int, device: torch.device) -> None:
    """Call ``fn`` untimed ``calls`` times: allocator pools, cuBLAS/cuDNN and oneDNN
    kernel choices, CUDA's lazy initialisation."""
    for _ in range(calls):
        fn()
    synchronize(device)


def timed(fn: Callable[[], object], repeats: int, device: torch.device, warmup: int = 1
          ) -> tuple[list[float], list[float], float, object]:
    """Wall and process CPU seconds of ``repeats`` calls after ``warmup`` untimed ones,
    the peak memory of the timed calls (MB, see :class:`PeakMemory`), the last output.

    Each call is timed between two synchronisations of ``device``. CPU time (all threads)
    is less sensitive than wall time to other jobs on a shared machine.
    """
    warm_up(fn, warmup, device)
    walls, cpus, out = [], [], None
    with PeakMemory(device) as mem:
        for _ in range(repeats):
            synchronize(device)
            t0, c0 = time.perf_counter(), time.process_time()
            out = fn()
            synchronize(device)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
    return walls, cpus, mem.mb, out


def rate(count: float, seconds: Sequence[float]) -> float:
    """``count`` items over the median of ``seconds`` (one entry per repeat)."""
    return count / statistics.median(seconds)


def load() -> str:
    """The load average (1, 5, 15 minutes): how busy the machine was while timing."""
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())
