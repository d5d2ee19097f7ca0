"""Training steps fed by the config's DataLoader: one worker process against loading in the
training process (``run.workers`` 1 and 0), side by side in one process.

    .venv/bin/python bench/loader.py                        # configs/synth/fold0.yaml
    .venv/bin/python bench/loader.py --steps 40 --rounds 5 --set optim.batch_size=8

Each variant runs ``--steps`` training steps of the config's model, precision and layout on
the real training batches (preloaded images, the config's augmentation), after 3 untimed
ones; the variants alternate for ``--rounds`` rounds so that a load change hits both alike,
and medians are quoted. Both variants draw the very same batches
(:class:`~fsstools.training.runtime.InProcessLoader`); the script checks that on the first
batches before timing. The last line is ``speedup=<x>``: in-process over one worker.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from fsstools import config as config_lib
from fsstools.constants import IGNORE_INDEX
from fsstools.errors import UserError
from fsstools.models import build_model
from fsstools.training import TrainConfig, build_data
from fsstools.training.epoch import Precision, resolve_precision
from fsstools.training.runtime import InProcessLoader, seed_worker

try:
    from bench.timing import load, machine
except ModuleNotFoundError:  # run as bench/loader.py: bench/ itself is sys.path[0]
    from timing import load, machine

DEFAULT_CONFIG = "configs/synth/fold0.yaml"
WARMUP_STEPS = 3


def loader(data, batch: int, workers: int, seed: int):
    """The training loader as training builds it, with ``workers`` worker processes."""
    generator = torch.Generator().manual_seed(seed)
    sampler = torch.utils.data.RandomSampler(data.train, generator=generator)
    plain = torch.utils.data.DataLoader(data.train, batch_size=batch, sampler=sampler,
                                        drop_last=True, num_workers=workers,
                                        worker_init_fn=seed_worker, generator=generator)
    return plain if workers else InProcessLoader(plain)


def same_batches(data, batch: int, n: int) -> bool:
    """Whether the first ``n`` batches of both variants are equal, bit for bit."""
    pairs = zip(loader(data, batch, 1, 0), loader(data, batch, 0, 0), strict=False)
    for _, (a, b) in zip(range(n), pairs, strict=False):
        if not all(torch.equal(x, y) for x, y in zip(a, b, strict=True)):
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="training YAML")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. optim.batch_size=8")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per variant")
    args = parser.parse_args(argv)
    try:
        cfg = config_lib.load(TrainConfig, args.config, args.set)
        device = torch.device("cpu")
        cfg = resolve_precision(cfg, device)[0]
        data = build_data(cfg.data, True)
    except UserError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    if cfg.run.threads is not None:
        torch.set_num_threads(cfg.run.threads)
    print(machine(device))
    batch = cfg.optim.batch_size
    print(f"same batches from both variants (first 5): {same_batches(data, batch, 5)}")
    torch.manual_seed(0)
    fmt = torch.channels_last if cfg.run.channels_last else torch.contiguous_format
    model = build_model(cfg.model, data.n_classes).to(memory_format=fmt).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    precision = Precision.choose(cfg.run.amp, device)

    def images_per_s(workers: int, seed: int) -> float:
        source = loader(data, batch, workers, seed)
        it = (b for _ in iter(int, 1) for b in source)  # epoch after epoch
        tic = n = 0
        for i in range(WARMUP_STEPS + args.steps):
            if i == WARMUP_STEPS:
                tic = time.perf_counter()
            x, y = next(it)[:2]
            with precision.autocast(device):
                logits = model(x.contiguous(memory_format=fmt))
            loss = F.cross_entropy(logits.float(), y, ignore_index=IGNORE_INDEX,
                                   label_smoothing=cfg.optim.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += x.shape[0] if i >= WARMUP_STEPS else 0
        return n / (time.perf_counter() - tic)

    rates: dict[str, list[float]] = {"1 worker process": [], "in process": []}
    print(f"[{load()}] {args.rounds} rounds of {args.steps} steps, batch {batch}, "
          f"{cfg.run.amp}{'+channels_last' if cfg.run.channels_last else ''}, "
          f"{torch.get_num_threads()} threads")
    for r in range(args.rounds):
        rates["1 worker process"].append(images_per_s(1, r))
        rates["in process"].append(images_per_s(0, r))
    for name, values in rates.items():
        print(f"  {name:<18} {statistics.median(values):6.1f} images/s  "
              f"({' '.join(f'{v:.0f}' for v in values)})")
    speedup = statistics.median(rates["in process"]) / statistics.median(
        rates["1 worker process"])
    print(f"[{load()}]")
    print(f"speedup={speedup:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
