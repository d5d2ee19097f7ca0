"""Does a good transductive inference beat meta-learning? The recipe of notebook 06.

The paper's title is a claim against meta-learning: cross-entropy base training plus a good
transductive inference (RePRI) is on par with episodically trained methods at 1 shot and
ahead by more as shots grow. Here both families run in one harness, per fold:

- the fold's cross-entropy (CE) base model, as every other notebook uses it;
- the PANet-style peer, trained episodically end to end from the base model's
  initialisation with the base model's budget (``configs/synth/episodic_panet*.yaml``);
- the PFENet-style peer, a head trained episodically on the *frozen trunk of the fold's CE
  base model* (PFENet freezes an ImageNet backbone, which is not available offline).

Like PANet and PFENet, each peer is trained at the shot count it is scored at: one model
per fold at 1 shot and one at 5 shots (:data:`PEER_SHOTS`), the 5-shot model with the
1-shot recipe's image budget (:func:`shot_overrides`); 10 shots are scored with the 5-shot
model (:func:`trained_shots`). Every arm covers the same folds and the fold's base model of
base seed 0 (the peers' initialisation and frozen trunk), so the contrasts compare like
with like.

All of them are scored on the very same saved episodes (episode lists are keyed by the
data, fold, shots, count and seed, never by the model), through the one scoring pipeline
(:func:`fsstools.evaluation.pipeline.score`, cached per method, episodes and features), so every
difference below is paired. The 2x2 {CE, episodic PANet} x {prototype inference, RePRI}
separates what the training buys from what the inference buys, one inference rule per
column: PANet's two-prototype cosine classifier (parameter-free, inductive: the field's
standard inductive baseline) runs on the CE model's features as on PANet's, and RePRI runs
on the PANet peer's features through the same feature cache and inference code as on the CE
model's. CE with *Prototype, support-fit bias* stays as a named variant.

Example:
    >>> prof = get_profile("quick")  # doctest: +SKIP
    >>> result = meta_study(prof, folds=[0], shots=[1, 5], n_episodes=100)  # doctest: +SKIP
    >>> contrasts(result.rows)[["contrast", "shots", "miou"]]  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fsstools import config as config_lib
from fsstools import paths
from fsstools.errors import ConfigError
from fsstools.evaluation import pipeline as evaluate
from fsstools.evaluation import stats
from fsstools.inference import METHODS
from fsstools.models.checkpoints import checkpoint_meta
from fsstools.studies import readings
from fsstools.studies.profiles import Profile, ensure_base_model, ensure_data, fold_eval_config
from fsstools.training import TrainConfig, ensure_trained, run_directory

PEERS = ("panet", "pfenet")
PEER_SHOTS = (1, 5)
"""Shot counts the peers are trained at (one model each per fold and peer)."""
PEER_CONFIGS = {"quick": "synth/episodic_{peer}_quick.yaml", "full": "synth/episodic_{peer}.yaml",
                "tiny": "synth/episodic_{peer}_tiny.yaml"}
"""Episodic training configs of each profile of the embedded benchmark (under configs/)."""
TRAININGS = {"ce": "cross-entropy base training", "episodic-panet": "episodic, end to end",
             "frozen-pfenet": "episodic head on the frozen CE trunk"}
"""The ``training`` column's values and what each means."""


@dataclass(frozen=True)
class Arm:
    """One (training, inference) cell of the comparison.

    Attributes:
        label: the ``method`` column (unique over arms).
        training: key of :data:`TRAININGS`.
        inference: "prototype" (inductive prototypes: never fitted on the query), "repri"
            or "pfenet-head" (the PFENet-style peer's own head).
        method: the method of :data:`fsstools.inference.METHODS` that scores it.
    """

    label: str
    training: str
    inference: str
    method: str


