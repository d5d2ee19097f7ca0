"""The RePRI loop's second product, ``h = sum_x g_x f_x`` per task, in its two BLAS forms,
side by side in one process on the same tensors (CPU, one thread, as each chunk runs).

    .venv/bin/python bench/features_times.py

``column``: features (B, C, N) times g as a column (B, N, 1); ``row``: g as a row (B, 1, N)
times the transposed features (B, N, C), the form the loops use
(:func:`fsstools.inference.classifier.features_times`). Both read every feature once. For
each shape (a chunk of the embedded benchmark at 1 and 5 shots, and the paper's feature
size) it prints microseconds per call (median of rounds), the ratio, the largest difference
between the two, and whether each form gives a task the same bits in a batch as alone. The
last line is ``speedup=<x>``: column over row on the first shape.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

try:
    from bench.timing import load, machine
except ModuleNotFoundError:  # run as bench/features_times.py: bench/ itself is sys.path[0]
    from timing import load, machine

SHAPES = ((24, 128, 512), (8, 128, 1536), (4, 512, 2 * 53 * 53))
"""(tasks B, channels C, pixels N): chunks of the embedded benchmark's 6 MiB at 1 and 5
shots (C=128, 16x16), and of the paper's features at 1 shot (C=512, 53x53)."""


def column(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return torch.bmm(x, g.unsqueeze(1).transpose(1, 2)).squeeze(2)


def row(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return torch.bmm(g.unsqueeze(1), x.transpose(1, 2)).squeeze(1)


def micros(fn, x, g, calls: int) -> float:
    for _ in range(10):
        fn(x, g)
    tic = time.perf_counter()
    for _ in range(calls):
        fn(x, g)
    return (time.perf_counter() - tic) / calls * 1e6


def batch_invariant(fn, x, g) -> bool:
    alone = torch.cat([fn(x[i:i + 1], g[i:i + 1]) for i in range(x.shape[0])])
    return torch.equal(fn(x, g), alone)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200, help="calls per round")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(machine(torch.device("cpu")))
    print(f"[{load()}]")
    first = None
    for B, C, N in SHAPES:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(B, C, N, generator=gen)
        x = x / x.norm(dim=1, keepdim=True)
        g = torch.randn(B, N, generator=gen) / N
        times: dict[str, list[float]] = {"column": [], "row": []}
        for _ in range(args.rounds):
            times["column"].append(micros(column, x, g, args.calls))
            times["row"].append(micros(row, x, g, args.calls))
        col, rw = (statistics.median(times[k]) for k in ("column", "row"))
        diff = (column(x, g) - row(x, g)).abs().max().item()
        print(f"B={B} C={C} N={N}: column {col:.0f} us, row {rw:.0f} us, column/row "
              f"{col / rw:.2f}; max |difference| {diff:.1e}; same bits batched as alone: "
              f"column {batch_invariant(column, x, g)}, row {batch_invariant(row, x, g)}")
        first = first or col / rw
    print(f"[{load()}]")
    print(f"speedup={first:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
