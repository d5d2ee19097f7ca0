"""The data side of generalized few-shot segmentation: seeded support sets and class labels.

In the generalized protocol (DIaM, Hajimiri et al., CVPR 2023) a run has one support set for
all its queries: ``shots`` images per novel class. A support image of class c holds c (at
least ``min_fg`` pixels, the rule of :func:`fsstools.data.voc.class_index`) and not a single
pixel of any other novel class, so no support tells about two novel classes. The queries of
a run are every other image of the list that holds an object (any pixel of a base or novel
class; images of background only are left out, as the authors' lists do), labelled with all
their classes. Several runs draw several support sets, each from its own seed, so run r is
the same whatever the number of runs.

Class labels follow the classifier's order (:func:`label_lut`): background 0, the base
classes in the base model's order, then the novel classes; 255 stays ignored.

Example:
    >>> lut = label_lut(base=[2, 4], novel=[1, 3], n_classes=4)
    >>> lut[[0, 1, 2, 3, 4, 255]].tolist()
    [0, 3, 1, 4, 2, 255]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from fsstools.cache import text_hash
from fsstools.constants import IGNORE_INDEX
from fsstools.data import splits, voc
from fsstools.errors import ConfigError, DataError

Pair = tuple[str, str]
ANY_PIXEL = 1
QUERY_STREAM = 1
"""Third seed word of a run's query subset, apart from its support draw ``(seed, run)``."""
"""The threshold of "holds no pixel of another novel class" and of "holds an object"."""


@dataclass(frozen=True)
class SupportSettings:
    """How the support sets of the generalized protocol are drawn.

    Attributes:
        dataset: class table ("synth", "pascal", "coco", "folder").
        fold, scheme: which classes are novel.
        shots: support images per novel class.
        n_runs: support sets (runs); run r is drawn from ``(seed, r)``.
        seed: the same seed, list and masks give the same support sets.
        min_fg: pixels a support's class must cover (None: the 2048-pixel rule scaled to
            each image's area).
        max_queries: queries per run, a subset of the run's queries drawn from
            ``(seed, run)`` (None: every one, the authors' protocol); a quick look, since
            DIaM fits every query on the support set.
    """

    dataset: str
    fold: int
    shots: int
    n_runs: int = 5
    seed: int = 0
    scheme: str = "interleaved"
    min_fg: int | None = None
    max_queries: int | None = None

    def __post_init__(self) -> None:
        splits.check_split(self.dataset, self.fold, self.scheme)
        if self.shots < 1 or self.n_runs < 1 or (self.max_queries or 1) < 1:
            raise ConfigError(f"shots, n_runs and max_queries must be >= 1, got {self.shots}, "
                              f"{self.n_runs} and {self.max_queries}")


@dataclass(frozen=True)
class SupportDraw:
    """The support sets of ``n_runs`` runs and the images they leave as queries.

    Attributes:
        root: data root (absolute); list_file: the list the images come from.
        settings: how they were drawn.
        base, novel: the fold's base and novel classes (dataset ids, sorted).
        images: every image of the list that holds an object, in list order.
        runs: per run, per novel class (in ``novel`` order), its ``shots`` support pairs.
        hash: of the settings, classes and supports (not of root or list_file).
    """

    root: str
    list_file: str
    settings: SupportSettings
    base: tuple[int, ...]
    novel: tuple[int, ...]
    images: tuple[Pair, ...]
    runs: tuple[tuple[tuple[Pair, ...], ...], ...]
    hash: str = ""

    def supports(self, run: int) -> list[tuple[int, Pair]]:
        """(novel class, pair) of every support image of ``run``, class by class."""
        return [(c, pair) for c, pairs in zip(self.novel, self.runs[run], strict=True)
                for pair in pairs]

    def queries(self, run: int) -> list[Pair]:
        """The images of ``run`` that are not among its supports, in list order (at most
        ``settings.max_queries`` of them, a seeded subset)."""
        used = {img for _, (img, _) in self.supports(run)}
        pairs = [pair for pair in self.images if pair[0] not in used]
        limit = self.settings.max_queries
        if limit is None or limit >= len(pairs):
            return pairs
        rng = np.random.default_rng([self.settings.seed, run, QUERY_STREAM])
        return [pairs[i] for i in sorted(rng.choice(len(pairs), size=limit, replace=False))]


