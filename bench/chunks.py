"""Chunks of small tasks on CPU: the fixed 6 MiB against the budget sized to this CPU's cache.

    .venv/bin/python bench/chunks.py
    .venv/bin/python bench/chunks.py --shots 5 --tasks 256

:func:`fsstools.inference.run_method` lays small tasks out many to a chunk and runs the
chunks side by side on worker threads. This script runs the same synthetic episodes
(``bench/inference.py``'s, at the embedded benchmark's C=128 on 16x16) in batches of 256
tasks, as the notebooks' scoring does, under several chunk budgets, alternating them round
by round, and prints each one's median tasks/s and whether its logits are bit for bit those
of the first. The budgets: the fixed :data:`fsstools.inference.layout.CACHE_BYTES` (6 MiB),
16 and 24 MiB, and :func:`fsstools.inference.layout.chunk_bytes` (this CPU's). The last line
is ``speedup=<x>``: this CPU's budget over 6 MiB.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Iterator

import torch

from fsstools.inference import METHODS, layout, resolve_method, run_method

try:
    from bench.inference import synthetic_episodes
    from bench.timing import load, machine
except ModuleNotFoundError:  # run as bench/chunks.py: bench/ itself is sys.path[0]
    from inference import synthetic_episodes
    from timing import load, machine

BATCH = 256
"""Tasks per call of run_method, as :func:`fsstools.evaluation.scoring.score_episodes`."""
MIB = 1024**2


@contextlib.contextmanager
def budget(nbytes: int) -> Iterator[None]:
    """run_method's default chunks hold at most ``nbytes`` of features meanwhile."""
    chunk_bytes = layout.chunk_bytes
    layout.chunk_bytes = lambda: nbytes
    try:
        yield
    finally:
        layout.chunk_bytes = chunk_bytes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", default="oracle_repri", choices=sorted(METHODS))
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--tasks", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--channels", type=int, default=128, help="feature channels C")
    parser.add_argument("--grid", type=int, default=16, help="feature grid side h = w")
    args = parser.parse_args(argv)
    cfg = resolve_method(args.method)
    if cfg.classifier != "cosine":
        parser.error(f"--method {args.method} has no chunks (a peer's own head)")
    cpu = torch.device("cpu")
    print(machine(cpu))
    sf, sm, qf, qv, qm = synthetic_episodes(args.tasks, args.shots, args.grid, 0, cpu,
                                            args.channels, args.grid)
    per_task = layout.task_bytes(sf)
    here = layout.chunk_bytes()
    print(f"{args.tasks} tasks, {args.shots}-shot, C={args.channels}, {args.grid}x{args.grid}, "
          f"{cfg.name}, {per_task / MIB:.2f} MiB a task, batches of {BATCH}; last-level cache "
          f"{(layout.last_level_cache() or (0, 0))[0] / MIB:.0f} MiB, this CPU's budget "
          f"{here / MIB:.0f} MiB; {torch.get_num_threads()} workers")
    if per_task > layout.CACHE_BYTES:
        parser.error(f"a task of {per_task / MIB:.1f} MiB runs alone, streamed: no chunks")
    runs = {"6 MiB": layout.CACHE_BYTES, "16 MiB": 16 * MIB, "24 MiB": 24 * MIB,
            f"this CPU's {here / MIB:.0f} MiB": here}

    def score() -> torch.Tensor:
        return torch.cat([run_method(cfg, sf[a:a + BATCH], sm[a:a + BATCH], qf[a:a + BATCH],
                                     qv[a:a + BATCH], query_mask=qm[a:a + BATCH]).logits
                          for a in range(0, args.tasks, BATCH)])

    rates: dict[str, list[float]] = {name: [] for name in runs}
    logits: dict[str, torch.Tensor] = {}
    print(f"[{load()}] timing ...", flush=True)
    for _ in range(args.rounds):
        for name, nbytes in runs.items():
            with budget(nbytes):
                tic = time.perf_counter()
                logits[name] = score()
                rates[name].append(args.tasks / (time.perf_counter() - tic))
    first = next(iter(runs))
    for name, r in rates.items():
        chunk = min(max(1, runs[name] // per_task), BATCH, args.tasks)
        same = torch.equal(logits[name], logits[first])
        print(f"{name:>17}: chunks of <= {chunk:3d} tasks, {statistics.median(r):7.1f} tasks/s "
              f"(median of {args.rounds}); same bits as the first: {same}")
    speedup = statistics.median(rates[list(runs)[-1]]) / statistics.median(rates[first])
    print(f"[{load()}]")
    print(f"speedup={speedup:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