ARMS = (
    Arm("CE + Prototype, support-fit bias", "ce", "support-fit prototype", "inductive"),
    Arm("CE + two prototypes", "ce", "two prototypes", "panet"),
    Arm("CE + RePRI", "ce", "repri", "repri"),
    Arm("PANet + two prototypes (own)", "episodic-panet", "two prototypes", "panet"),
    Arm("PANet + RePRI", "episodic-panet", "repri", "repri"),
    Arm("PFENet + head (own)", "frozen-pfenet", "pfenet-head", "pfenet"),
)
""""two prototypes" is PANet's inference (foreground and background prototypes, cosine x 20,
softmax over the two; inductive), on CE features and on PANet's; CE with *Prototype,
support-fit bias* (one prototype, a threshold fitted on the support's own pixels; inductive,
the method ``inductive``) is a variant."""
CONTRASTS = (
    ("CE + RePRI", "PFENet + head (own)", "the paper's claim: RePRI against PFENet"),
    ("CE + RePRI", "PANet + two prototypes (own)", "RePRI against PANet, each as published"),
    ("PANet + two prototypes (own)", "CE + two prototypes",
     "episodic training, under two prototypes"),
    ("PANet + RePRI", "CE + RePRI", "episodic training, under RePRI"),
    ("CE + RePRI", "CE + two prototypes", "RePRI over two prototypes, on CE features"),
    ("PANet + RePRI", "PANet + two prototypes (own)",
     "RePRI over two prototypes, on PANet features"),
)
"""(a, b, what it isolates): the paired differences a - b the notebook reports."""
TWO_BY_TWO = ("two prototypes", "repri")
"""The inference columns of the 2x2 (one rule per column)."""


@dataclass(frozen=True)
class MetaResult:
    """Per-episode rows of every arm and the checkpoints behind them.

    Attributes:
        rows: :func:`fsstools.evaluation.pipeline.score` rows (``method`` = the arm's label) with
            ``training``, ``inference`` and ``peer_method`` columns.
        checkpoints: (training, fold, trained shots) -> best.pt of the model scored
            (trained shots None for the CE base model, trained without tasks).
    """

    rows: pd.DataFrame
    checkpoints: dict[tuple[str, int, int | None], Path]


def trained_shots(shots: int, peer_shots: Sequence[int] = PEER_SHOTS) -> int:
    """The peer model that scores ``shots``-shot tasks: the one trained at the largest shot
    count of ``peer_shots`` not above ``shots`` (10 shots: the 5-shot model)."""
    return max(t for t in peer_shots if t <= shots)


def shot_overrides(cfg: TrainConfig, shots: int) -> list[str]:
    """Settings that train ``cfg``'s 1-shot recipe at ``shots`` shots with its image budget.

    A k-shot task holds k + 1 images, so tasks per epoch, tasks per step and validation
    tasks are scaled by 2 / (k + 1): the images an epoch, a step and a validation process
    stay those of the 1-shot recipe (steps per epoch stay about the same).
    """
    if shots == cfg.episodic.shots:
        return []
    scale = (cfg.episodic.shots + 1) / (shots + 1)
    e = cfg.episodic
    return [f"episodic.shots={shots}",
            f"episodic.episodes_per_epoch={max(1, round(e.episodes_per_epoch * scale))}",
            f"episodic.val_episodes={max(1, round(e.val_episodes * scale))}",
            f"optim.batch_size={max(1, round(cfg.optim.batch_size * scale))}"]


