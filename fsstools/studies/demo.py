"""The first run of a new user (``fsstools demo``, ``make demo``): RePRI against the two
inductive baselines and plain CE from the same start on one fold of the embedded benchmark, in
minutes.

It calls the notebooks' recipes: the profile's data and one base model (generated and
trained on first use, reused after), episodes of the fold's novel classes, the methods
scored on them, the fold's mIoU with 95% intervals over episodes, a figure, one task as a
picture, and the files the README's "Your own images" example reads. Its numbers are for
seeing the method work, not for reporting: the main job (``fsstools reproduce``) is.

Example:
    >>> result = run_demo(get_profile("tiny"), out=Path("outputs/demo"))  # doctest: +SKIP
    >>> print(result.table)  # doctest: +SKIP
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fsstools import plots
from fsstools.evaluation import pipeline as evaluate
from fsstools.evaluation import stats
from fsstools.studies import report
from fsstools.studies.profiles import Profile, ensure_base_model, ensure_data
from fsstools.studies.recipes import fold_study, study_episode
from fsstools.studies.your_images import demo_task

METHODS = ("panet", "inductive", "ce", "repri")
"""The two inductive baselines (PANet's two-prototype rule, one prototype with a bias fitted
on the support), CE from the query-mean bias (RePRI without its query terms) and RePRI."""
SHOTS = (1, 5)
N_EPISODES = 100
EXAMPLES = "your_images"
"""Folder (under the demo's) of the README's own-images example files."""


@dataclass(frozen=True)
class DemoResult:
    """What the demo printed and wrote.

    Attributes:
        table: method x shots, mIoU (%) with its 95% interval, as text cells.
        gaps: RePRI minus each baseline, in points with 95% intervals, as text cells.
        files: name -> path of each written file (scores, figure, episode, examples).
    """

    table: pd.DataFrame
    gaps: pd.DataFrame
    files: dict[str, Path]


def run_demo(prof: Profile, out: Path, fold: int = 0, shots: Sequence[int] = SHOTS,
             n_episodes: int = N_EPISODES, methods: Sequence[str] = METHODS,
             device: str = "cpu") -> DemoResult:
    """Score ``methods`` on ``n_episodes`` tasks per shot count of ``fold`` with the
    profile's base model (seed 0) and write the results under ``out``.

    Returns:
        The tables and the paths of ``scores.csv``, ``scores.png``, ``episode.png`` and the
        example folder (``a.jpg``, ``a.png``, ``q.jpg``, ``photos/``, ``best.pt``).
    """
    out.mkdir(parents=True, exist_ok=True)
    ensure_data(prof)  # with its progress bar: the first run generates the set here
    checkpoint = ensure_base_model(prof, fold)
    study = fold_study(prof, fold, shots, n_episodes, device=device)
    rows = evaluate.score(study, list(methods)).rows
    summary = stats.fold_mean(rows)
    gaps = stats.differences(rows, reference="repri")
    figure = plots.bar_ci(summary.assign(setting=summary["shots"].map("{}-shot".format)),
                          x="setting", hue="method",
                          title=f"{prof.name} profile, fold {fold}, {n_episodes} tasks each")
    figure.axes[0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, fontsize=8)
    files = {
        "scores": report.save_table(rows, out, "scores"),
        "figure": report.save_figure(figure, out, "scores"),
        "episode": report.save_figure(
            plots.episode_panel(study_episode(study, min(shots), 0)), out, "episode"),
        "examples": write_examples(prof, out / EXAMPLES, checkpoint, fold),
    }
    # differences() gives baseline - RePRI; the demo speaks of RePRI's lead
    lead = gaps.assign(**{c: -gaps[c] for c in ("miou", "miou_low", "miou_high")})
    lead = lead.rename(columns={"miou_low": "miou_high", "miou_high": "miou_low"})
    return DemoResult(report.interval_table(summary), report.interval_table(lead), files)


def write_examples(prof: Profile, folder: Path, checkpoint: Path, fold: int = 0,
                   n_photos: int = 3) -> Path:
    """The files of the README's own-images example, in ``folder``: ``a.jpg`` and its 0/255
    mask ``a.png`` (a novel class of ``fold``), ``q.jpg`` and ``photos/`` (images holding
    that class) and ``best.pt`` (the base model, which never saw the class)."""
    task = demo_task(prof, folder, shots=1, n_queries=1 + n_photos, fold=fold)
    (image, mask), (query, *photos) = task.supports[0], task.queries
    names = {image: folder / "a.jpg", mask: folder / "a.png", query: folder / "q.jpg"}
    names.update({p: folder / "photos" / Path(p).name for p in photos})
    for source, target in names.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        Path(source).replace(target)
    Path(image).parent.rmdir()
    shutil.copyfile(checkpoint, folder / "best.pt")
    return folder
