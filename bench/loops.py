"""The two cosine-classifier loops side by side: the general one and the one-block one.

:func:`fsstools.inference.loop.fit` runs any number of pixel blocks per task;
:func:`fsstools.inference.stacked.fit_one_block` runs the one-block layout (what small tasks
get) with buffers made once. This script lays out the same synthetic episodes
(``bench/inference.py``'s) as one block per task, runs both loops through the same chunking
and worker threads (:func:`fsstools.inference.dispatch.fit_chunks`), alternating them call
by call, and prints the median tasks/s of each, their ratio and how far their outputs are
apart. The last line is ``general_over_one_block=<ratio>``.

    python bench/loops.py --channels 128 --grid 16 --shots 1 --tasks 400
    python bench/loops.py --shots 5 --tasks 20 --method oracle_repri
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fsstools.inference import METHODS, layout, loop, resolve_method, stacked
from fsstools.inference.dispatch import fit_chunks

try:
    from bench.inference import CHANNELS, GRID, synthetic_episodes
    from bench.timing import load, open_device
except ModuleNotFoundError:  # run as bench/loops.py: bench/ itself is sys.path[0]
    from inference import CHANNELS, GRID, synthetic_episodes
    from timing import load, open_device


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shots", type=int, default=1)
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=7, help="timed calls of each loop")
    ap.add_argument("--method", default="repri", choices=sorted(METHODS))
    ap.add_argument("--channels", type=int, default=CHANNELS, help="feature channels C")
    ap.add_argument("--grid", type=int, default=GRID, help="feature grid side h = w")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    device = open_device("cpu", ap.prog)
    cfg = resolve_method(args.method)
    if cfg.classifier != "cosine":
        ap.error(f"--method {args.method} is not fitted by these loops (a peer's own head)")
    sf, sm, qf, qv, qm = synthetic_episodes(args.tasks, args.shots, args.grid, args.seed,
                                            device, args.channels, args.grid)
    chunk = layout.default_chunk(sf, device, None)
    print(f"{args.tasks} tasks, {args.shots}-shot, C={args.channels}, "
          f"{args.grid}x{args.grid}, {cfg.name}, {cfg.steps} steps, chunks of {chunk} tasks, "
          f"torch threads={torch.get_num_threads()}")

    def run(fit):
        return fit_chunks(fit, cfg, sf, sm, qf, qv, qm, False, chunk=chunk, device=device,
                          streamed=False)

    loops = {"general": loop.fit, "one-block": stacked.fit_one_block}
    outs = {name: run(fit) for name, fit in loops.items()}  # warm-up
    walls: dict[str, list[float]] = {name: [] for name in loops}
    print(f"[{load()}] timing ...", flush=True)
    for _ in range(args.repeats):
        for name, fit in loops.items():
            t0 = time.perf_counter()
            outs[name] = run(fit)
            walls[name].append(time.perf_counter() - t0)
    rates = {name: args.tasks / statistics.median(w) for name, w in walls.items()}
    for name, r in rates.items():
        print(f"{name:>9} loop: {r:9.1f} tasks/s (median of {args.repeats})")
    a, b = outs["general"], outs["one-block"]
    diff = (a.logits - b.logits).abs().max().item()
    agree = ((a.logits > 0) == (b.logits > 0)).double().mean().item()
    ratio = rates["general"] / rates["one-block"]
    print(f"general / one-block: {ratio:.2f}; max |logit difference| {diff:.2e}; predictions "
          f"agree on {100 * agree:.4f}% of query pixels  [{load()}]")
    print(f"general_over_one_block={ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