def peer_train_config(prof: Profile, fold: int, peer: str, trunk: str | Path | None = None,
                      overrides: Sequence[str] = (), shots: int = 1) -> TrainConfig:
    """The resolved episodic training config of a peer on ``fold`` of the profile's data.

    Args:
        peer: "panet" or "pfenet".
        trunk: the fold's base checkpoint (pfenet only: its trunk is frozen).
        overrides: ``key=value`` settings on top (tests shrink the model and the run).
        shots: support images per training task (:func:`shot_overrides`).

    Raises:
        ConfigError: a profile of real data (no episodic config ships for it), an unknown
            peer, or pfenet without a trunk.
    """
    if prof.name not in PEER_CONFIGS or prof.synth is None:
        raise ConfigError(f"the meta-learning study runs on the embedded benchmark (profile "
                          f"quick, full or tiny), not on {prof.name!r}: no episodic training config "
                          "ships for real data", key="profile")
    if peer not in PEERS:
        raise ConfigError(f"peer {peer!r} is not one of {', '.join(PEERS)}")
    if peer == "pfenet" and trunk is None:
        raise ConfigError("the PFENet-style peer needs the fold's base checkpoint as trunk")
    path = paths.configs_dir() / PEER_CONFIGS[prof.name].format(peer=peer)
    small = "" if prof.name == "full" else f"{prof.name}-"
    per_shot = "" if shots == 1 else f"{shots}shot-"
    extra = [f"data.fold={fold}", f"data.root={prof.style_root('A')}",
             f"run.name=synth-{small}{peer}-{per_shot}fold{fold}"]
    if trunk is not None:
        extra.append(f"episodic.trunk={Path(trunk).resolve()}")
    one_shot = config_lib.load(TrainConfig, path, [*extra, *overrides])
    return config_lib.load(TrainConfig, path,
                           [*extra, *shot_overrides(one_shot, shots), *overrides])


def ensure_peer(prof: Profile, fold: int, peer: str, trunk: str | Path | None = None,
                overrides: Sequence[str] = (), progress: bool = True, shots: int = 1) -> Path:
    """Best checkpoint of the fold's ``shots``-shot peer: reused if trained (announced),
    else trained now."""
    ensure_data(prof, progress=False)
    cfg = peer_train_config(prof, fold, peer, trunk, overrides, shots)
    if (run_directory(cfg) / "done").is_file():
        return ensure_trained(cfg)
    print(f"fold {fold}: training the {shots}-shot {peer}-style peer ({cfg.run.epochs} epochs "
          f"of {cfg.episodic.episodes_per_epoch} tasks) into {run_directory(cfg)}", flush=True)
    tic = time.perf_counter()
    checkpoint = ensure_trained(cfg)
    if progress:
        print(f"fold {fold}: {shots}-shot {peer}-style peer trained in "
              f"{time.perf_counter() - tic:.0f} s", flush=True)
    return checkpoint


