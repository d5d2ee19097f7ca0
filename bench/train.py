"""Base-training benchmark: step throughput, then time-to-train and base-class val mIoU.

    .venv/bin/python bench/train.py                 # CPU throughput + full synth fold-0 run
    .venv/bin/python bench/train.py --no-train      # throughput only (about 30 s)
    .venv/bin/python bench/train.py --json out.json # also write the figures as JSON

Throughput is for model steps on random tensors (forward, backward, SGD step), so it leaves
data loading out; the training run includes everything (loading, validation, checkpoints).
On a CUDA machine it also measures PSPNet-ResNet-50 at 417x417 with bf16 autocast. The
training run writes into a fresh temporary folder, so it never reuses a cached run.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from fsstools import config as config_lib
from fsstools.constants import IGNORE_INDEX
from fsstools.models import ModelConfig, build_model
from fsstools.training import TrainConfig, main, with_run

DEFAULT_CONFIG = "configs/synth/fold0.yaml"


def step_throughput(model_cfg: ModelConfig, n_classes: int, batch: int, size: int,
                    device: torch.device, dtype: torch.dtype | None = None,
                    channels_last: bool = False, steps: int = 10, warmup: int = 3) -> float:
    """Training images per second of forward + backward + SGD step on random inputs."""
    model = build_model(model_cfg, n_classes).to(device).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, n_classes, (batch, size, size), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, ignore_index=IGNORE_INDEX, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return batch * steps / (time.perf_counter() - start)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(config: str, train: bool, steps: int) -> dict:
    cfg = config_lib.load(TrainConfig, config)
    if cfg.run.threads is not None:
        torch.set_num_threads(cfg.run.threads)
    results: dict = {"config": config, "threads": torch.get_num_threads(),
                     "load_before": load_average()}
    cpu = torch.device("cpu")
    ips = step_throughput(cfg.model, 16, cfg.optim.batch_size, cfg.data.crop_size, cpu,
                          channels_last=cfg.run.channels_last, steps=steps)
    results["cpu_images_per_s"] = ips
    print(f"CPU {cfg.model.arch} {cfg.data.crop_size}px batch {cfg.optim.batch_size}, "
          f"{torch.get_num_threads()} threads: {ips:.1f} images/s (load {load_average()})")
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        r50 = ModelConfig(arch="resnet50")
        ips = step_throughput(r50, 16, 12, 417, gpu, torch.bfloat16, channels_last=True,
                              steps=steps)
        results["cuda_r50_417_bf16_images_per_s"] = ips
        print(f"CUDA {torch.cuda.get_device_name(gpu)} PSPNet-R50 417px batch 12 bf16: "
              f"{ips:.1f} images/s")
    if train:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            run_dir = main(with_run(cfg, out_dir=tmp, progress=False))
            seconds = time.perf_counter() - start
            metrics = pd.read_csv(run_dir / "metrics.csv")
        best = metrics.loc[metrics[f"val_{cfg.run.select_on}"].idxmax()]
        results.update(
            train_seconds=seconds,
            epochs=int(metrics["epoch"].max()),
            best_epoch=int(best["epoch"]),
            val_miou=float(best["val_miou"]),
            val_miou_fg=float(best["val_miou_fg"]),
            train_images_per_s=float(metrics["images_per_s"].mean()),
            load_after=load_average(),
        )
        print(f"train {config}: {seconds:.0f} s for {results['epochs']} epochs "
              f"({results['train_images_per_s']:.1f} images/s incl. loading); best epoch "
              f"{results['best_epoch']}: base-class val mIoU {results['val_miou']:.3f} "
              f"(with background), {results['val_miou_fg']:.3f} (base classes only); "
              f"load {load_average()}")
    return results


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--no-train", action="store_true", help="throughput only")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per throughput test")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    results = run(args.config, not args.no_train, args.steps)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
