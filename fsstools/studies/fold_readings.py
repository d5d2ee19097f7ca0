"""Readings across folds: the folds whose contrast has the other sign from the fold mean.

The fold mean can hide a fold that disagrees with it; :func:`fold_sign_notes` names such a
fold with both intervals, under the verdict rule of :mod:`fsstools.studies.readings`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd

from fsstools.studies.readings import LEVEL, label_of, signed_gap, verdict


def _sign(x: float) -> int:
    return int(x > 0) - int(x < 0)


def _where(group: dict) -> str:
    """A group of rows in words, e.g. ``in A -> B at 5 shots``."""
    return " ".join(f"at {v} shot{'s' if v > 1 else ''}" if k == "shots" else f"in {v}"
                    for k, v in group.items())


def fold_sign_notes(
    fold_diffs: pd.DataFrame,
    diffs: pd.DataFrame,
    reference: str,
    key: str = "method",
    by: Sequence[str] = ("shots",),
    labels: Callable[[str], str] | None = None,
    only: Sequence[str] | None = None,
) -> list[str]:
    """The folds on which a contrast has the other sign than its mean over folds.

    A fold is named when its point difference and the fold mean's lie on opposite sides of
    0 and at least one of their two intervals excludes 0 (two level gaps resolve no sign);
    each is quoted with its interval and verdict, after the fold mean's. With a single fold
    there is nothing to compare: no sentence.

    Args:
        fold_diffs: :func:`fsstools.evaluation.stats.differences` rows with "fold" in its
            ``by`` (``key``, ``by``..., fold, miou, ...).
        diffs: :func:`fsstools.evaluation.stats.differences` of the same rows over folds
            (``by`` without "fold").
        labels: display name of a ``key`` value.
        only: the ``key`` values to read (None: all).

    Returns:
        One sentence per contrast with such a fold, or one sentence saying that no fold
        changes a sign.
    """
    name = label_of(labels)
    if not fold_diffs.empty and only is not None:
        fold_diffs = fold_diffs[fold_diffs[key].isin(only)]
    if fold_diffs.empty or fold_diffs["fold"].nunique() < 2:
        return []
    notes = []
    for value, grp in fold_diffs.groupby(key, sort=False):
        parts = []
        for group_key, folds in grp.groupby(list(by), sort=False):
            group = dict(zip(by, group_key if isinstance(group_key, tuple) else (group_key,),
                             strict=True))
            mean = diffs[(diffs[key] == value)
                         & (diffs[list(by)] == pd.Series(group)).all(axis=1)]
            if mean.empty:
                continue
            m = mean.iloc[0]
            mean_verdict = verdict(m, "ahead", "behind")
            flipped = []
            for _, r in folds.sort_values("fold").iterrows():
                fold_verdict = verdict(r, "ahead", "behind")
                other_sign = _sign(r["miou"]) == -_sign(m["miou"]) != 0
                if other_sign and (fold_verdict, mean_verdict) != (LEVEL, LEVEL):
                    flipped.append(f"fold {r.fold} has {signed_gap(r)} ({fold_verdict})")
            if flipped:
                parts.append(f"{_where(group)} the fold mean is {signed_gap(m)} "
                             f"({mean_verdict}) but {', '.join(flipped)}")
        if parts:
            notes.append(f"**{name(value)} minus {name(reference)}, per fold**: "
                         f"{'; '.join(parts)}.")
    if not notes:
        shown = ", ".join(name(v) for v in dict.fromkeys(fold_diffs[key]))
        notes.append(f"**Per fold** ({fold_diffs['fold'].nunique()} folds): every fold has "
                     f"the sign of the fold mean for {shown} minus {name(reference)} (or "
                     "neither interval excludes 0).")
    return notes
