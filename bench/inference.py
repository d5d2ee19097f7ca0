"""Speed of transductive inference: the fast path against the straightforward autograd loop.

The autograd loop is the tests' reference (``tests/reference_repri.py``).

Generates synthetic episodes, by default at the reference feature size (C=512, 53x53 grid
for 417x417 images, float32; ``--channels``/``--grid`` for others, e.g. the embedded
synthetic benchmark's C=128 on 16x16), runs both implementations on the same tensors in
this process and prints tasks/s (median over repeats), peak memory, the speed ratio, how
far apart the outputs are, and the load average. The last line is
``tasks/s=<fast implementation>``.

    python bench/inference.py --shots 1 --tasks 50
    python bench/inference.py --shots 5 --tasks 20 --repeats 3
    python bench/inference.py --shots 1 --tasks 500 --device cuda
    python bench/inference.py --channels 128 --grid 16 --shots 5 --tasks 400

Upsampling to 417x417 is left out of the timed loop for both implementations.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
from pathlib import Path

import torch

from fsstools.inference import METHODS, resolve_method, run_method

try:
    from bench.timing import load, open_device, timed
except ModuleNotFoundError:  # run as bench/inference.py: bench/ itself is sys.path[0]
    from timing import load, open_device, timed

CHANNELS, GRID = 512, 53
REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "reference_repri.py"


def synthetic_episodes(
    tasks: int,
    shots: int,
    valid_rows: int,
    seed: int,
    device: torch.device,
    channels: int = CHANNELS,
    grid: int = GRID,
) -> tuple[torch.Tensor, ...]:
    """Episodes whose foreground pixels share a class direction, so the fit has work to do.

    Returns:
        support_feats (B, S, C, h, w), support_masks (B, S, h, w), query_feats (B, C, h, w),
        query_valid (B, h, w), query_mask (B, h, w); rows from ``valid_rows`` on are padding.
    """
    g = torch.Generator().manual_seed(seed)
    B, S, C, n = tasks, shots, channels, grid
    # object boxes scale with the grid (8..28 pixels of 53 at the reference size)
    lo, hi = max(1, round(8 * n / GRID)), max(2, round(28 * n / GRID))
    margin = min(valid_rows - 1, max(1, round(12 * n / GRID)))
    direction = torch.rand(B, 1, C, 1, 1, generator=g)  # (B, 1, C, 1, 1)

    def masks(count: int) -> torch.Tensor:
        m = torch.zeros(B, count, n, n, dtype=torch.long)
        for b in range(B):
            for s in range(count):
                y, x = torch.randint(0, valid_rows - margin, (2,), generator=g).tolist()
                hh, ww = torch.randint(lo, hi, (2,), generator=g).tolist()
                m[b, s, y:y + hh, x:x + ww] = 1
        m[:, :, valid_rows:] = 255
        return m

    def feats(m: torch.Tensor) -> torch.Tensor:
        f = torch.randn(B, m.shape[1], C, n, n, generator=g)
        f += 1.5 * direction * (m == 1).unsqueeze(2)
        return f.relu_()

    sm, qm = masks(S), masks(1)
    sf, qf = feats(sm), feats(qm).squeeze(1)
    qm = qm.squeeze(1)
    qv = torch.ones(B, n, n, dtype=torch.bool)
    qv[:, valid_rows:] = False
    return tuple(t.to(device) for t in (sf, sm, qf, qv, qm))


def reference_runner():
    """``run_reference`` of ``tests/reference_repri.py`` (the tests are not a package)."""
    spec = importlib.util.spec_from_file_location("reference_repri", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run_reference


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shots", type=int, default=1)
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--method", default="repri", choices=sorted(METHODS))
    ap.add_argument("--reference", action="store_true", help="reference-compatible variant")
    ap.add_argument("--channels", type=int, default=CHANNELS, help="feature channels C")
    ap.add_argument("--grid", type=int, default=GRID, help="feature grid side h = w")
    ap.add_argument("--valid-rows", type=int, default=None,
                    help="grid rows that are not padding (default all; 40 of 53: a 4:3 image)")
    ap.add_argument("--workers", type=int, default=None, help="CPU worker threads (fast path)")
    ap.add_argument("--skip-straightforward", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    valid_rows = args.grid if args.valid_rows is None else args.valid_rows
    if not 2 <= valid_rows <= args.grid:
        ap.error(f"--valid-rows {valid_rows} must lie in [2, --grid {args.grid}]")

    device = open_device(args.device, ap.prog)
    cfg = resolve_method(args.method, reference=args.reference)
    sf, sm, qf, qv, qm = synthetic_episodes(args.tasks, args.shots, valid_rows, args.seed,
                                            device, args.channels, args.grid)
    print(f"{args.tasks} tasks, {args.shots}-shot, C={args.channels}, {args.grid}x{args.grid}, "
          f"{cfg.name}{' (reference)' if cfg.reference else ''}, {cfg.steps} steps, "
          f"device={device}, torch threads={torch.get_num_threads()}, "
          f"valid rows={valid_rows}")

    def fast():
        return run_method(cfg, sf, sm, qf, qv, qm, workers=args.workers)

    run_reference = reference_runner()

    def straightforward():
        return run_reference(cfg, sf, sm, qf, qv, qm, chunk_size=args.tasks)

    print(f"[{load()}] fast ...", flush=True)
    t_fast, c_fast, mem_fast, out_fast = timed(fast, args.repeats, device)
    rate_fast = args.tasks / statistics.median(t_fast)
    print(f"fast:            {rate_fast:8.2f} tasks/s  "
          f"{1e3 * statistics.median(c_fast) / args.tasks:8.1f} CPU ms/task  "
          f"peak {mem_fast:8.1f} MB  [{load()}]", flush=True)
    if not args.skip_straightforward:
        t_ref, c_ref, mem_ref, out_ref = timed(straightforward, args.repeats, device)
        rate_ref = args.tasks / statistics.median(t_ref)
        print(f"straightforward: {rate_ref:8.2f} tasks/s  "
              f"{1e3 * statistics.median(c_ref) / args.tasks:8.1f} CPU ms/task  "
              f"peak {mem_ref:8.1f} MB  [{load()}]")
        diff = (out_fast.logits - out_ref.logits).abs().max().item()
        agree = ((out_fast.logits > 0) == (out_ref.logits > 0)).double().mean().item()
        print(f"speed-up {rate_fast / rate_ref:.2f}x; max |logit difference| {diff:.2e}; "
              f"predictions agree on {100 * agree:.4f}% of query pixels; "
              f"max |pi difference| {(out_fast.pi - out_ref.pi).abs().max().item():.2e}")
    print(f"tasks/s={rate_fast:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
