"""What bounds an iteration of the RePRI loop on CPU: reading the chunk's features.

    .venv/bin/python bench/bandwidth.py

An iteration of the one-block loop (:func:`fsstools.inference.stacked.fit_one_block`) reads
the chunk's features twice: ``bmm`` for the scores ``w . f`` and ``bmm`` for
``h = sum_x g_x f_x``; the rest is element-wise work on (B, N). For a chunk of the embedded
benchmark's features at 1 and 5 shots (C=128, 16x16) as large as this CPU's budget makes it
(:func:`fsstools.inference.layout.default_chunk`) and as the fixed 6 MiB made it, laid out as
the loop gets it, this script times, in one process on the same tensors, one thread (as each
chunk runs):

- an iteration of the loop (Oracle-RePRI's 300 steps, the main job's largest inference);
- the two products in float32, and their share of the iteration;
- ``x.sum()``, which reads the same bytes and computes next to nothing: the rate at which
  the cache delivers them;
- the two products on bfloat16 copies of the features, the prototype and the gradient, and
  how far the bfloat16 scores are from the float32 ones, in logits (``tau`` times the
  cosines).

Medians over rounds. The last line is ``bf16_over_fp32=<x>``: the bfloat16 products' time
over the float32 products' on the first chunk (above 1: bfloat16 is slower).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from fsstools.inference import layout, resolve_method, stacked

try:
    from bench.inference import synthetic_episodes
    from bench.timing import load, machine
except ModuleNotFoundError:  # run as bench/bandwidth.py: bench/ itself is sys.path[0]
    from inference import synthetic_episodes
    from timing import load, machine

SHOTS = (1, 5)
CHANNELS, GRID = 128, 16
METHOD = "oracle_repri"


def micros(fn: Callable[[], object], calls: int) -> float:
    """Microseconds per call of ``fn`` over ``calls`` calls, after a few untimed ones."""
    for _ in range(3):
        fn()
    tic = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - tic) / calls * 1e6


def chunks(channels: int, grid: int) -> list[tuple[int, int]]:
    """(tasks, shots) of a chunk under this CPU's budget and under the fixed 6 MiB."""
    out = []
    for shots in SHOTS:
        probe = torch.empty(1, shots, channels, grid, grid, device="meta")
        for budget in dict.fromkeys((layout.chunk_bytes(), layout.CACHE_BYTES)):
            out.append((max(1, budget // layout.task_bytes(probe)), shots))
    return out


def measure(tasks: int, shots: int, args: argparse.Namespace) -> float:
    """Print one chunk's figures; return the bfloat16 products' time over float32's."""
    cpu = torch.device("cpu")
    cfg = resolve_method(METHOD)
    sf, sm, qf, qv, qm = synthetic_episodes(tasks, shots, args.grid, 0, cpu, args.channels,
                                            args.grid)
    problem = layout.lay_out(sf, sm, qf, qv, qm, cpu, torch.float32, streamed=False)
    x = problem.blocks[0].f  # (B, C, N), normalised: what the loop reads
    B, C, N = x.shape
    gen = torch.Generator().manual_seed(0)
    w = torch.nn.functional.normalize(torch.randn(B, 1, C, generator=gen), dim=2)
    g = torch.randn(B, 1, N, generator=gen) / N
    dots, h = torch.empty(B, 1, N), torch.empty(B, 1, C)
    xb, wb, gb = x.bfloat16(), w.bfloat16(), g.bfloat16()
    x_t, xb_t = x.transpose(1, 2), xb.transpose(1, 2)
    timings: dict[str, list[float]] = {k: [] for k in ("iteration", "fp32", "sum", "bf16")}
    for _ in range(args.rounds):
        tic = time.perf_counter()
        stacked.fit_one_block(cfg, problem, False)
        timings["iteration"].append((time.perf_counter() - tic) / (cfg.steps + 1) * 1e6)
        timings["fp32"].append(micros(lambda: (torch.bmm(w, x, out=dots),
                                               torch.bmm(g, x_t, out=h)), args.calls))
        timings["sum"].append(micros(x.sum, args.calls))
        timings["bf16"].append(micros(lambda: (torch.bmm(wb, xb), torch.bmm(gb, xb_t)),
                                      args.calls))
    it, fp32, total, bf16 = (statistics.median(timings[k])
                             for k in ("iteration", "fp32", "sum", "bf16"))
    mb = x.numel() * x.element_size() / 1e6
    error = (cfg.tau * (torch.bmm(wb, xb).float() - torch.bmm(w, x))).abs().max().item()
    print(f"{tasks} tasks x {shots} shot(s), C={C}, N={N} ({mb:.1f} MB): iteration {it:.0f} us "
          f"({it / tasks:.1f} us a task); the two float32 products {fp32:.0f} us "
          f"({100 * fp32 / it:.0f}% of it, {2 * mb / fp32 * 1e3:.1f} GB/s); x.sum() {total:.0f} "
          f"us ({mb / total * 1e3:.1f} GB/s); bfloat16 products {bf16:.0f} us "
          f"({bf16 / fp32:.2f}x float32), scores up to {error:.3f} logits off")
    return bf16 / fp32


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=50, help="calls per round of a product")
    parser.add_argument("--channels", type=int, default=CHANNELS, help="feature channels C")
    parser.add_argument("--grid", type=int, default=GRID, help="feature grid side h = w")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(machine(torch.device("cpu")))
    print(f"[{load()}] {METHOD}; this CPU's chunk budget "
          f"{layout.chunk_bytes() / 1024**2:.0f} MiB, the fixed one "
          f"{layout.CACHE_BYTES / 1024**2:.0f} MiB")
    ratios = [measure(tasks, shots, args) for tasks, shots in chunks(args.channels, args.grid)]
    print(f"[{load()}]")
    print(f"bf16_over_fp32={ratios[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