def meta_study(
    prof: Profile,
    folds: Sequence[int],
    shots: Sequence[int],
    n_episodes: int,
    seed: int = 0,
    device: str = "cpu",
    peer_overrides: Sequence[str] = (),
    peer_shots: Sequence[int] = PEER_SHOTS,
) -> MetaResult:
    """Train (cached) the peers per fold and trained shot count, and score every arm of
    :data:`ARMS` on the same saved episodes.

    Args:
        folds: folds of every arm.
        seed: draws the episodes.
        peer_overrides: settings on top of both peers' training configs (tests).
        peer_shots: shot counts the peers are trained at (must include 1).

    Returns:
        Rows with ``training``, ``inference``, ``peer_method``, ``trained_shots`` (the
        peer's training shots; NaN for CE) and ``base_seed`` (0) columns.

    Raises:
        RuntimeError: the models of one fold did not get the same episode lists.
    """
    arms = {t: {a.label: METHODS[a.method] for a in ARMS if a.training == t} for t in TRAININGS}
    if min(peer_shots) > min(shots):
        raise ConfigError(f"peer_shots {list(peer_shots)}: no peer model for "
                          f"{min(shots)}-shot tasks; train one at {min(shots)} shot(s)")
    by_trained = {t: [k for k in shots if trained_shots(k, peer_shots) == t]
                  for t in sorted({trained_shots(k, peer_shots) for k in shots})}
    frames, checkpoints = [], {}
    for fold in folds:
        base = ensure_base_model(prof, fold)
        # (training, trained shots, shots scored) in TRAININGS order: rows come in ARMS order
        models = [("ce", None, base, list(shots))]
        for t, ks in by_trained.items():
            models.append(("episodic-panet", t,
                           ensure_peer(prof, fold, "panet", None, peer_overrides, shots=t), ks))
        for t, ks in by_trained.items():
            models.append(("frozen-pfenet", t,
                           ensure_peer(prof, fold, "pfenet", base, peer_overrides, shots=t), ks))
        hashes: dict[int, set[str]] = {}
        for training, t, checkpoint, ks in models:
            cfg = fold_eval_config(prof, fold, checkpoint, ks, n_episodes, seed=seed, device=device)
            st = evaluate.prepare(cfg)
            for (k, _), el in st.episode_lists.items():
                hashes.setdefault(k, set()).add(el.hash)
            frames.append(evaluate.score(st, arms[training]).rows.assign(
                trained_shots=float("nan") if t is None else t))
            checkpoints[training, fold, t] = checkpoint
        if any(len(h) != 1 for h in hashes.values()):
            raise RuntimeError(f"fold {fold}: the models were scored on different episode "
                               f"lists ({hashes}); paired differences need the same ones")
    rows = pd.concat(frames, ignore_index=True)
    by_label = {a.label: a for a in ARMS}
    order = rows["method"].map({a.label: i for i, a in enumerate(ARMS)})
    rows = (rows.assign(_order=order).sort_values(["fold", "_order", "shots"], kind="stable")
            .drop(columns="_order").reset_index(drop=True))
    rows.insert(1, "training", rows["method"].map(lambda m: by_label[m].training))
    rows.insert(2, "inference", rows["method"].map(lambda m: by_label[m].inference))
    rows.insert(3, "peer_method", rows["method"].map(lambda m: by_label[m].method))
    return MetaResult(rows.assign(base_seed=0), checkpoints)


def summarize(rows: pd.DataFrame, n_boot: int = 1000) -> pd.DataFrame:
    """Fold means per arm and shots (:func:`fsstools.evaluation.stats.fold_mean`), arms in
    :data:`ARMS` order, with the shots each peer was trained at (``trained_shots``)."""
    summary = stats.fold_mean(rows, by=("method", "training", "inference", "shots"),
                              n_boot=n_boot)
    if "trained_shots" in rows:
        trained = rows.groupby(["method", "shots"])["trained_shots"].first()
        summary["trained_shots"] = [trained.get((m, k)) for m, k in
                                    zip(summary["method"], summary["shots"], strict=True)]
    order = summary["method"].map({a.label: i for i, a in enumerate(ARMS)})
    return (summary.assign(_order=order).sort_values(["_order", "shots"])
            .drop(columns="_order").reset_index(drop=True))


def contrasts(rows: pd.DataFrame, n_boot: int = 1000) -> pd.DataFrame:
    """The paired differences of :data:`CONTRASTS` (each on the folds both arms share).

    Returns:
        Rows: contrast ("a vs b"), isolates, a, b, shots, n_folds, and for miou and fbiou
        the difference a - b (fractions) with its paired 95% interval; contrasts whose arms
        were not both scored are left out.
    """
    out = []
    for a, b, what in CONTRASTS:
        common = set(rows.loc[rows["method"] == a, "fold"]) & set(
            rows.loc[rows["method"] == b, "fold"])
        sub = rows[rows["method"].isin([a, b]) & rows["fold"].isin(common)]
        if not common:
            continue
        diff = stats.differences(sub, reference=b, by=("shots",), n_boot=n_boot)
        out.append(diff.drop(columns="method").assign(contrast=f"{a} vs {b}", isolates=what,
                                                      a=a, b=b))
    table = pd.concat(out, ignore_index=True)
    first = ["contrast", "isolates", "a", "b", "shots", "n_folds"]
    return table[first + [c for c in table.columns if c not in first]]


