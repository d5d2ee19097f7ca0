"""The main job's findings in a few bullets: the reading the README and docs/results.md
share, written from the tables the notebooks save.

Every sentence is one the notebooks' own readings write (:mod:`fsstools.studies.readings`,
:func:`fsstools.studies.meta_learning.contrast_notes`, ...), on the same tables, so the
README can neither round differently nor call a gap by another verdict than the notebook it
comes from. Each bullet names the notebook its numbers come from (and so the base seeds
behind its intervals); a bullet whose tables are missing is left out.

Example:
    >>> tables = load_tables(Path("outputs/full"))  # doctest: +SKIP
    >>> print("\\n".join(findings(tables)))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from fsstools import paths
from fsstools.plots.style import label
from fsstools.studies import meta_learning, readings
from fsstools.studies.recipes import ORACLE_CONFIGS

TABLES = {
    "02_loss_ablations": ("difference_to_repri", "difference_to_repri_per_base_seed"),
    "03_shot_scaling": ("summary", "difference_to_repri", "difference_to_repri_per_base_seed"),
    "04_domain_shift": ("difference_to_repri", "drop"),
    "05_proportion_prior": ("prior_error_summary", "delta_difference"),
    "06_meta_learning": ("differences",),
}
"""The tables (``<notebook>/<name>.csv`` of a main job) the findings are written from."""
REFERENCE = "repri"
INDUCTIVE = ("panet", "inductive")
"""The standard inductive baseline and the one-prototype inductive method."""
PAPER_PFENET = {1: 60.8, 5: 61.9}
"""PFENet's mIoU (%) on PASCAL-5i, ResNet-50, mean over folds, as the RePRI paper's table
gives it beside RePRI's (RePRI's own numbers: ``configs/paper/repri_resnet50.csv``)."""
NOT_PASCAL = ("The numbers compare methods on one synthetic benchmark with a small CPU model; "
              "they are not PASCAL-5i numbers.")


def load_tables(outputs: Path) -> dict[str, pd.DataFrame]:
    """The tables of :data:`TABLES` that ``outputs`` holds, keyed ``<notebook>/<name>``."""
    found = {}
    for notebook, names in TABLES.items():
        for name in names:
            path = Path(outputs) / notebook / f"{name}.csv"
            if path.is_file():
                found[f"{notebook}/{name}"] = pd.read_csv(path, dtype={"t_pi": str})
    return found


def paper_pascal() -> dict[str, dict[int, float]]:
    """The paper's mean mIoU (%) on PASCAL-5i: method (repri, oracle, pfenet) -> shots ->
    mIoU."""
    table = pd.read_csv(paths.configs_dir() / "paper" / "repri_resnet50.csv", comment="#")
    table = table[(table["benchmark"] == "pascal") & (table["fold"] == "mean")]
    out: dict[str, dict[int, float]] = {"pfenet": dict(PAPER_PFENET)}
    for (method, shots), grp in table.groupby(["method", "shots"]):
        out.setdefault(method, {})[int(shots)] = float(grp["miou"].iloc[0])
    return out


def _paper_gap(a: str, b: str) -> str:
    """The paper's ``a`` minus ``b`` on PASCAL-5i at every shot count both report."""
    paper = paper_pascal()
    shots = sorted(set(paper[a]) & set(paper[b]))
    return " and ".join(f"{paper[a][k] - paper[b][k]:+.1f}" for k in shots) + " at " + \
        " and ".join(map(str, shots)) + " shots"


def _methods(table: pd.DataFrame, methods: tuple[str, ...]) -> pd.DataFrame:
    return table[table["method"].isin(methods)]


def _sentences(notes: list[str | None]) -> str:
    return " ".join(n for n in notes if n)


def widest_seed_range(spread: pd.DataFrame) -> str | None:
    """The contrast to RePRI that moves most with the base seed (rows of
    :func:`fsstools.evaluation.stats.seed_spread`): its range in points, method and shots."""
    others = spread[spread["method"] != REFERENCE]
    if others.empty or others["base_seed"].nunique() < 2:
        return None
    ranges = others.groupby(["method", "shots"], sort=False)["miou_diff"].agg(
        lambda v: 100 * (v.max() - v.min()))
    (method, shots), points = ranges.idxmax(), ranges.max()
    return (f"{points:.1f} points ({label(method)} minus {label(REFERENCE)}, {shots} "
            f"shot{'s' if shots > 1 else ''})")


