"""Training curves in bf16 autocast against fp32, beside fp32's own seed-to-seed spread.

    .venv/bin/python bench/amp_curves.py                    # fold 0 of configs/synth/fold0.yaml
    .venv/bin/python bench/amp_curves.py --out outputs/bench/amp_curves   # also CSV, JSON, PNG

Trains the config's fold three times through the project's training entry (a run already in
``outputs/runs`` is reused, and says so): fp32 with the config's seed, fp32 with the next
seed, and bf16 autocast with the config's seed; memory layout, data and schedule as the
config says. It prints the validation mIoU and the training loss per epoch side by side,
then the largest per-epoch gap between bf16 and fp32 (same seed) next to the largest gap
between the two fp32 seeds. "Within noise" means bf16's gap is no larger than what a change
of seed alone moves; the last line is ``bf16_within_seed_noise=<yes|no>``.

Speed is bench/train.py's business; this script answers whether the faster precision (on a
CPU with AVX512-BF16, or a GPU) learns the same model.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from fsstools import config as config_lib
from fsstools import plots
from fsstools.errors import UserError
from fsstools.studies.report import save_figure, save_table
from fsstools.training import TrainConfig, TrainData, main, with_run

DEFAULT_CONFIG = "configs/synth/fold0.yaml"
REFERENCE, RESEED, BF16 = "fp32", "fp32, next seed", "bf16"
COLUMNS = ("train_loss", "val_miou")


def variants(cfg: TrainConfig) -> dict[str, TrainConfig]:
    """The three runs compared: fp32 at the config's seed, fp32 at the next, bf16 at the config's."""
    seed = cfg.run.seed
    return {
        REFERENCE: with_run(cfg, amp="fp32", seed=seed),
        RESEED: with_run(cfg, amp="fp32", seed=seed + 1),
        BF16: with_run(cfg, amp="bf16", seed=seed),
    }


@dataclass(frozen=True)
class Gaps:
    """Largest per-epoch absolute difference of one metric column (its own units)."""

    column: str
    bf16_vs_fp32: float
    seed_vs_seed: float

    @property
    def within_noise(self) -> bool:
        return self.bf16_vs_fp32 <= self.seed_vs_seed


def gaps(curves: dict[str, pd.DataFrame], column: str) -> Gaps:
    """Compare ``column`` of the bf16 and reseeded fp32 curves to the fp32 curve, epoch by epoch.

    Raises:
        ValueError: the runs have different epochs (a curve is incomplete).
    """
    ref = curves[REFERENCE].set_index("epoch")[column]
    for name, df in curves.items():
        if list(df["epoch"]) != list(ref.index):
            raise ValueError(f"run '{name}' has epochs {list(df['epoch'])}, the fp32 run "
                             f"{list(ref.index)}: finish every run before comparing")

    def largest(name: str) -> float:
        return float((curves[name].set_index("epoch")[column] - ref).abs().max())

    return Gaps(column, largest(BF16), largest(RESEED))


def side_by_side(curves: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per (variant, epoch) with the compared columns: the table saved and plotted."""
    rows = [df[["epoch", *COLUMNS]].assign(variant=name) for name, df in curves.items()]
    return pd.concat(rows, ignore_index=True)[["variant", "epoch", *COLUMNS]]


def run(cfg: TrainConfig, data: TrainData | None = None) -> tuple[pd.DataFrame, list[Gaps]]:
    """Train (or reuse) the three runs of ``cfg``; their curves and the gaps between them."""
    curves = {}
    for name, variant in variants(cfg).items():
        print(f"--- {name}: run.amp={variant.run.amp} run.seed={variant.run.seed}", flush=True)
        run_dir = main(variant, data)
        curves[name] = pd.read_csv(run_dir / "metrics.csv")
        print(f"    {run_dir}", flush=True)
    return side_by_side(curves), [gaps(curves, c) for c in COLUMNS]


def report(table: pd.DataFrame, found: list[Gaps]) -> str:
    """The printed comparison: curves side by side, the gaps, and the verdict line."""
    lines = []
    for column in COLUMNS:
        wide = table.pivot(index="epoch", columns="variant", values=column)
        wide = wide[[REFERENCE, RESEED, BF16]]
        lines.append(f"{column} per epoch:")
        lines.append(wide.to_string(float_format=lambda v: f"{v:.4f}"))
    for g in found:
        scale, unit = (100, " points") if g.column == "val_miou" else (1, "")
        lines.append(f"largest |{g.column} gap|: bf16 vs fp32 {scale * g.bf16_vs_fp32:.3f}{unit}, "
                     f"fp32 seed vs seed {scale * g.seed_vs_seed:.3f}{unit}")
    ok = all(g.within_noise for g in found)
    lines.append(f"bf16_within_seed_noise={'yes' if ok else 'no'}")
    return "\n".join(lines)


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="training YAML")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="config overrides, as for fsstools train")
    parser.add_argument("--out", type=Path, help="also write curves.csv, gaps.json, "
                        "config.yaml and amp_curves.png here")
    args = parser.parse_args(argv)
    try:
        cfg = config_lib.load(TrainConfig, args.config, args.set)
        table, found = run(cfg)
    except UserError as err:  # a wrong path or key, missing or stale data
        print(f"bench/amp_curves.py: {err}", file=sys.stderr)
        return 2
    print(report(table, found))
    if args.out:
        save_table(table, args.out, "curves")
        (args.out / "gaps.json").write_text(json.dumps(
            [asdict(g) | {"within_noise": g.within_noise} for g in found], indent=1) + "\n")
        config_lib.save_yaml(cfg, args.out / "config.yaml")
        save_figure(plots.training_curves(table, by="variant"), args.out, "amp_curves")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
