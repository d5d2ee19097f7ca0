"""How a batch of tasks reaches the loop: input checks, chunks of tasks, blocks of pixels.

:func:`~fsstools.inference.loop.fit` runs on blocks of pixels; :func:`lay_out` lays a chunk
out as one block per task (small tasks, many to a chunk) or as one block per shot and one
for the query, streamed from where the features lie (a large task alone).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import torch

from fsstools.constants import IGNORE_INDEX
from fsstools.inference import classifier as clf
from fsstools.inference import losses
from fsstools.inference.config import MethodConfig

DEFAULT_MEMORY_BUDGET = 2 * 1024**3
"""Bytes of features per chunk on accelerators when the caller gives no budget."""

COPIES_PER_TASK = 3
"""Feature-sized buffers per task on an accelerator: the chunk moved there, plus transient
copies while it is prepared."""

CACHE_BYTES = 6 * 1024**2
"""Bytes of features per chunk on CPU where the cache's size is unknown, and the largest
task laid out with others: a larger one runs alone, streamed block by block
(:func:`lay_out`). A chunk's features are read twice per iteration, so they should stay in
cache; but each torch call costs microseconds whatever its size, so small tasks go faster in
larger chunks. Measured on the 2-core AMD EPYC (1 MiB L2 per core, 32 MiB shared L3, C=128
on 16x16): 4-8 MiB best, 2 MiB 1.3-1.6x and 16 MiB 1.4-2x slower."""

MAX_CHUNK_BYTES = 32 * 1024**2
"""The most bytes of features per chunk on CPU, however large the cache (see
:func:`chunk_bytes`)."""

CPU_CACHES = Path("/sys/devices/system/cpu/cpu0/cache")
"""Where Linux describes the first CPU's caches (one ``index*`` folder per cache)."""

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Block:
    """Pixels of B tasks read together, as feature columns: ``nq`` query pixels (all of the
    query or none), then support pixels.

    Attributes:
        f: (B, C, n) features: L2-normalised (a private copy) where ``r`` is None, else as
            they lie (often a view of the caller's tensor).
        r: (B, n) inverse feature norms, or None.
        nq: query pixels at the front of the block.
        fg: (B, n - nq) bool, True on foreground support pixels.
        weight_s: (B, n - nq) support pixel weights (valid / valid count of the whole support).
    """

    f: torch.Tensor
    r: torch.Tensor | None
    nq: int
    fg: torch.Tensor
    weight_s: torch.Tensor

    @property
    def has_support(self) -> bool:
        return self.f.shape[2] > self.nq


@dataclass
class Problem:
    """A chunk of B tasks laid out for :func:`~fsstools.inference.loop.fit`.

    Attributes:
        blocks: the query's pixels lie in the first block, the support's in any.
        weight_q: (B, Nq) query pixel weights (valid / valid count); every query pixel is kept.
        labels_q: (B, Nq) {0, 1, 255} query mask, or None.
        shots: S.
    """

    blocks: list[Block]
    weight_q: torch.Tensor
    labels_q: torch.Tensor | None
    shots: int


def check_inputs(
    cfg: MethodConfig,
    support_feats: torch.Tensor,
    support_masks: torch.Tensor,
    query_feats: torch.Tensor,
    query_valid: torch.Tensor,
    query_mask: torch.Tensor | None,
) -> None:
    """Shapes agree, every support has foreground, every query a valid pixel (else ValueError)."""
    if support_feats.dim() != 5:
        raise ValueError(f"support_feats must be (B, S, C, h, w), got {tuple(support_feats.shape)}")
    B, S, C, h, w = support_feats.shape
    if B == 0 or S == 0:
        raise ValueError(f"support_feats {tuple(support_feats.shape)} holds no task or no shot")
    expected = {
        "support_masks": (support_masks, (B, S, h, w)),
        "query_feats": (query_feats, (B, C, h, w)),
        "query_valid": (query_valid, (B, h, w)),
    }
    if query_mask is not None:
        expected["query_mask"] = (query_mask, (B, h, w))
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(tensor.shape)}")
    has_fg = (support_masks == 1).flatten(1).any(dim=1)
    if not bool(has_fg.all()):
        raise ValueError(clf.empty_support_message(int((~has_fg).nonzero()[0])))
    has_valid = query_valid.flatten(1).any(dim=1)
    if not bool(has_valid.all()):
        task = int((~has_valid).nonzero()[0])
        raise ValueError(f"task {task}: query_valid has no True pixel; check the padding mask")
    if cfg.prior == "oracle" and query_mask is None:
        raise ValueError(f"method {cfg.name!r} uses the oracle prior: pass query_mask")