def findings(tables: Mapping[str, pd.DataFrame]) -> list[str]:
    """The bullets: RePRI against the inductive baselines, against CE from the same start,
    against the oracle, under a style shift and against the meta-learned peers, then the
    benchmark's caveat.

    Args:
        tables: :func:`load_tables` of a main job.
    """
    t = tables.get
    notes: list[str | None] = []
    if (d3 := t("03_shot_scaling/difference_to_repri")) is not None:
        summary = t("03_shot_scaling/summary")
        gain = (None if summary is None else readings.shot_gain_note(
            _methods(summary, (*INDUCTIVE, REFERENCE)), label))
        notes.append("**Against the inductive baselines** (notebook 03): " + _sentences([
            *readings.difference_notes(_methods(d3, INDUCTIVE), REFERENCE, labels=label,
                                       bold=False),
            gain and gain.replace("**", "")]))
        ce = readings.difference_notes(_methods(d3, ("ce",)), REFERENCE, labels=label,
                                       bold=False)
        s3 = t("03_shot_scaling/difference_to_repri_per_base_seed")
        per_seed = ([] if s3 is None else readings.spread_notes(s3, REFERENCE, ["ce"], label))
        d2 = t("02_loss_ablations/difference_to_repri")
        terms = ([] if d2 is None else readings.difference_notes(
            _methods(d2, ("ce_h", "ce_kl")), REFERENCE, labels=label, bold=False))
        notes.append("**RePRI's transductive terms over CE from the same start** (notebook 03"
                     + (", CE + H and CE + KL from notebook 02" if terms else "") + "): "
                     + _sentences([*ce, *(n.replace("**", "") for n in per_seed if n),
                                   *terms]))
        oracle = readings.difference_notes(_methods(d3, ("oracle_repri",)), REFERENCE,
                                           labels=label, bold=False)
        weights = ([] if d2 is None else readings.difference_notes(
            _methods(d2, ("oracle_repri_weights",)), REFERENCE, labels=label, bold=False))
        prior = []
        if (errors := t("05_proportion_prior/prior_error_summary")) is not None:
            fewest = errors[errors["shots"] == errors["shots"].min()]
            prior.append(readings.prior_error_note(fewest, bold=False))
        if (delta := t("05_proportion_prior/delta_difference")) is not None:
            prior += readings.delta_notes(delta, ORACLE_CONFIGS, bold=False)
        notes.append("**The true foreground proportion** (notebook 03"
                     + (", Oracle-RePRI at RePRI's weights from notebook 02" if weights else "")
                     + (", the prior from notebook 05 with base seed 0 and intervals over "
                        "episodes" if prior else "") + "): "
                     + _sentences([*oracle, f"The paper's Oracle-RePRI minus RePRI on "
                                   f"PASCAL-5i: {_paper_gap('oracle', 'repri')}.",
                                   *weights, *prior]))
    if (d4 := t("04_domain_shift/difference_to_repri")) is not None:
        shifted = d4[d4["domain"] == "A -> B"]
        drop = t("04_domain_shift/drop")
        notes.append("**Under a style shift** (notebook 04: base models trained on style A, "
                     "tasks of style B): " + _sentences([
                         *readings.difference_notes(_methods(shifted, ("ce", "panet")),
                                                    REFERENCE, labels=label, bold=False),
                         None if drop is None else readings.drop_note(
                             _methods(drop, (REFERENCE, "panet")), label, bold=False)]))
    if (d6 := t("06_meta_learning/differences")) is not None:
        s2 = t("02_loss_ablations/difference_to_repri_per_base_seed")
        widest = None if s2 is None else widest_seed_range(s2)
        notes.append("**Against meta-learned peers** (notebook 06: every arm on the same "
                     "folds and episodes with base seed 0, intervals over episodes only): "
                     + _sentences([
                         (meta_learning.paper_claim(d6) or "").replace("**", ""),
                         f"The paper's RePRI minus PFENet on PASCAL-5i: "
                         f"{_paper_gap('repri', 'pfenet')}.",
                         *meta_learning.contrast_notes(d6, meta_learning.CONTRASTS[1:],
                                                       bold=False),
                         widest and ("A single base seed stands behind these intervals; in "
                                     "notebook 02 a contrast to RePRI moves with the base "
                                     f"seed by up to {widest}.")]))
    notes.append(f"**The benchmark's caveat.** {readings.BENCHMARK_CAVEAT} {NOT_PASCAL}")
    return readings.bullets(notes)