def two_by_two(summary: pd.DataFrame) -> pd.DataFrame:
    """The 2x2 of mIoU (%, 95% interval): rows CE and episodic PANet training, columns the
    inference rules of :data:`TWO_BY_TWO` (the same rule in each column), per shot count."""
    cells = summary[summary["training"].isin(["ce", "episodic-panet"])
                    & summary["inference"].isin(TWO_BY_TWO)]
    cells = cells.assign(cell=[readings.interval_text(r) for _, r in cells.iterrows()],
                         column=[f"{r.shots}-shot {r.inference}" for r in cells.itertuples()])
    table = cells.pivot(index="training", columns="column", values="cell")
    columns = [f"{k}-shot {inf}" for k in sorted(cells["shots"].unique())
               for inf in TWO_BY_TWO]
    return table.reindex(index=[t for t in TRAININGS if t in table.index],
                         columns=[c for c in columns if c in table.columns])


def peer_training_table(checkpoints: dict[tuple[str, int, int | None], Path]) -> pd.DataFrame:
    """Per model: the shots it was trained at, epochs, selected epoch, its validation score
    and the training time.

    The validation scores differ by training: the CE model's is the 16-way segmentation
    mIoU of the base classes, the peers' the mIoU of base-class episodes at their training
    shots; neither ever looks at a novel class.
    """
    rows = []
    for (training, fold, shots), checkpoint in checkpoints.items():
        meta = checkpoint_meta(checkpoint)
        history = pd.read_csv(Path(checkpoint).parent / "metrics.csv")
        val = history["val_miou"].dropna().to_numpy()
        rows.append({
            "training": training, "fold": fold, "trained_shots": shots,
            "epochs": int(history["epoch"].max()),
            "selected_epoch": meta["epoch"], "val_miou": meta["metrics"]["val_miou"],
            "last_epoch_gain_points": 100 * (val[-1] - val[-2]) if len(val) > 1 else None,
            "train_minutes": float(history["time_s"].sum()) / 60, "run": str(
                Path(checkpoint).parent.name),
        })  # fmt: skip
    return pd.DataFrame(rows)


def _half_width(r: pd.Series) -> float:
    return (r.miou_high - r.miou_low) / 2


CLAIM = "on par at 1 shot, read as level; ahead by more as shots grow"
"""The paper's claim against meta-learning, in the readings' words (on par = level)."""


def claim_note(first: pd.Series, last: pd.Series, lo: int, hi: int) -> str:
    """The paper's claim checked on RePRI minus PFENet-style at the fewest and most shots,
    with the readings' one rule: on par means level (the interval covers 0).

    The first half holds when the gap at ``lo`` shots is level. The second half holds when
    RePRI is ahead at ``hi`` shots and the gap grew by more than its uncertainty: the change
    is set against the half-widths of the two intervals combined in quadrature (the shot
    counts use independent episode lists, so their differences vary independently; an
    approximation of the change's 95% interval).
    """
    start = readings.verdict(first, "ahead of", "behind")
    first_half = start == readings.LEVEL
    change = last.miou - first.miou
    margin = (_half_width(first) ** 2 + _half_width(last) ** 2) ** 0.5
    trend = ("widens" if change > margin else "narrows" if change < -margin
             else "changes by less than its uncertainty")
    second_half = change > margin and readings.verdict(last, "ahead", "behind") == "ahead"
    holds = {(True, True): "holds", (True, False): "holds for its 1-shot half only",
             (False, True): "holds for its growth half only",
             (False, False): "does not hold"}[first_half, second_half]
    where = "level with" if first_half else start
    return (f"**The paper's claim** ({CLAIM}) {holds} here: at {lo} shot{'s' if lo > 1 else ''} "
            f"RePRI is {where} the PFENet-style peer ({readings.signed_gap(first)}), at {hi} "
            f"shots {readings.gap_with_verdict(last)}, and from {lo} to {hi} shots the gap "
            f"{trend} ({100 * change:+.1f} +- {100 * margin:.1f} points).")


