"""Base-training benchmark: fp32 against the config's precision and layout, side by side.

    .venv/bin/python bench/train.py                   # steps + data loading (about a minute)
    .venv/bin/python bench/train.py --train           # also a full run of the config's fold
    .venv/bin/python bench/train.py --json out.json   # also write the figures as JSON
    .venv/bin/python bench/train.py --device cuda --config configs/pascal/fold0.yaml \
        --set model.pretrained=null --no-loader       # PSPNet-ResNet-50 steps on a GPU

Step throughput is forward + backward + optimiser step of the config's model on random
tensors of the training batch shape, timed for each variant in turn (fp32 contiguous, the
config's choice, and the other two combinations of bf16 autocast and channels_last),
several rounds interleaved so that a load change hits all variants alike; medians are
quoted. ``--compile`` adds the config's variant with the model under ``torch.compile`` (its
warm-up, printed beside each variant, holds the compilation). Data throughput is the training DataLoader's images/s with images decoded from disk
and decoded once into memory (``run.preload``). The last line is ``speedup=<x>``: the
config's steps over fp32 contiguous steps. ``--device cuda`` times the steps on the GPU
(cuDNN autotuning on, as training does); ``--no-loader`` leaves out the data loading, which
needs the config's images on disk.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from fsstools import config as config_lib
from fsstools.constants import IGNORE_INDEX
from fsstools.errors import UserError
from fsstools.models import build_model
from fsstools.training import TrainConfig, build_data, main, with_run
from fsstools.training.epoch import Precision, resolve_precision

try:
    from bench.timing import load, open_device, rate, timed, warm_up
except ModuleNotFoundError:  # run as bench/train.py: bench/ itself is sys.path[0]
    from timing import load, open_device, rate, timed, warm_up

DEFAULT_CONFIG = "configs/synth/fold0.yaml"
WARMUP_STEPS = 3


def make_step(cfg: TrainConfig, amp: str, channels_last: bool, device: torch.device,
              compiled: bool = False, n_classes: int = 16):
    """A closure running one training step of ``cfg``'s model on ``device`` with the given
    precision and memory layout (``compiled``: the model under ``torch.compile``)."""
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(cfg.model, n_classes).to(device, memory_format=fmt).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    if compiled:
        model = torch.compile(model)
    batch, size = cfg.optim.batch_size, cfg.data.crop_size
    x = torch.randn(batch, 3, size, size).to(device).contiguous(memory_format=fmt)
    y = torch.randint(0, n_classes, (batch, size, size)).to(device)
    precision = Precision.choose(amp, device)

    def step() -> None:
        with precision.autocast(device):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, ignore_index=IGNORE_INDEX, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def step_rates(cfg: TrainConfig, variants: dict[str, tuple[str, bool, bool]], steps: int,
               rounds: int, device: torch.device) -> tuple[dict[str, float], dict[str, float]]:
    """Images/s of each variant over the median of ``rounds`` interleaved rounds of
    ``steps`` steps, after :data:`WARMUP_STEPS` untimed ones, and each variant's warm-up
    seconds (a compiled model's compilation among them)."""
    fns = {name: make_step(cfg, amp, layout, device, compiled)
           for name, (amp, layout, compiled) in variants.items()}
    warm: dict[str, float] = {}
    for name, fn in fns.items():
        tic = time.perf_counter()
        warm_up(fn, WARMUP_STEPS, device)
        warm[name] = time.perf_counter() - tic

    def round_of(fn):
        return lambda: [fn() for _ in range(steps)]

    seconds: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            seconds[name] += timed(round_of(fn), 1, device, warmup=0)[0]
    return {name: rate(cfg.optim.batch_size * steps, s) for name, s in seconds.items()}, warm


def loader_rate(cfg: TrainConfig, preload: bool, batches: int) -> float:
    """Training DataLoader images/s (decoded from disk, or from memory with ``preload``)."""
    data = build_data(cfg.data, preload)
    loader = torch.utils.data.DataLoader(data.train, batch_size=cfg.optim.batch_size,
                                         shuffle=True, num_workers=cfg.run.workers,
                                         drop_last=True)
    it = iter(loader)
    next(it)  # workers started
    tic = time.perf_counter()
    n = 0
    for _ in range(batches):
        n += next(it)[0].shape[0]
    return n / (time.perf_counter() - tic)


def run(cfg: TrainConfig, config: str, device: torch.device, train: bool, loader: bool,
        steps: int, rounds: int, compiled: bool = False) -> dict:
    cfg = resolve_precision(cfg, device)[0]  # run.amp "auto" as training reads it
    if cfg.run.threads is not None and device.type == "cpu":
        torch.set_num_threads(cfg.run.threads)
    torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed shapes, as training does
    chosen = f"{cfg.run.amp}{'+channels_last' if cfg.run.channels_last else ''}"
    variants = {"fp32": ("fp32", False, False), "fp32+channels_last": ("fp32", True, False),
                "bf16": ("bf16", False, False), "bf16+channels_last": ("bf16", True, False)}
    if compiled:
        variants[f"{chosen}+compile"] = (cfg.run.amp, cfg.run.channels_last, True)
    results: dict = {"config": config, "device": str(device), "threads": torch.get_num_threads(),
                     "chosen": chosen, "load_before": load()}
    rates, warm = step_rates(cfg, variants, steps, rounds, device)
    results["step_images_per_s"] = rates
    results["warm_up_s"] = warm
    print(f"steps of {cfg.model.arch} at {cfg.data.crop_size}px, batch {cfg.optim.batch_size}, "
          f"on {device}, {torch.get_num_threads()} threads (median of {rounds} rounds of "
          f"{steps} steps):")
    for name, r in rates.items():
        mark = "  <- config" if name == chosen else ""
        print(f"  {name:<28} {r:7.1f} images/s  {r / rates['fp32']:.2f}x  "
              f"(warm-up {warm[name]:.1f} s){mark}")
    for preload in (False, True) if loader else ():
        r = loader_rate(cfg, preload, batches=30)
        results[f"loader_images_per_s_preload_{preload}"] = r
        print(f"data loading ({cfg.run.workers} worker(s)), preload={preload}: {r:.0f} images/s")
    if train:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            run_dir = main(with_run(cfg, out_dir=tmp, progress=False, device=str(device)))
            seconds = time.perf_counter() - start
            metrics = pd.read_csv(run_dir / "metrics.csv")
        val = metrics["val_miou"].to_numpy()
        results.update(train_seconds=seconds, epochs=len(metrics), val_miou=val.tolist(),
                       last_epoch_gain_points=100 * float(val[-1] - val[-2]))
        print(f"train {config}: {seconds:.0f} s for {len(metrics)} epochs; val mIoU per epoch "
              f"{' '.join(f'{v:.3f}' for v in val)}; last-epoch gain "
              f"{results['last_epoch_gain_points']:+.2f} points")
    results["load_after"] = load()
    results["speedup"] = rates[chosen] / rates["fp32"]
    print(f"{results['load_before']} before, {results['load_after']} after")
    print(f"speedup={results['speedup']:.2f}")
    return results


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="training YAML")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. model.pretrained=null")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="where the steps run (cuda: exit 2 without a CUDA device)")
    parser.add_argument("--train", action="store_true", help="also time a full training run")
    parser.add_argument("--no-loader", action="store_true",
                        help="leave out the data loading (it reads the config's images)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per variant")
    parser.add_argument("--compile", action="store_true",
                        help="also the config's variant with the model under torch.compile")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    try:
        cfg = config_lib.load(TrainConfig, args.config, args.set)
        device = open_device(args.device, parser.prog)
        results = run(cfg, args.config, device, args.train, not args.no_loader, args.steps,
                      args.rounds, args.compile)
    except UserError as err:  # a wrong path or key, missing data or weights
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
