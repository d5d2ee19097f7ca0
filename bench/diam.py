"""Speed of DIaM's generalized inference: the fast path against the straight autograd loop.

The autograd loop is the tests' reference (``tests/reference_diam.py``: the authors' loop,
one query at a time). Generates one synthetic support set (``--novel`` classes, one object
of one novel class per image, as the authors' protocol) shared by ``--queries`` queries, at
the reference feature size by default (C=512, 53x53 grid for 417x417 images; ``--small``:
C=128 on 16x16), runs both implementations on the same tensors in this process, alternating
them each repeat, and prints their median wall and CPU seconds, the ratio, and how far
apart their probabilities are. The last line is ``speedup=<ratio of medians>``.

    python bench/diam.py --shots 1 5
    python bench/diam.py --shots 1 --iterations 20 --repeats 3
    python bench/diam.py --small --shots 1 5 --repeats 5

Time scales with ``--iterations`` for both paths (one pass each per step); both run on
``--threads`` torch threads (default 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import statistics
import time
from pathlib import Path

import torch

from fsstools.inference.generalized import GFSS_METHODS, run_gfss

try:
    from bench.timing import cpu_name, load
except ModuleNotFoundError:  # run as bench/diam.py: bench/ itself is sys.path[0]
    from timing import cpu_name, load

REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "reference_diam.py"
FULL, SMALL = (512, 53), (128, 16)


def synthetic_task(queries: int, shots: int, n_base: int, n_novel: int, channels: int,
                   grid: int, valid_rows: int, seed: int) -> tuple:
    """A base classifier, one support set and ``queries`` queries whose pixels lean towards
    their class's direction, so that both the fit and the teacher have work to do.

    Returns:
        base_weight (1 + n_base, C), base_bias (1 + n_base,), support_feats
        (1, n_novel * shots, C, h, w), support_labels (1, S, h, w), query_feats (B, C, h, w),
        query_valid (B, h, w), query_labels (B, h, w); rows from ``valid_rows`` on are padding.
    """
    g = torch.Generator().manual_seed(seed)
    n_bg, K = 1 + n_base, 1 + n_base + n_novel
    direction = torch.rand(K, channels, generator=g)  # (K, C)
    lo, hi = max(1, grid // 6), max(2, grid // 2)

    def boxes(count: int, classes: list[list[int]]) -> torch.Tensor:
        lab = torch.zeros(count, grid, grid, dtype=torch.long)
        for i, cls in enumerate(classes):
            for c in cls:
                y, x = torch.randint(0, max(1, valid_rows - lo), (2,), generator=g).tolist()
                hh, ww = torch.randint(lo, hi, (2,), generator=g).tolist()
                lab[i, y:y + hh, x:x + ww] = c
        lab[:, valid_rows:] = 255
        return lab

    def feats(lab: torch.Tensor) -> torch.Tensor:
        f = torch.randn(lab.shape[0], channels, grid, grid, generator=g)
        f += 1.5 * direction[lab.clamp(max=K - 1)].permute(0, 3, 1, 2)
        return f.relu_()

    S = n_novel * shots
    base_of = torch.randint(1, n_bg, (S,), generator=g).tolist()
    s_true = boxes(S, [[base_of[i], n_bg + i // shots] for i in range(S)])
    sf = feats(s_true).unsqueeze(0)
    sl = torch.where((s_true > 0) & (s_true < n_bg), 0, s_true).unsqueeze(0)  # base -> 0
    picks = torch.randint(1, K, (queries, 3), generator=g).tolist()
    ql = boxes(queries, picks)
    qf = feats(ql)
    qv = torch.ones(queries, grid, grid, dtype=torch.bool)
    qv[:, valid_rows:] = False
    unit = direction[:n_bg] / direction[:n_bg].norm(dim=1, keepdim=True)
    wb = 0.5 * unit
    bb = -(wb @ direction.mean(dim=0))  # centred base logits
    return wb, bb, sf, sl, qf, qv, ql


def reference_runner():
    """``run_reference`` of ``tests/reference_diam.py`` (the tests are not a package)."""
    spec = importlib.util.spec_from_file_location("reference_diam", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run_reference


def clock(fn) -> tuple[float, float, object]:
    """Wall and process CPU seconds of one call, and its output."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--queries", type=int, default=16)
    ap.add_argument("--base", type=int, default=15, help="base classes (plus background)")
    ap.add_argument("--novel", type=int, default=5, help="novel classes")
    ap.add_argument("--small", action="store_true", help=f"C={SMALL[0]} on {SMALL[1]}x{SMALL[1]}")
    ap.add_argument("--channels", type=int, default=None, help=f"default {FULL[0]}")
    ap.add_argument("--grid", type=int, default=None, help=f"grid side, default {FULL[1]}")
    ap.add_argument("--valid-rows", type=int, default=None,
                    help="grid rows that are not padding (default all; 40 of 53: a 4:3 image)")
    ap.add_argument("--method", default="diam", choices=sorted(GFSS_METHODS))
    ap.add_argument("--iterations", type=int, default=None, help="default the method's (100)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    channels, grid = SMALL if args.small else FULL
    channels, grid = args.channels or channels, args.grid or grid
    valid_rows = grid if args.valid_rows is None else args.valid_rows
    if not 2 <= valid_rows <= grid:
        ap.error(f"--valid-rows {valid_rows} must lie in [2, --grid {grid}]")
    torch.set_num_threads(args.threads)
    cfg = GFSS_METHODS[args.method]
    if args.iterations is not None:
        cfg = dataclasses.replace(cfg, iterations=args.iterations)
    run_reference = reference_runner()
    print(f"cpu: {cpu_name()}, {torch.get_num_threads()} torch threads; torch "
          f"{torch.__version__}")
    print(f"{cfg.name}, {cfg.iterations} iterations, {args.queries} queries sharing one support "
          f"set, {args.base} base + {args.novel} novel classes, C={channels}, {grid}x{grid}, "
          f"valid rows {valid_rows}, {args.repeats} repeats (median)")
    header = (f"{'shots':>5} {'fast s':>8} {'ref s':>8} {'speedup':>8} {'cpu x':>6} "
              f"{'fast ms/q/it':>12} {'max|dprob|':>10} {'argmax agree':>12}  load")
    print(header, flush=True)
    ratio = float("nan")
    for shots in args.shots:
        data = synthetic_task(args.queries, shots, args.base, args.novel, channels, grid,
                              valid_rows, args.seed)
        wb, bb, sf, sl, qf, qv, ql = data

        def fast(c=cfg, wb=wb, bb=bb, sf=sf, sl=sl, qf=qf, qv=qv, ql=ql):
            return run_gfss(c, wb, bb, sf, sl, qf, qv, args.novel, ql)

        def ref(c=cfg, wb=wb, bb=bb, sf=sf, sl=sl, qf=qf, qv=qv, ql=ql):
            return run_reference(c, wb, bb, sf, sl, qf, qv, args.novel, ql)

        warm = dataclasses.replace(cfg, iterations=1)
        fast(warm), ref(warm)  # allocator pools and MKL kernels, untimed
        times: dict[str, list[tuple[float, float]]] = {"fast": [], "ref": []}
        for _ in range(args.repeats):
            wall, cpu, out_fast = clock(fast)
            times["fast"].append((wall, cpu))
            wall, cpu, out_ref = clock(ref)
            times["ref"].append((wall, cpu))
        med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
               for k, v in times.items()}
        ratio = med["ref"][0] / med["fast"][0]
        diff = (out_fast.probs - out_ref.probs).abs().max().item()
        agree = (out_fast.logits.argmax(1) == out_ref.logits.argmax(1)).double().mean().item()
        per = 1e3 * med["fast"][0] / (args.queries * max(cfg.iterations, 1))
        print(f"{shots:>5} {med['fast'][0]:8.2f} {med['ref'][0]:8.2f} {ratio:7.2f}x "
              f"{med['ref'][1] / med['fast'][1]:5.2f}x {per:12.2f} {diff:10.2e} "
              f"{100 * agree:11.4f}%  [{load()}]", flush=True)
    print(f"speedup={ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
