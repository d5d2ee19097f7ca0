"""Our scores beside the RePRI paper's: the published numbers as data, our per-fold scores
with their intervals, and the comparison table ``fsstools paper-check`` prints and writes.

The published numbers (ResNet-50, mIoU in %, per fold and the mean over folds, as the README
of the authors' repository reports them) live in ``configs/paper/repri_resnet50.csv``, for
PASCAL-5i, COCO-20i and COCO -> PASCAL. Our methods map to the paper's rows by
:data:`PAPER_ROWS`; any other method is shown without a paper number.

Our score of a fold is the authors' report: per run (one seeded list of tasks), IoU summed
per class over the run's tasks, mIoU the mean over the fold's classes (background excluded),
then the mean over runs. The 95% interval resamples each run's tasks on its own (the runs
are independent task lists) with the project's one bootstrap
(:func:`fsstools.evaluation.stats.fold_mean`); the mean over folds resamples every run of
every fold on its own.

Example:
    >>> paper_numbers("pascal").query("method == 'repri' and shots == 1")["miou"].tolist()
    [60.2, 67.0, 61.7, 47.5, 59.1]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fsstools import paths
from fsstools.data import splits
from fsstools.errors import ConfigError
from fsstools.evaluation import stats
from fsstools.studies.report import label, markdown_table

BENCHMARKS = ("pascal", "coco", "coco_to_pascal")
"""What the paper reports: PASCAL-5i, COCO-20i and COCO-trained models tested on PASCAL."""
PAPER_ROWS = {"repri": "repri", "repri_reference": "repri", "oracle_repri": "oracle"}
"""Our method -> the paper's row it reproduces: RePRI as the paper's text describes it and as
the authors' code runs it; Oracle-RePRI in the authors' oracle configuration."""
PAPER_NAMES = {"repri": "RePRI", "oracle": "Oracle-RePRI"}
MEAN = "mean"
"""The ``fold`` of the mean over the four folds."""
INTERVAL = "episodes, each run resampled on its own"
"""What the intervals of :func:`ours_table` resample."""


def paper_file() -> Path:
    """The published numbers, ``configs/paper/repri_resnet50.csv``."""
    return paths.configs_dir() / "paper" / "repri_resnet50.csv"


def paper_numbers(benchmark: str) -> pd.DataFrame:
    """The paper's mIoU (%) on ``benchmark``.

    Returns:
        Rows: method ("repri" or "oracle"), shots, fold ("0".."3" or "mean"), miou.

    Raises:
        ConfigError: ``benchmark`` is not one of :data:`BENCHMARKS`.
    """
    if benchmark not in BENCHMARKS:
        raise ConfigError(f"the paper reports {', '.join(BENCHMARKS)}, not {benchmark!r}",
                          key="dataset")
    table = pd.read_csv(paper_file(), comment="#", dtype={"fold": str})
    table = table[table["benchmark"] == benchmark].drop(columns="benchmark")
    return table.reset_index(drop=True)


def _runs(rows: pd.DataFrame) -> tuple[pd.Series, int]:
    """Each row's run (0, 1, ... in seed order) and the number of runs, which every method,
    shot count and fold must share (else a mean over runs compares unlike things)."""
    seeds = sorted(rows["seed"].unique())
    per_group = rows.groupby(["method", "shots", "fold"])["seed"].nunique()
    if (per_group != len(seeds)).any():
        short = per_group[per_group != len(seeds)].index.tolist()
        raise ValueError(f"every method, shot count and fold needs the runs (seeds) {seeds}; "
                         f"{short} lack some")
    return rows["seed"].map({s: i for i, s in enumerate(seeds)}), len(seeds)


def ours_table(rows: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Our mIoU per method, shot count and fold, and the mean over folds when all four are
    there, each with its 95% interval (see the module docstring).

    Args:
        rows: per-episode rows of :func:`fsstools.evaluation.pipeline.score` (method, fold,
            shots, seed, episode and the IoU records) of one or more folds.
        n_boot: bootstrap resamples.
        seed: the bootstrap's seed.

    Returns:
        Rows: method, shots, fold ("0".."3" or "mean"), n_runs, n_episodes (per run and
        fold), miou, miou_low, miou_high (fractions), interval.
    """
    run, n_runs = _runs(rows)
    # fold_mean averages independent strata (its "fold" column) and resamples each one on its
    # own; here a stratum is one run of one fold.
    per_fold = stats.fold_mean(rows.rename(columns={"fold": "split"}).assign(fold=run),
                               by=("method", "shots", "split"), n_boot=n_boot, seed=seed)
    per_fold = per_fold.rename(columns={"split": "fold"})
    frames = [per_fold]
    if set(rows["fold"]) == set(range(splits.N_FOLDS)):
        strata = rows.assign(fold=rows["fold"] * n_runs + run)
        frames.append(stats.fold_mean(strata, by=("method", "shots"), n_boot=n_boot, seed=seed)
                      .assign(fold=MEAN))
    out = pd.concat(frames, ignore_index=True)
    out["fold"] = out["fold"].astype(str)
    out["n_runs"] = n_runs
    per_run = rows.groupby(["method", "shots", "fold"]).size() / n_runs  # tasks of one run
    per_run = per_run.rename(index=str, level="fold")
    means = per_run.groupby(["method", "shots"]).mean().to_frame().assign(fold=MEAN)
    sizes = pd.concat([per_run.reset_index(), means.reset_index()], ignore_index=True)
    out = out.merge(sizes.rename(columns={0: "n_episodes"}), on=["method", "shots", "fold"])
    out["n_episodes"] = out["n_episodes"].round().astype(int)
    out["interval"] = INTERVAL
    order = {f: i for i, f in enumerate([*map(str, range(splits.N_FOLDS)), MEAN])}
    out = out.sort_values(["method", "shots", "fold"], key=lambda c: c.map(order)
                          if c.name == "fold" else c, kind="stable")
    methods = list(dict.fromkeys(rows["method"]))  # the order the methods were asked in
    out = out.sort_values("method", key=lambda c: c.map(methods.index), kind="stable")
    columns = ["method", "shots", "fold", "n_runs", "n_episodes", "miou", "miou_low",
               "miou_high", "interval"]
    return out[columns].reset_index(drop=True)


