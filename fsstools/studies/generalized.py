"""What notebook 08 calls: the generalized few-shot protocol on a profile's base models,
its tables, its contrasts and the closing reading written from them.

Every query pixel gets one of background + base classes + novel classes, so a method is
judged on two scores at once: the base classes it keeps (base mIoU) and the novel classes
it learns from the support set (novel mIoU). The methods compared on the very same support
sets and queries:

- ``base_model``: the base model alone, which cannot predict a novel class; its base mIoU
  is what the base classes score before any novel class competes for their pixels;
- ``gfss_prototypes``: the base classifier with a normalised prototype per novel class,
  DIaM's starting point (no fit);
- ``diam_no_kd``: DIaM without its distillation term: forgetting made visible;
- ``diam`` and its class prior ``pi`` set otherwise (``diam pi=<strategy>``).

Example:
    >>> prof, out = recipes.start("08_generalized_fss", globals())  # doctest: +SKIP
    >>> rows = evaluate(prof, folds=[0], shots=[1], methods=["diam"], pi_strategies=["self"],
    ...                 n_runs=2)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from fsstools.errors import ConfigError
from fsstools.evaluation import generalized as protocol
from fsstools.evaluation import generalized_stats as gstats
from fsstools.evaluation.generalized import BASE_MODEL, GFSSStudy
from fsstools.evaluation.generalized_config import method_configs
from fsstools.evaluation.views import QueryView
from fsstools.plots.style import label
from fsstools.studies import report
from fsstools.studies.profiles import Profile, ensure_base_model, train_config
from fsstools.studies.readings import BENCHMARK_CAVEAT, LEVEL, bullets, signed_gap, verdict

SCORE_NAMES = {"base": "base", "novel": "novel", "mean": "mean", "hmean": "HM"}
"""Column names of the four scores in the tables."""


def fold_study(prof: Profile, fold: int, shots: Sequence[int], n_runs: int,
               n_queries: int = 0, device: str = "cpu", base_seed: int = 0, seed: int = 0,
               progress: bool = True) -> GFSSStudy:
    """Support sets and unnormalised features of the fold's base model (trained with
    ``base_seed``) on the profile's test data (style A of the embedded benchmark).

    Args:
        n_queries: queries per run, a seeded subset (0: every image not among the supports).

    Raises:
        ConfigError: a profile that tests another data set than it trains on
            (coco_to_pascal): base classes must be classes of the test images.
    """
    if prof.train_dataset != prof.test_dataset:
        raise ConfigError(f"dataset {prof.dataset}: the generalized protocol scores base and "
                          "novel classes of one data set; use synth, pascal or coco",
                          key="dataset")
    checkpoint = ensure_base_model(prof, fold, progress, base_seed)
    size = prof.synth.size if prof.synth is not None else train_config(prof, fold).data.val_size
    return protocol.prepare(checkpoint, prof.style_root("A"), prof.list_file,
                            prof.test_dataset, fold, shots, size, n_runs, seed,
                            max_queries=n_queries or None, device=device, progress=progress)


def evaluate(prof: Profile, folds: Sequence[int], shots: Sequence[int], methods: Sequence[str],
             pi_strategies: Sequence[str], n_runs: int = 5, n_queries: int = 0,
             device: str = "cpu", base_seeds: Sequence[int] = (0,), seed: int = 0
             ) -> pd.DataFrame:
    """Every method of :func:`method_configs` on every run of every fold and shot count,
    each base seed's model on the same support sets and queries.

    Returns:
        Per-class rows (:func:`fsstools.evaluation.generalized.score`) with ``base_seed``.
    """
    configs = method_configs(methods, pi_strategies)
    frames = []
    for fold in folds:
        for base_seed in base_seeds:
            study = fold_study(prof, fold, shots, n_runs, n_queries, device, base_seed, seed)
            frames.append(protocol.score(study, configs).assign(base_seed=base_seed))
    return pd.concat(frames, ignore_index=True)


def query_example(prof: Profile, fold: int, shots: int, methods: Sequence[str],
                  pi_strategies: Sequence[str] = (), n_runs: int = 1, n_queries: int = 0,
                  device: str = "cpu", run: int = 0) -> QueryView:
    """The run's query holding the most classes and every method's prediction on it."""
    study = fold_study(prof, fold, [shots], n_runs, n_queries, device, progress=False)
    return protocol.query_view(study, shots, method_configs(methods, pi_strategies), run)


def summarize(rows: pd.DataFrame, n_boot: int = 1000) -> pd.DataFrame:
    """:func:`fsstools.evaluation.generalized_stats.summarize` per method and shot count."""
    return gstats.summarize(rows, ("method", "shots"), n_boot)


def run_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The four scores of every run (:func:`fsstools.evaluation.generalized_stats.run_scores`)."""
    return gstats.run_scores(rows)


