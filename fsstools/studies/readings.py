"""Readings written from the numbers: the sentences a notebook closes with.

One rule everywhere (notebooks, docs/results.md, the README): a difference is *ahead* (or
*behind*) only when its whole unrounded 95% interval lies above (or below) 0, and *level*
otherwise, an interval that touches 0 included (:func:`verdict`). Numbers are printed in
points of mIoU with one decimal, and a bound that would print as 0.0 is written with its sign
and its size instead (``+<0.05``, ``-<0.05``; exactly 0 prints as ``0``), so no bound that
decides a verdict reads as 0.0 (:func:`bound_text`). Every sentence quotes the interval that
supports it. The inputs are the tables of :mod:`fsstools.evaluation.stats` (fractions).

The API other readings build on:

- :func:`verdict` (row, ahead, behind) -> ``ahead``, ``behind`` or :data:`LEVEL`;
- :func:`bound_text` (fraction) -> one bound in points;
- :func:`interval_text` (row) -> ``mid [low, high]`` in points (tables: unsigned);
- :func:`signed_gap` (row) -> ``+mid [low, high]`` with signs (sentences);
- :func:`gap_with_verdict` (row) -> ``+mid [low, high] (verdict)``.

Example:
    >>> import pandas as pd
    >>> row = pd.Series({"miou": 0.012, "miou_low": -0.003, "miou_high": 0.027})
    >>> verdict(row, "ahead", "behind")
    'level'
    >>> signed_gap(row)
    '+1.2 [-0.3, +2.7]'
    >>> gap_with_verdict(pd.Series({"miou": 0.006, "miou_low": 0.0002, "miou_high": 0.011}))
    '+0.6 [+<0.05, +1.1] (ahead)'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd

LEVEL = "level"
"""What a difference whose interval covers 0 is called."""


SMALL = "<0.05"
"""How a nonzero bound that rounds to 0.0 at one decimal is written (after its sign)."""


def bound_text(value: float, signed: bool = True) -> str:
    """One interval bound (a fraction) in points of mIoU, one decimal.

    A nonzero bound that one decimal would show as 0.0 is written as ``+<0.05`` or
    ``-<0.05``: its sign decides the verdict, so it is never hidden. Exactly 0 is ``0``.

    Args:
        signed: a plus sign on positive values (sentences); tables leave it out, except on
            ``+<0.05``.
    """
    points = 100 * float(value)
    if points == 0:
        return "0"
    if f"{abs(points):.1f}" == "0.0":
        return f"{'+' if points > 0 else '-'}{SMALL}"
    return f"{points:+.1f}" if signed else f"{points:.1f}"


def interval_text(row: pd.Series, value: str = "miou", signed: bool = False) -> str:
    """``mid [low, high]`` in points of mIoU, the bounds by :func:`bound_text`."""
    mid = 100 * row[value]
    return (f"{mid:+.1f}" if signed else f"{mid:.1f}") + (
        f" [{bound_text(row[f'{value}_low'], signed)}, "
        f"{bound_text(row[f'{value}_high'], signed)}]")


def signed_gap(row: pd.Series, value: str = "miou") -> str:
    """A difference in signed points with its interval, e.g. ``+1.2 [-0.3, +2.7]``."""
    return interval_text(row, value, signed=True)


def verdict(row: pd.Series, ahead: str, behind: str, value: str = "miou") -> str:
    """``ahead`` when the whole unrounded interval is above 0, ``behind`` when below, else
    :data:`LEVEL` (an interval touching 0 included)."""
    if row[f"{value}_low"] > 0:
        return ahead
    if row[f"{value}_high"] < 0:
        return behind
    return LEVEL


def gap_with_verdict(row: pd.Series, ahead: str = "ahead", behind: str = "behind",
                     value: str = "miou") -> str:
    """:func:`signed_gap` followed by its :func:`verdict` in brackets."""
    return f"{signed_gap(row, value)} ({verdict(row, ahead, behind, value)})"


def covers(table: pd.DataFrame) -> str:
    """What the intervals of ``table`` cover, from its ``interval`` column."""
    if "interval" not in table or table.empty:
        return "episodes"
    kinds = sorted(set(table["interval"]))
    return kinds[0] if len(kinds) == 1 else " / ".join(kinds)


def label_of(labels: Callable[[str], str] | None) -> Callable[[str], str]:
    return labels or (lambda name: name)


def difference_notes(
    diffs: pd.DataFrame,
    reference: str,
    key: str = "method",
    labels: Callable[[str], str] | None = None,
    bold: bool = True,
) -> list[str]:
    """One sentence per compared value: its difference to ``reference`` at every shot
    count, with the verdict of each.

    Args:
        diffs: :func:`fsstools.evaluation.stats.differences` rows (``key``, shots, miou, ...).
        labels: display name of a ``key`` value.
        bold: the compared value's name in bold (a sentence of its own; inside a longer
            bullet, plain).
    """
    name = label_of(labels)
    notes = []
    if diffs.empty:
        return notes
    for value, grp in diffs.groupby(key, sort=False):
        parts = [f"{signed_gap(r)} at {r.shots} shot{'s' if r.shots > 1 else ''} "
                 f"({verdict(r, 'ahead', 'behind')})"
                 for _, r in grp.sort_values("shots").iterrows()]
        shown = f"**{name(value)}**" if bold else name(value)
        notes.append(f"{shown} minus {name(reference)}: {'; '.join(parts)}.")
    return notes


def shot_gain_note(summary: pd.DataFrame, labels: Callable[[str], str] | None = None,
                   key: str = "method") -> str | None:
    """Each value's mIoU gain from the fewest to the most shots it was scored at (points),
    largest first; None with a single shot count."""
    name = label_of(labels)
    shots = sorted(summary["shots"].unique())
    if len(shots) < 2:
        return None
    lo, hi = shots[0], shots[-1]
    wide = summary.pivot_table(index=key, columns="shots", values="miou", sort=False)
    gains = (100 * (wide[hi] - wide[lo])).dropna().sort_values(ascending=False)
    listed = ", ".join(f"{name(m)} {g:+.1f}" for m, g in gains.items())
    return f"**Gain from {lo} to {hi} shots** (points of mIoU, point estimates): {listed}."


def spread_note(spread: pd.DataFrame, what: str, value: str = "miou") -> str | None:
    """The range across base seeds of one contrast per shot count.

    Args:
        spread: rows of one contrast: shots, base_seed and ``value`` (a fraction), e.g. the
            per-seed differences (``miou_diff``) of :func:`fsstools.evaluation.stats.seed_spread`.
    """
    if spread.empty or spread["base_seed"].nunique() < 2:
        return None
    parts = []
    for shots, grp in spread.groupby("shots"):
        v = 100 * grp.sort_values("base_seed")[value]
        parts.append(f"{shots} shot{'s' if shots > 1 else ''}: "
                     + " / ".join(f"{x:+.1f}" for x in v)
                     + f" (range {v.max() - v.min():.1f})")
    return (f"**{what}, per base seed** ({spread['base_seed'].nunique()} seeds, points): "
            + "; ".join(parts) + ".")


def bullets(notes: Sequence[str | None]) -> list[str]:
    """Markdown bullets of the notes that exist."""
    return [f"- {n}" for n in notes if n]


# ----------------------------------------------------------------------------- per notebook

BENCHMARK_CAVEAT = (
    "On the embedded benchmark a class's colours and pattern name it in any patch, so the "
    "query's own pixels cluster by class: this favours methods that read the query "
    "(transductive ones) more than real images would."
)


def coverage_note(table: pd.DataFrame, n_base_seeds: int) -> str:
    """What the intervals cover and the rule the readings follow."""
    return (f"Intervals (95%) cover {covers(table)}"
            f"{f' ({n_base_seeds} base seeds per fold)' if n_base_seeds > 1 else ''}; a gap "
            "whose interval covers 0 is called level.")


def spread_notes(spread: pd.DataFrame, reference: str,
                 methods: Sequence[str], labels: Callable[[str], str] | None = None
                 ) -> list[str | None]:
    """:func:`spread_note` of ``method - reference`` for each of ``methods`` present in
    ``spread`` (rows of :func:`fsstools.evaluation.stats.seed_spread` with a reference: their
    ``miou_diff``)."""
    name = label_of(labels)
    return [spread_note(spread[spread["method"] == m], f"{name(m)} minus {name(reference)}",
                        "miou_diff")
            for m in methods if (spread["method"] == m).any()]


def n_seeds(rows: pd.DataFrame) -> int:
    """Base seeds per fold in per-episode rows (1 without a ``base_seed`` column)."""
    if "base_seed" not in rows:
        return 1
    return int(rows.groupby("fold")["base_seed"].nunique().min())


def method_reading(rows: pd.DataFrame, summary: pd.DataFrame, diffs: pd.DataFrame,
                   spread: pd.DataFrame | None, reference: str,
                   spread_methods: Sequence[str], labels: Callable[[str], str] | None = None,
                   caveat: bool = True) -> list[str]:
    """The closing bullets of a method comparison (notebooks 02 and 03): what the
    intervals cover, each method against ``reference`` at every shot count, the gain
    with the shots, the base-seed spread of the headline contrasts, and the benchmark's
    caveat.

    Args:
        rows: the per-episode rows (for the base-seed count).
        summary: :func:`fsstools.evaluation.stats.fold_mean` of ``rows``.
        diffs: :func:`fsstools.evaluation.stats.differences` of ``rows`` to ``reference``.
        spread: :func:`fsstools.evaluation.stats.seed_spread` of ``rows`` to ``reference`` (None:
            left out).
        spread_methods: the methods whose contrast to ``reference`` is shown per seed.
    """
    notes: list[str | None] = [coverage_note(diffs, n_seeds(rows))]
    notes += difference_notes(diffs, reference, labels=labels)
    notes.append(shot_gain_note(summary, labels))
    if spread is not None:
        notes += spread_notes(spread, reference, spread_methods, labels)
    if caveat:
        notes.append(BENCHMARK_CAVEAT)
    return bullets(notes)


def base_model_reading(models: pd.DataFrame) -> list[str]:
    """The closing bullets of notebook 01 from its table of base models
    (:func:`fsstools.studies.recipes.base_model_table`): how flat the curves ended and how much the
    base-class validation score moves with the training seed."""
    gains = models["last_epoch_gain_points"].abs()
    if gains.isna().all():  # given checkpoints: no training ran, so there is no curve
        notes: list[str | None] = [
            f"**Given models**: {len(models)} checkpoint(s) scored as they are, without "
            "training, so there is no training curve; their base-class scores below were "
            "computed on the validation list at the test size."]
    else:
        notes = [
            f"**Last-epoch change** of the validation mIoU: at most {gains.max():.1f} points "
            f"over {len(models)} model(s) (median {gains.median():.1f}); "
            + ("every curve had flattened (< 1 point)." if gains.max() < 1 else
               "a curve that still moves by a point or more in its last epoch is not "
               "converged.")
        ]
    per_fold = models.groupby("fold")["val_miou_base_classes"]
    parts = [f"fold {fold} {100 * v.mean():.1f}" + (
        f" (seeds {' / '.join(f'{100 * x:.1f}' for x in v)}, range "
        f"{100 * (v.max() - v.min()):.1f})" if len(v) > 1 else "") for fold, v in per_fold]
    notes.append("**Base-class validation mIoU** (background excluded, %): "
                 + "; ".join(parts) + ".")
    if models.groupby("fold")["base_seed"].nunique().max() > 1:
        spread = per_fold.agg(lambda v: v.max() - v.min()).max()
        notes.append(f"The training seed alone moves a fold's base-class score by up to "
                     f"{100 * spread:.1f} points: the later notebooks score every method with "
                     "each seed's model and let their intervals cover that.")
    return bullets(notes)


def domain_reading(rows: pd.DataFrame, diffs: pd.DataFrame, drop: pd.DataFrame,
                   labels: Callable[[str], str] | None = None) -> list[str]:
    """The closing bullets of notebook 04.

    Args:
        rows: per-episode rows (for the base-seed count).
        diffs: :func:`fsstools.evaluation.stats.differences` to RePRI with ``by=("domain", "shots")``.
        drop: :func:`fsstools.evaluation.stats.domain_drop` (point estimates: the two domains are
            scored on different images, so their difference has no paired interval).
    """
    notes: list[str | None] = [coverage_note(diffs, n_seeds(rows))]
    for domain, grp in (() if diffs.empty else diffs.groupby("domain", sort=False)):
        notes += [f"{domain}: {n}" for n in difference_notes(grp, "repri", labels=labels)]
    notes.append(drop_note(drop, labels))
    return bullets(notes)


def drop_note(drop: pd.DataFrame, labels: Callable[[str], str] | None = None,
              bold: bool = True) -> str:
    """What the style shift costs each method of ``drop``
    (:func:`fsstools.evaluation.stats.domain_drop`), point estimates per shot count."""
    name = label_of(labels)
    parts = []
    for method, grp in drop.groupby("method", sort=False):
        per_shot = " / ".join(f"{v:.1f}" for v in grp.sort_values("shots")["drop_points"])
        parts.append(f"{name(method)} {per_shot}")
    counts = sorted(drop["shots"].unique())
    shots = " / ".join(map(str, counts)) + (" shots" if counts[-1] > 1 else " shot")
    what = "Drop from A -> A to A -> B"
    return (f"{f'**{what}**' if bold else what} (points of mIoU at {shots}; point "
            f"estimates, the domains use different images): {'; '.join(parts)}.")


def prior_reading(error_summary: pd.DataFrame, delta_diffs: pd.DataFrame,
                  t_pi_diffs: pd.DataFrame, config_labels: dict[str, str]) -> list[str]:
    """The closing bullets of notebook 05.

    Args:
        error_summary: :func:`fsstools.evaluation.stats.prior_error_summary`.
        delta_diffs: per oracle configuration (column ``config``), each ``prior_delta``
            minus the exact prior (delta 0) on the same episodes.
        t_pi_diffs: each ``t_pi`` schedule minus t_pi = 10.
        config_labels: display name of each ``config``.
    """
    notes: list[str | None] = [prior_error_note(error_summary), coverage_note(delta_diffs, 1)]
    notes += delta_notes(delta_diffs, config_labels)
    notes += difference_notes(t_pi_diffs, "10", key="t_pi",
                              labels=lambda t: f"t_pi = {t}")
    return bullets(notes)


def prior_error_note(error_summary: pd.DataFrame, bold: bool = True) -> str:
    """The relative error of RePRI's estimated prior per shot count and stage
    (:func:`fsstools.evaluation.stats.prior_error_summary`)."""
    parts = [f"{r.shots}-shot {r.stage}: median {100 * r.median_error:+.0f}%, within +-10% "
             f"for {100 * r.within_10pct:.0f}% of tasks"
             for r in error_summary.itertuples()]
    what = "Error of RePRI's estimated prior"
    return f"{f'**{what}**' if bold else what} (pi / true - 1): " + "; ".join(parts) + "."


def delta_notes(delta_diffs: pd.DataFrame, config_labels: dict[str, str],
                bold: bool = True) -> list[str]:
    """Per oracle configuration and shot count: each scaled prior minus the exact prior,
    then the perturbations grouped by verdict."""
    notes = []
    for config, grp in delta_diffs.groupby("config", sort=False):
        for shots, sub in grp.groupby("shots"):
            sub = sub.sort_values("prior_delta")
            parts, by_verdict = [], {LEVEL: [], "ahead": [], "behind": []}
            for d, (_, r) in zip(sub["prior_delta"], sub.iterrows(), strict=True):
                parts.append(f"{d:+.0%}: {signed_gap(r)}")
                by_verdict[verdict(r, "ahead", "behind")].append(f"{d:+.0%}")
            if not by_verdict[LEVEL] and not by_verdict["ahead"]:
                verdicts = "Every perturbation tested costs mIoU."
            else:
                verdicts = "; ".join(
                    f"{lead} {', '.join(by_verdict[v])}" for v, lead in (
                        (LEVEL, "Level with the exact prior at"), ("ahead", "ahead at"),
                        ("behind", "behind at")) if by_verdict[v]) + "."
                verdicts = verdicts[0].upper() + verdicts[1:]
            what = (f"{config_labels.get(config, config)}, {shots}-shot, prior scaled by "
                    "(1 + delta)")
            notes.append(f"{f'**{what}**' if bold else what}, minus the exact prior: "
                         f"{'; '.join(parts)}. {verdicts}")
    return notes


def walkthrough_reading(numbers: pd.Series, traces: pd.DataFrame, t_pi: Sequence[int],
                        ) -> list[str]:
    """The closing bullets of notebook 00, from its one task.

    Args:
        numbers: the task's row: shots, initial IoU, final IoU, pi at t=0, pi at the end,
            true share.
        traces: the library's per-iteration traces of that task (iteration, kl, ...).
        t_pi: RePRI's prior updates (before which step).
    """
    true = numbers["true share"]

    def rel(pi: float) -> str:
        return f"{100 * (pi / true - 1):+.0f}%" if true > 0 else "undefined (no foreground)"

    notes: list[str | None] = [
        f"**On this task** ({numbers['shots']} shot(s)) RePRI took the query IoU from "
        f"{100 * numbers['initial IoU']:.1f} (its initial classifier) to "
        f"{100 * numbers['final IoU']:.1f} after its steps.",
        f"**The prior** started at {numbers['pi at t=0']:.3f} against a true foreground "
        f"share of {true:.3f} (relative error {rel(numbers['pi at t=0'])}) and ended at "
        f"{numbers['pi at the end']:.3f} ({rel(numbers['pi at the end'])}).",
    ]
    kl = traces["kl"].to_numpy()
    if t_pi and 2 <= t_pi[0] <= len(kl):
        u = t_pi[0] - 1  # the pass that re-estimates the prior
        notes.append(f"**The KL term** was {kl[u - 1]:.4f} on the pass before the update at "
                     f"t_pi = {t_pi[0]} and {kl[u]:.4f} on the pass that re-estimates the "
                     f"prior (the current share), {kl[-1]:.4f} at the end.")
    notes.append("One task shows how the method works, not how well: notebooks 02 to 05 "
                 "score it on thousands of tasks with intervals.")
    return bullets(notes)
