"""Commands over grids of runs: ``sweep`` (submitit jobs, local or SLURM) and ``gather``."""

from __future__ import annotations

import argparse
from pathlib import Path

from fsstools.cli.common import add_set, at_least, new_parser
from fsstools.errors import ConfigError


def _add_metric(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metric", help="column to plot (default: miou, else the first numeric one)")


def sweep_parser() -> argparse.ArgumentParser:
    from fsstools.jobs.sweep import EXECUTORS, Resources

    d = Resources()
    p = new_parser("sweep", "Run a notebook or an eval config once per point of a grid as "
                   "submitit jobs (local or SLURM) into <outputs>/sweeps/NAME/, reusing finished "
                   "points, then fsstools gather; a --set value may name a grid key in braces, "
                   "e.g. train_config=configs/synth/fold{fold}.yaml.")
    p.add_argument("notebook", nargs="?", type=Path,
                   help="notebook file, or the prefix of a numbered notebook, e.g. 03 (or --eval)")
    p.add_argument("--eval", type=Path, metavar="CONFIG",
                   help="evaluation config to sweep instead of a notebook")
    p.add_argument("--grid", nargs="+", action="extend", default=[], metavar="KEY=[V1, V2]",
                   help="values to sweep, a YAML list (repeatable; the points are the product "
                   "of the lists; a list parameter takes a list of lists: shots=[[1],[5]])")
    add_set(p)
    p.add_argument("--executor", choices=EXECUTORS, default=d.executor, help="local: processes "
                   "on this machine; slurm: one job array; debug: one point after another in "
                   "this process")
    p.add_argument("--jobs", type=at_least(1), metavar="N", help="points running at once "
                   "(default: 1 locally, all of them on SLURM)")
    p.add_argument("--slurm-partition", metavar="P", help="SLURM partition (default: the cluster's)")
    p.add_argument("--slurm-gpus", type=at_least(0), default=d.gpus, metavar="G",
                   help="GPUs per SLURM job")
    p.add_argument("--slurm-cpus", type=at_least(1), metavar="C",
                   help="CPUs per SLURM job (default: the cluster's)")
    p.add_argument("--slurm-time", type=at_least(1), default=d.time_min, metavar="MIN",
                   help="time limit per SLURM job, in minutes")
    p.add_argument("--name", help="the sweep's folder under <outputs>/sweeps (default: the "
                   "notebook or config name and the grid keys)")
    _add_metric(p)
    p.add_argument("--force", action="store_true", help="run finished points again")
    return p


def run_sweep(args: argparse.Namespace) -> int:
    from fsstools.jobs import sweep, sweep_plan
    if (args.notebook is None) == (args.eval is None):
        raise ConfigError("give a NOTEBOOK or --eval CONFIG, one of them")
    target = sweep_plan.make_target(args.notebook, args.eval, args.set)
    res = sweep.Resources(args.executor, args.jobs, args.slurm_partition, args.slurm_gpus,
                          args.slurm_cpus, args.slurm_time)
    done = sweep.run_sweep(target, sweep_plan.parse_grid(args.grid), args.name, res,
                           args.force, args.metric)
    return 1 if done.failed else 0


def gather_parser() -> argparse.ArgumentParser:
    p = new_parser("gather", "Gather a sweep's points into table.csv (every point's rows with the "
                   "grid values as columns), table.md and a figure of a metric against the first "
                   "grid key; a point that did not finish is listed with the end of its log.")
    p.add_argument("folder", type=Path, help="the sweep's folder, e.g. outputs/sweeps/NAME")
    _add_metric(p)
    p.add_argument("--table", default="summary.csv", help="the CSV each point wrote")
    return p


def run_gather(args: argparse.Namespace) -> int:
    from fsstools.jobs.gather import gather

    done = gather(args.folder, args.metric, args.table)
    print(done.markdown.read_text())
    return 1 if done.failed else 0