def class_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per-class IoU averaged over runs, per method, fold and shot count."""
    return gstats.class_table(rows)


def _by_shots(table: pd.DataFrame, index: str, values: Sequence[str]) -> pd.DataFrame:
    """``index`` x (shots, score) cells with intervals, e.g. column "1-shot novel"."""
    if table.empty:
        return pd.DataFrame()
    parts = []
    for value in values:
        part = report.interval_table(table, index=index, value=value)
        part.columns = [f"{c.split('=')[1]}-shot {SCORE_NAMES[value]}" for c in part.columns]
        parts.append(part)
    wide = pd.concat(parts, axis=1)
    names = list(SCORE_NAMES.values())
    return wide[sorted(wide.columns, key=lambda c: (int(c.split("-")[0]),
                                                    names.index(c.split()[1])))]


def score_table(summary: pd.DataFrame, values: Sequence[str] = ("base", "novel", "hmean")
                ) -> pd.DataFrame:
    """Methods x (shots, score) in percent with 95% intervals, e.g. column "1-shot novel"."""
    return _by_shots(summary, "method", values)


def contrast_pairs(labels: Sequence[str]) -> list[tuple[str, str]]:
    """(first, second) pairs worth comparing among the scored ``labels``: the fit (DIaM
    minus its start), distillation (DIaM minus DIaM without it), forgetting (each method
    minus the base model alone) and each prior minus DIaM's own."""
    wanted = [("diam", "gfss_prototypes"), ("diam", "diam_no_kd")]
    wanted += [(m, BASE_MODEL) for m in ("gfss_prototypes", "diam_no_kd", "diam")]
    wanted += [(m, "diam") for m in labels if m.startswith("diam pi=") or m == "diam_upperbound"]
    return [(a, b) for a, b in wanted if a in labels and b in labels]


def contrasts(rows: pd.DataFrame, n_boot: int = 1000) -> pd.DataFrame:
    """Paired differences (first minus second, same runs, queries and base seeds) of the
    pairs of :func:`contrast_pairs`, per shot count, with a ``contrast`` label."""
    frames = [gstats.difference(rows, a, b, n_boot=n_boot)
              for a, b in contrast_pairs(list(dict.fromkeys(rows["method"])))]
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    out.insert(0, "contrast", [f"{label(a)} minus {label(b)}"
                               for a, b in zip(out["first"], out["second"], strict=True)])
    return out


def contrast_table(diffs: pd.DataFrame, values: Sequence[str] = ("base", "novel", "hmean")
                   ) -> pd.DataFrame:
    """Contrasts x (shots, score) in points with paired 95% intervals."""
    return _by_shots(diffs, "contrast", values)


def _pair(diffs: pd.DataFrame, first: str, second: str, shots: int) -> pd.Series | None:
    sel = diffs[(diffs["first"] == first) & (diffs["second"] == second)
                & (diffs["shots"] == shots)] if not diffs.empty else diffs
    return None if sel.empty else sel.iloc[0]


def _gap(row: pd.Series, value: str, ahead: str, behind: str) -> str:
    return f"{SCORE_NAMES[value]} {signed_gap(row, value)} ({verdict(row, ahead, behind, value)})"


def reading(summary: pd.DataFrame, diffs: pd.DataFrame, caveat: bool = True) -> list[str]:
    """The closing bullets of notebook 08, from its summary and contrasts: what the
    intervals cover, DIaM's scores, what its fit adds, what distillation keeps, how much
    each method forgets of the base classes, and what the prior is worth."""
    first = summary.iloc[0]
    notes: list[str | None] = [
        f"Intervals (95%) cover {first['interval']} ({int(first['n_runs'])} runs, each its "
        f"own support set, {int(first['n_base_seeds'])} base seed(s) per fold, "
        f"{int(first['n_folds'])} fold(s)); a gap whose interval covers 0 is called "
        f"{LEVEL}."]
    for shots in sorted(summary["shots"].unique()):
        s = f"{shots} shot{'s' if shots > 1 else ''}"
        rows = summary[summary["shots"] == shots].set_index("method")
        if "diam" in rows.index:
            d = rows.loc["diam"]
            base_alone = (f"; the base model alone scores base {100 * rows.loc[BASE_MODEL, 'base']:.1f}"
                          if BASE_MODEL in rows.index else "")
            notes.append(f"**DIaM at {s}**: base {100 * d['base']:.1f}, novel "
                         f"{100 * d['novel']:.1f}, harmonic mean {100 * d['hmean']:.1f}"
                         f"{base_alone}.")
        fit = _pair(diffs, "diam", "gfss_prototypes", shots)
        if fit is not None:
            notes.append(f"**What the fit adds** at {s} (DIaM minus its start, the prototypes): "
                         + "; ".join(_gap(fit, v, "gain", "loss")
                                     for v in ("novel", "base", "hmean")) + ".")
        kd = _pair(diffs, "diam", "diam_no_kd", shots)
        if kd is not None:
            notes.append(f"**What distillation keeps** at {s} (DIaM minus DIaM without it): "
                         + "; ".join(_gap(kd, v, "gain", "loss")
                                     for v in ("base", "novel", "hmean")) + ".")
        forget = [(m, _pair(diffs, m, BASE_MODEL, shots))
                  for m in ("gfss_prototypes", "diam_no_kd", "diam")]
        parts = [f"{label(m)} {signed_gap(r, 'base')} ({verdict(r, 'above', 'forgets', 'base')})"
                 for m, r in forget if r is not None]
        if parts:
            notes.append(f"**Forgetting** at {s} (base mIoU minus the base model alone's, "
                         "points): " + "; ".join(parts) + ".")
        priors = diffs[(diffs["second"] == "diam") & (diffs["shots"] == shots)] \
            if not diffs.empty else diffs
        parts = [f"{r['first'].removeprefix('diam ')} {_gap(r, 'novel', 'gain', 'loss')}, "
                 f"{_gap(r, 'hmean', 'gain', 'loss')}" for _, r in priors.iterrows()]
        if parts:
            notes.append(f"**The prior** at {s} (each minus DIaM's own estimate, pi=self): "
                         + "; ".join(parts) + ".")
    if caveat:
        notes.append(BENCHMARK_CAVEAT)
    return bullets(notes)