def compare(ours: pd.DataFrame, benchmark: str) -> pd.DataFrame:
    """:func:`ours_table` beside the paper's numbers.

    Returns:
        Rows of ``ours`` with: benchmark, paper_method, ours, ours_low, ours_high (%),
        paper (%, NaN where the paper has no such row), difference (ours - paper, points)
        and paper_inside (whether the paper's number lies in our interval; NA without one).
    """
    paper = paper_numbers(benchmark).rename(columns={"method": "paper_method", "miou": "paper"})
    table = ours.assign(benchmark=benchmark, paper_method=ours["method"].map(PAPER_ROWS))
    table = table.merge(paper, how="left", on=["paper_method", "shots", "fold"])
    for name in ("", "_low", "_high"):
        table[f"ours{name}"] = 100 * table[f"miou{name}"]
    table["difference"] = table["ours"] - table["paper"]
    inside = (table["ours_low"] <= table["paper"]) & (table["paper"] <= table["ours_high"])
    table["paper_inside"] = inside.astype("boolean").where(table["paper"].notna(), pd.NA)
    columns = ["benchmark", "method", "paper_method", "shots", "fold", "n_runs", "n_episodes",
               "ours", "ours_low", "ours_high", "paper", "difference", "paper_inside",
               "interval"]
    return table[columns]


def _number(value: float, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value:+.1f}" if sign else f"{value:.1f}"


def markdown(table: pd.DataFrame) -> str:
    """The comparison as a markdown table, mIoU in %: ours with its 95% interval, the
    paper's number, the difference in points and whether the paper lies inside."""
    shown = pd.DataFrame({
        "method": [label(m) for m in table["method"]],
        "paper row": [PAPER_NAMES.get(p, "-") if isinstance(p, str) else "-"
                      for p in table["paper_method"]],
        "shots": table["shots"],
        "fold": table["fold"],
        "ours (95% interval)": [f"{o:.1f} [{lo:.1f}, {hi:.1f}]" for o, lo, hi in
                                zip(table["ours"], table["ours_low"], table["ours_high"],
                                    strict=True)],
        "paper": [_number(v) for v in table["paper"]],
        "difference": [_number(v, sign=True) for v in table["difference"]],
        "paper inside our interval?": ["-" if pd.isna(v) else ("yes" if v else "no")
                                       for v in table["paper_inside"]],
    })
    return markdown_table(shown, index=False)