def task_bytes(feats: torch.Tensor) -> int:
    """Bytes of one task's support and query features (B, S, C, h, w) in the compute dtype."""
    _, S, C, h, w = feats.shape
    itemsize = 8 if feats.dtype == torch.float64 else 4
    return (S + 1) * C * h * w * itemsize


def default_chunk(feats: torch.Tensor, device: torch.device, memory_budget: int | None) -> int:
    """Most tasks per chunk for features (B, S, C, h, w).

    On CPU 1 for a task above :data:`CACHE_BYTES` (it is streamed), else as many as
    :func:`chunk_bytes` holds; elsewhere what ``memory_budget`` bytes allow. It never depends
    on the worker count, so neither do the outputs; chunks of three tasks or more give a task
    the same bits whatever their size, one or two tasks the same to rounding.
    """
    per_task = task_bytes(feats)
    if device.type != "cpu":
        return max(1, (memory_budget or DEFAULT_MEMORY_BUDGET) // (per_task * COPIES_PER_TASK))
    if per_task > CACHE_BYTES:
        return 1
    return max(1, chunk_bytes() // per_task)


@lru_cache(maxsize=1)
def chunk_bytes() -> int:
    """Bytes of features per chunk of small tasks on this CPU.

    Each core's chunk takes at most half of that core's share of the last-level cache (its
    size over the CPUs sharing it, :func:`last_level_cache`), so the chunks that run side by
    side stay in it between their two reads per iteration,
    within [:data:`CACHE_BYTES`, :data:`MAX_CHUNK_BYTES`]: 8 MiB on the 2-core AMD EPYC
    (32 MiB L3), 32 MiB on the 2-core Intel Xeon (480 MiB L3), where Oracle-RePRI runs on the
    embedded benchmark's features 1.61x (1 shot) and 1.62x (5 shots) as fast as in 6 MiB
    chunks (``bench/chunks.py``). :data:`CACHE_BYTES` where the cache is not described.
    """
    cache = last_level_cache()
    if cache is None:
        return CACHE_BYTES
    size, sharers = cache
    return min(MAX_CHUNK_BYTES, max(CACHE_BYTES, size // sharers // 2))


def last_level_cache(caches: Path = CPU_CACHES) -> tuple[int, int] | None:
    """Bytes of the highest-level data cache of the first CPU and how many CPUs share it,
    from ``caches`` (Linux's ``/sys/devices/system/cpu/cpu0/cache``; all of this machine's
    CPUs where the sharing is not described); None where the cache is not described."""
    best: tuple[int, int, int] | None = None
    for index in sorted(caches.glob("index*")) if caches.is_dir() else []:
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            size = _bytes((index / "size").read_text().strip())
        except (OSError, ValueError):
            continue
        if kind != "Instruction" and (best is None or level > best[0]):
            best = (level, size, _cpus(index / "shared_cpu_list"))
    return None if best is None else best[1:]


def _cpus(path: Path) -> int:
    """CPUs in a list such as ``"0-7,64-71"``; all of this machine's where unreadable."""
    try:
        ranges = [r.split("-") for r in path.read_text().strip().split(",")]
        return max(1, sum(int(r[-1]) - int(r[0]) + 1 for r in ranges))
    except (OSError, ValueError):
        return max(1, os.cpu_count() or 1)


def _bytes(text: str) -> int:
    """``"491520K"``, ``"32M"`` or ``"1024"`` as bytes."""
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    if text and text[-1].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)


def spans(tasks: int, chunk: int) -> list[tuple[int, int]]:
    """``[start, end)`` of the fewest chunks of at most ``chunk`` tasks, sizes within 1."""
    n = -(-tasks // chunk)
    return [(i * tasks // n, (i + 1) * tasks // n) for i in range(n)]


def streams(feats: torch.Tensor, chunk: int) -> bool:
    """Whether chunks of ``chunk`` tasks are laid out streamed (a block per shot, where the
    features lie) rather than as one normalised copy (:func:`lay_out`).

    Streaming pays only for a task that runs alone and whose features exceed the cache:
    copying them would cost a pass over memory and as much memory again.
    """
    return chunk == 1 and task_bytes(feats) > CACHE_BYTES


def map_single_threaded(fn: Callable[[T], R], items: Sequence[T], workers: int | None) -> list[R]:
    """``[fn(x) for x in items]`` on ``workers`` threads, torch single-threaded meanwhile.

    Each chunk of tasks is a chain of matrix-vector products that one core runs at cache or
    memory speed; running chunks side by side uses the cores better than splitting each
    product.
    """
    workers = workers or torch.get_num_threads()
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if workers <= 1 or len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(fn, items))
    finally:
        torch.set_num_threads(previous)


def lay_out(
    support_feats: torch.Tensor,
    support_masks: torch.Tensor,
    query_feats: torch.Tensor,
    query_valid: torch.Tensor,
    query_mask: torch.Tensor | None,
    device: torch.device,
    dtype: torch.dtype,
    streamed: bool,
) -> Problem:
    """Move one chunk to ``device``/``dtype`` in one of two layouts.

    One block (``streamed=False``): a normalised copy ``x`` (B, C, Nq + S*h*w) of each
    task's query pixels followed by every shot's, so an iteration of the loop is two ``bmm``
    and element-wise work on (B, N) whatever B and S. Small tasks run this way, many to a
    chunk, so per-call overhead is shared.

    Streamed (``streamed=True``): one block for the query and one per shot, views of the
    caller's features (no normalised copy: dot products are scaled by inverse norms), with
    support pixels labelled 255 dropped for a single-task chunk since no term reads them.
    Each block is read once for the scores and, while still in cache, once for the
    gradient; that suits a large task run alone on a core (C=512, 53x53: ~11 MB a task).

    Args:
        support_feats: (B, S, C, h, w).
        support_masks: (B, S, h, w) {0, 1, 255}.
        query_feats: (B, C, h, w).
        query_valid: (B, h, w) bool.
        query_mask: (B, h, w) {0, 1, 255} or None.
        device: compute device.
        dtype: compute dtype.
        streamed: the layout.
    """
    B, S, C, h, w = support_feats.shape
    n = h * w
    masks = support_masks.to(device).reshape(B, S * n)  # (B, S*n)
    weight_s = losses.pixel_weights(masks != IGNORE_INDEX, dtype)
    weight_q = losses.pixel_weights(query_valid.to(device).reshape(B, n), dtype)
    labels = None if query_mask is None else query_mask.to(device).reshape(B, n)
    if not streamed:
        x = torch.empty(B, C, S + 1, n, device=device, dtype=dtype)
        x[:, :, 0].copy_(query_feats.reshape(B, C, n))
        x[:, :, 1:].copy_(support_feats.reshape(B, S, C, n).transpose(1, 2))  # (B, C, S, n)
        x = x.view(B, C, (S + 1) * n)  # (B, C, N)
        x.mul_(clf.inverse_norms(x).unsqueeze(1))
        return Problem([Block(x, None, n, masks == 1, weight_s)], weight_q, labels, S)
    fq = query_feats.to(device=device, dtype=dtype).reshape(B, C, n)
    blocks = [Block(fq, clf.inverse_norms(fq), n, masks[:, :0] == 1, weight_s[:, :0])]
    for shot in range(S):
        f = support_feats[:, shot].to(device=device, dtype=dtype).reshape(B, C, n)
        m, wt = masks[:, shot * n:(shot + 1) * n], weight_s[:, shot * n:(shot + 1) * n]
        if B == 1 and not bool((m != IGNORE_INDEX).all()):
            keep = (m[0] != IGNORE_INDEX).nonzero().squeeze(1)
            f, m, wt = f[:, :, keep], m[:, keep], wt[:, keep]
        blocks.append(Block(f, clf.inverse_norms(f), 0, m == 1, wt))
    return Problem(blocks, weight_q, labels, S)