def draw_hash(draw: SupportDraw) -> str:
    """Hash of what the support sets are: settings, classes, images and supports."""
    data = asdict(replace(draw, root="", list_file="", hash=""))
    return text_hash(json.dumps(data, sort_keys=True, separators=(",", ":")))


def support_candidates(holders: dict[int, Sequence[int]], present: dict[int, Sequence[int]],
                       novel: Sequence[int]) -> dict[int, list[int]]:
    """Per novel class, the images (indices) that may support it: they hold the class and
    no pixel of another novel class.

    Args:
        holders: class -> images holding it (the min-fg rule).
        present: class -> images with at least one pixel of it.
        novel: the novel classes.
    """
    seen: dict[int, int] = {}
    for c in novel:
        for i in present[c]:
            seen[i] = seen.get(i, 0) + 1
    return {c: [i for i in holders[c] if seen.get(i, 0) == 1] for c in novel}


def draw_supports(root: str | Path, list_file: str | Path, settings: SupportSettings,
                  force: bool = False) -> SupportDraw:
    """Draw the support sets of ``settings.n_runs`` runs from the list's images.

    Run r takes ``numpy.random.default_rng([seed, r])`` and picks, class by class in the
    order of the novel classes, ``shots`` distinct images among the class's candidates
    (:func:`support_candidates`).

    Args:
        root: data root the list's paths are relative to.
        list_file: the test list (supports and queries both come from it).
        force: index the masks' classes again instead of reusing the cached index.

    Raises:
        DataError: a novel class with fewer candidates than shots, or no query left.
    """
    s = settings
    pairs = list(dict.fromkeys(voc.read_pairs(root, list_file)))
    total = splits.n_classes(s.dataset, root)
    novel = splits.test_classes(s.dataset, s.fold, s.scheme, root)
    base = splits.base_classes(s.dataset, s.fold, s.scheme, root)
    holders = voc.class_index(root, pairs, total, s.min_fg, force=force)
    present = voc.class_index(root, pairs, total, ANY_PIXEL, force=force)
    candidates = support_candidates(holders, present, novel)
    names = splits.class_names(s.dataset, root)
    for c in novel:
        if len(candidates[c]) < s.shots:
            raise DataError(
                f"novel class {c} ({names[c - 1]}) has {len(candidates[c])} image(s) in "
                f"{list_file} under {root} that hold it without another novel class; "
                f"{s.shots} shot(s) need {s.shots}: use fewer shots or a larger list")
    objects = sorted({i for c in range(1, total + 1) for i in present[c]})
    runs = []
    for r in range(s.n_runs):
        rng = np.random.default_rng([s.seed, r])
        run = tuple(tuple(pairs[int(i)] for i in rng.choice(candidates[c], size=s.shots,
                                                             replace=False))
                    for c in novel)
        runs.append(run)
    if len(objects) <= len(novel) * s.shots:
        raise DataError(f"{list_file} under {root} holds {len(objects)} image(s) with objects; "
                        f"{len(novel) * s.shots} go to the supports and none would be left as "
                        "a query: use fewer shots or a larger list")
    draw = SupportDraw(str(Path(root).resolve()), str(list_file), s, tuple(base), tuple(novel),
                       tuple(pairs[i] for i in objects), tuple(runs))
    return replace(draw, hash=draw_hash(draw))


def label_lut(base: Sequence[int], novel: Sequence[int], n_classes: int) -> np.ndarray:
    """Dataset class ids -> classifier indices, as a (256,) int64 lookup.

    Background 0 stays 0, ``base[i]`` becomes ``i + 1`` (the base model's order), ``novel[j]``
    becomes ``1 + len(base) + j``, 255 stays 255; a class in neither list (none in a fold's
    split) is ignored (255).

    Raises:
        ValueError: a class in both lists, or outside 1..n_classes.
    """
    if set(base) & set(novel):
        raise ValueError(f"classes {sorted(set(base) & set(novel))} are both base and novel")
    if any(not 1 <= c <= n_classes for c in (*base, *novel)):
        raise ValueError(f"class ids must be in 1..{n_classes}")
    lut = np.full(IGNORE_INDEX + 1, IGNORE_INDEX, dtype=np.int64)
    lut[0] = 0
    lut[list(base)] = np.arange(1, len(base) + 1)
    lut[list(novel)] = np.arange(1 + len(base), 1 + len(base) + len(novel))
    return lut


def class_order(base: Sequence[int], novel: Sequence[int]) -> list[int]:
    """Dataset class id of each classifier index: ``[0, *base, *novel]``."""
    return [0, *base, *novel]
