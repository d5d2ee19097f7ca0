"""Process-level pieces of training: seeding, RNG state for exact resume, the
torch.distributed context (torchrun), and what precision this machine trains fastest in."""

from __future__ import annotations

import hashlib
import os
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from fsstools.errors import ConfigError


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """Seed of the data order and worker RNGs of one epoch: a pure function of its inputs, so
    a resumed run draws the very same batches as an uninterrupted one."""
    return (seed * 1_000_003 + epoch * 7919 + rank) % 2**63


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: torch seeds each worker; derive numpy/random from it."""
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


class InProcessLoader:
    """A DataLoader with ``num_workers=0`` whose samples draw their randomness from the
    streams its single worker process would have drawn from (torch seeded with the
    iterator's base seed, then :func:`seed_worker`), swapped in around each batch; so
    ``workers: 0`` trains on the very batches ``workers: 1`` gives, bit for bit, without a
    second process taking CPU time from the training threads (on 2 cores a worker beside
    two training threads costs more in preempted steps than it saves; the measurement is in
    docs/speed.md). This process's own random streams are left as they were.

    Args:
        loader: a DataLoader with ``num_workers=0``.
    """

    def __init__(self, loader: DataLoader) -> None:
        if loader.num_workers:
            raise ValueError("InProcessLoader takes a DataLoader with num_workers=0")
        self.loader = loader
        self.sampler = loader.sampler
        self.dataset = loader.dataset

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.loader)
        # the iterator has drawn the base seed from the loader's generator, as it does with
        # workers; worker 0 is seeded with it
        with _swapped_streams(_own_streams()) as streams:
            torch.manual_seed(it._base_seed)
            seed_worker(0)
        while True:
            with _swapped_streams(streams) as streams:
                batch = next(it, None)
            if batch is None:
                return
            yield batch


Streams = tuple[Any, Any, torch.Tensor]
"""Python's, numpy's and torch's (CPU) random states."""


def _own_streams() -> Streams:
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


@contextmanager
def _swapped_streams(streams: Streams) -> Iterator[list]:
    """Run the block on ``streams``, then put this process's back. Yields a list the block's
    end fills: ``[python, numpy, torch]`` as the block left them."""
    own = _own_streams()
    out: list = []
    random.setstate(streams[0])
    np.random.set_state(streams[1])
    torch.set_rng_state(streams[2])
    try:
        yield out
    finally:
        out.extend(_own_streams())
        random.setstate(own[0])
        np.random.set_state(own[1])
        torch.set_rng_state(own[2])


def rng_state() -> dict[str, Any]:
    """This process's RNG states in a form ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``rng_state``."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state({
        "bit_generator": "MT19937",
        "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
        "has_gauss": np_state["has_gauss"],
        "gauss": np_state["gauss"],
    })  # fmt: skip
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str) -> torch.device:
    """``run.device`` as a torch device ("auto": CUDA if there is one, else the CPU).

    Raises:
        ConfigError: not a device name, or a CUDA device this machine does not have.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"run.device={name!r} is not a torch device; use auto, cpu, cuda or "
                          "cuda:<index>", key="run.device") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = device.index or 0
        if index >= count:
            raise ConfigError(f"run.device={name!r} but this machine has {count} CUDA "
                              "device(s); use --set run.device=cpu (or auto)", key="run.device")
    return device


def init_distributed(device: str) -> DistContext:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on CUDA, gloo on CPU)."""
    dev = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(0, 1, dev)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), dev)


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.distributed:
        dist.all_reduce(t)
    return t


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def param_digest(model: nn.Module) -> str:
    """Hash of all parameter values (replicas of one DDP run must agree on it)."""
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
"""CPU flags (as /proc/cpuinfo spells them) of instructions that compute in bf16 natively;
without them bf16 autocast is emulated and slower than fp32."""


def native_bf16_flags(cpu_flags: str) -> tuple[str, ...]:
    """Which of :data:`BF16_CPU_FLAGS` appear in ``cpu_flags`` (whitespace-separated flags,
    e.g. the text of /proc/cpuinfo); empty when none does.

    Example:
        >>> native_bf16_flags("flags : avx2 avx512f avx512_bf16")
        ('avx512_bf16',)
    """
    present = set(cpu_flags.split())
    return tuple(flag for flag in BF16_CPU_FLAGS if flag in present)


def read_cpu_flags() -> str:
    """The ``flags`` lines of /proc/cpuinfo; "" off Linux or where it cannot be read."""
    if not sys.platform.startswith("linux"):
        return ""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    return "\n".join(line for line in text.splitlines() if line.startswith("flags"))


def auto_amp(device: torch.device) -> tuple[str, str]:
    """What ``run.amp: auto`` means on ``device``, and why.

    "bf16" on a CUDA device with native bf16 (compute capability 8 or later, or ROCm) and on
    a CPU with AVX512-BF16 or AMX-BF16; "fp32" anywhere else.

    Returns:
        ("bf16" or "fp32", the reason in a few words, e.g. "this CPU has AVX512-BF16").
    """
    if device.type == "cuda":
        with torch.cuda.device(device):
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        name = torch.cuda.get_device_name(device)
        return ("bf16", f"{name} has bf16") if native else ("fp32", f"{name} has no native bf16")
    if device.type == "cpu":
        found = native_bf16_flags(read_cpu_flags())
        if found:
            names = " and ".join(flag.upper().replace("_", "-") for flag in found)
            return "bf16", f"this CPU has {names}"
        return "fp32", "this CPU has neither AVX512-BF16 nor AMX-BF16"
    return "fp32", f"no bf16 detection for {device.type} devices"