def paper_claim(diffs: pd.DataFrame) -> str | None:
    """:func:`claim_note` on the claim's contrast (the first of :data:`CONTRASTS`) at the
    fewest and most shots of ``diffs`` (:func:`contrasts`); None with fewer than two."""
    a, b, _ = CONTRASTS[0]
    claim = diffs[diffs["a"].eq(a) & diffs["b"].eq(b)].set_index("shots").sort_index()
    if len(claim) < 2:
        return None
    lo, hi = claim.index[0], claim.index[-1]
    return claim_note(claim.loc[lo], claim.loc[hi], int(lo), int(hi))


def contrast_notes(diffs: pd.DataFrame, which: Sequence[tuple[str, str, str]] = CONTRASTS[2:],
                   bold: bool = True) -> list[str]:
    """One sentence per contrast of ``which`` present in ``diffs`` (:func:`contrasts`):
    a minus b at every shot count, with the verdict of each."""
    notes = []
    for a, b, what in which:
        sel = diffs[diffs["a"].eq(a) & diffs["b"].eq(b)].sort_values("shots")
        if len(sel):
            per_shot = "; ".join(f"{readings.signed_gap(r)} at {r.shots}-shot "
                                 f"({readings.verdict(r, 'ahead', 'behind')})"
                                 for _, r in sel.iterrows())
            head = f"{what[0].upper()}{what[1:]}"
            notes.append(f"{f'**{head}**' if bold else head} ({a} minus {b}): {per_shot}.")
    return notes


def reading(summary: pd.DataFrame, diffs: pd.DataFrame) -> list[str]:
    """The closing notes of notebook 06 as markdown bullets, written from the numbers.

    Args:
        summary: :func:`summarize` of the rows.
        diffs: :func:`contrasts` of the same rows.
    """
    notes: list[str | None] = []
    score = summary.set_index(["method", "shots"])
    shots = sorted(summary["shots"].unique())
    claim = diffs[diffs["a"].eq("CE + RePRI") & diffs["b"].eq("PFENet + head (own)")]
    claim = claim.set_index("shots")
    for k in shots:
        if k not in claim.index:
            continue
        r, p = score.loc[("CE + RePRI", k)], score.loc[("PFENet + head (own)", k)]
        notes.append(
            f"**{k}-shot, RePRI against PFENet-style:** {100 * r.miou:.1f} vs "
            f"{100 * p.miou:.1f} mIoU, paired difference {readings.signed_gap(claim.loc[k])} points: "
            f"{readings.verdict(claim.loc[k], 'RePRI ahead', 'PFENet-style ahead')}.")
    if len(shots) > 1:
        lo, hi = shots[0], shots[-1]
        gains = [f"{label} {100 * (score.loc[(label, hi)].miou - score.loc[(label, lo)].miou):+.1f}"
                 for label in dict.fromkeys(summary["method"])
                 if (label, lo) in score.index and (label, hi) in score.index]
        notes.append(f"**Gain from {lo} to {hi} shots** (points of mIoU): {', '.join(gains)}. "
                     "The paper, 1 to 5 shots: RePRI +7.7, PFENet +1.1.")
        notes.append(paper_claim(diffs))
    notes += contrast_notes(diffs, CONTRASTS[2:])
    if "trained_shots" in summary:
        for k, t in summary.dropna(subset=["trained_shots"]).groupby("shots")[
                "trained_shots"].first().items():
            if k != t:
                notes.append(f"The peers' {k}-shot scores come from their {int(t)}-shot "
                             "models (PANet and PFENet train one model per shot setting; "
                             "none is trained here at more).")
    notes.append("Every arm averages the same folds, each with the base model of base seed 0 "
                 "(the peers' initialisation and frozen trunk); the intervals cover episodes "
                 "only, so a gap smaller than the base-seed spread of notebooks 02 and 03 is "
                 "not evidence of a difference in training.")
    return readings.bullets(notes)
