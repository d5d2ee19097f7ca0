"""Seeded episode sampling, saved as JSON so every method scores the very same tasks.

An episode: a query image holding at least one test class, a class drawn among the test
classes it holds, and K distinct support images holding that class, never the query.
"Holding" means covering at least ``min_fg`` mask pixels (see ``voc.class_index``).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from fsstools import cache, paths
from fsstools.cache import atomic_write_text, text_hash
from fsstools.constants import IGNORE_INDEX
from fsstools.data import splits, voc
from fsstools.errors import ConfigError, DataError, MissingError

Pair = tuple[str, str]
FORMAT = "fsstools.episodes/1"
MaskT = TypeVar("MaskT", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class Episode:
    """One task: image/mask paths relative to the data root, and the class to segment."""

    query: Pair
    class_id: int
    supports: tuple[Pair, ...]


@dataclass(frozen=True)
class EpisodeList:
    """Episodes with the settings that drew them (``root`` is stored absolute).

    ``hash`` covers the episodes and the sampling settings, not ``root`` or ``list_file``,
    so the same tasks hash alike wherever the data lives. ``shots`` is the support count,
    or the upper end when ``random_shots`` is set.
    """

    root: str
    list_file: str
    dataset: str
    fold: int
    scheme: str
    shots: int
    seed: int
    episodes: tuple[Episode, ...]
    hash: str = ""
    classes: tuple[int, ...] = ()
    random_shots: tuple[int, int] | None = None
    min_fg: int | None = None
    skipped: dict[int, int] = field(default_factory=dict)  # class -> images, too few to sample

    def __len__(self) -> int:
        return len(self.episodes)


def _content(el: EpisodeList) -> dict[str, Any]:
    data = asdict(el)
    data["skipped"] = {str(c): n for c, n in el.skipped.items()}  # JSON keys are strings
    return data


def episode_hash(el: EpisodeList) -> str:
    """sha256 (truncated) of the canonical JSON of the episodes and sampling settings."""
    data = _content(el)
    for key in ("root", "list_file", "hash"):
        del data[key]
    return text_hash(json.dumps(data, sort_keys=True, separators=(",", ":")))


def _enough_images(
    index: dict[int, list[int]],
    classes: list[int],
    need: int,
    skip_small: bool,
    where: str,
    names: tuple[str, ...],
) -> tuple[list[int], dict[int, int]]:
    small = {c: len(index[c]) for c in classes if len(index[c]) < need}
    for c, count in small.items():
        message = (
            f"class {c} ({names[c - 1]}) is held by {count} image(s) of {where}, fewer than the "
            f"{need} an episode needs (shots + 1 query)"
        )
        if not skip_small:
            raise DataError(
                f"{message}; use fewer shots or a larger list, or leave such classes out with "
                "skip_small (`fsstools episodes --skip-small`, `fsstools evaluate --set "
                "skip_small=true`)"
            )
        warnings.warn(f"{message}; skipping it", stacklevel=3)
    kept = [c for c in classes if c not in small]
    if not kept:
        raise DataError(
            f"no test class has enough images in {where} for {need - 1} shot(s); use fewer "
            "shots or a larger list"
        )
    return kept, small


@dataclass(frozen=True)
class EpisodeSettings:
    """How an episode list is drawn; the same settings key its cache entry.

    Attributes:
        dataset: "pascal", "coco", "synth" or "folder" (sets class count and test classes).
        fold: 0..3.
        shots: support images per episode (ignored when ``random_shots`` is set).
        n_episodes: number of episodes.
        seed: the same seed and inputs give the same episodes.
        scheme: COCO-20i split scheme.
        classes: test classes to use instead of the fold's, e.g.
            ``splits.coco_to_pascal_classes(fold)`` with ``dataset="pascal"``.
        min_fg: pixels a class must cover for an image to hold it; None scales the
            2048-pixel rule to each image's area.
        random_shots: (lo, hi) to draw each episode's shot count uniformly in lo..hi.
        skip_small: leave out (with a warning) classes held by fewer than shots + 1
            images instead of raising.
    """

    dataset: str
    fold: int
    shots: int
    n_episodes: int
    seed: int = 0
    scheme: str = "interleaved"
    classes: tuple[int, ...] | None = None
    min_fg: int | None = None
    random_shots: tuple[int, int] | None = None
    skip_small: bool = False

    def __post_init__(self) -> None:  # lists from configs and options, tuples here
        for name in ("classes", "random_shots"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(int(v) for v in value))


def sample_episodes(root: str | Path, list_file: str | Path, settings: EpisodeSettings,
                    force: bool = False) -> EpisodeList:
    """Draw ``settings.n_episodes`` tasks from a list with
    ``numpy.random.default_rng(settings.seed)``.

    Args:
        root: data root the list's paths are relative to.
        list_file: image list of the test split (see ``voc.read_pairs``).
        force: index the masks' classes again instead of reusing the cached index.

    Example:
        >>> settings = EpisodeSettings("synth", fold=0, shots=1, n_episodes=1000, seed=0)
        >>> el = sample_episodes("data/synth/A", "lists/val.txt", settings)  # doctest: +SKIP
        >>> save_episodes(el, "outputs/episodes/synth_f0_1shot.json")  # doctest: +SKIP
    """
    dataset, fold, shots, n_episodes = (settings.dataset, settings.fold, settings.shots,
                                        settings.n_episodes)
    seed, scheme, classes, min_fg = (settings.seed, settings.scheme, settings.classes,
                                     settings.min_fg)
    random_shots = settings.random_shots
    if random_shots is not None:
        lo, hi = random_shots
        if not 1 <= lo <= hi:
            raise ConfigError(
                f"random_shots must be (lo, hi) with 1 <= lo <= hi, got {random_shots}"
            )
        shots, random_shots = hi, (int(lo), int(hi))
    if shots < 1 or n_episodes < 1:
        raise ConfigError(f"shots and n_episodes must be >= 1, got {shots} and {n_episodes}")
    total = splits.n_classes(dataset, root)
    fold_classes = splits.test_classes(dataset, fold, scheme, root)  # also validates arguments
    classes = sorted(set(classes)) if classes is not None else fold_classes
    if not classes or not all(1 <= c <= total for c in classes):
        raise ConfigError(f"classes must be ids in 1..{total} for {dataset}, got {classes}")

    # Duplicate lines would let one image be both query and support.
    pairs = list(dict.fromkeys(voc.read_pairs(root, list_file)))
    index = voc.class_index(root, pairs, total, min_fg, force=force)
    where = f"{list_file} under {root}"
    classes, skipped = _enough_images(
        index, classes, shots + 1, settings.skip_small, where, splits.class_names(dataset, root)
    )
    holders = {c: np.asarray(index[c]) for c in classes}
    held = {c: set(index[c]) for c in classes}
    queries = np.asarray(sorted(set().union(*held.values())))

    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(n_episodes):
        q = int(rng.choice(queries))
        c = int(rng.choice([c for c in classes if q in held[c]]))
        k = int(rng.integers(random_shots[0], random_shots[1] + 1)) if random_shots else shots
        pool = holders[c][holders[c] != q]
        chosen = rng.choice(pool, size=k, replace=False)
        episodes.append(Episode(pairs[q], c, tuple(pairs[int(i)] for i in chosen)))

    el = EpisodeList(
        root=str(Path(root).resolve()),
        list_file=str(list_file),
        dataset=dataset,
        fold=fold,
        scheme=scheme,
        shots=shots,
        seed=seed,
        episodes=tuple(episodes),
        classes=tuple(classes),
        random_shots=random_shots,
        min_fg=min_fg,
        skipped=skipped,
    )
    return replace(el, hash=episode_hash(el))


def ensure_episodes(root: str | Path, list_file: str | Path, settings: EpisodeSettings,
                    force: bool = False) -> EpisodeList:
    """:func:`sample_episodes`, cached in the cache folder under a key of the list, the
    masks' fingerprints (regenerated or edited masks draw new episodes), the sampling
    settings and the code version; reuse is announced."""
    pairs = list(dict.fromkeys(voc.read_pairs(root, list_file)))
    n_classes = splits.n_classes(settings.dataset, root)
    key = cache.cache_key(
        stage="episodes",
        masks=voc.class_index_key(root, pairs, n_classes, settings.min_fg),
        settings=asdict(settings),
        code=cache.code_version(__name__),
    )
    d, k, s = settings.dataset, settings.shots, settings.seed
    path = paths.cache_dir("episodes") / f"{d}-fold{settings.fold}-{k}shot-seed{s}-{key}.json"
    if path.is_file() and not force:
        cache.announce_reuse(f"{settings.n_episodes} {k}-shot episodes (seed {s})", path)
        return load_episodes(path, root=paths.resolve(root))
    el = sample_episodes(root, list_file, settings, force=force)
    save_episodes(el, path)
    return el


def save_episodes(el: EpisodeList, path: str | Path) -> Path:
    """Write ``el`` as JSON (atomically); ``load_episodes`` gives it back unchanged."""
    return atomic_write_text(Path(path), json.dumps({"format": FORMAT, **_content(el)}, indent=1))


def _pair(value: list[str]) -> Pair:
    img, mask = value
    return str(img), str(mask)


def _check_episodes(el: EpisodeList, path: Path) -> None:
    """Names, class ids and support counts of a loaded list (an edited file may break them)."""
    try:
        splits.test_classes(el.dataset, el.fold, el.scheme, el.root)
    except ConfigError as err:
        raise DataError(f"episode file {path}: {err}; re-create it with `fsstools episodes`"
                        ) from None
    total = splits.n_classes(el.dataset, el.root)
    lo, hi = el.random_shots if el.random_shots is not None else (el.shots, el.shots)
    if not el.episodes:
        raise DataError(f"episode file {path} holds no episodes; re-create it with "
                        "`fsstools episodes`")
    for i, ep in enumerate(el.episodes):
        problem = None
        if not 1 <= ep.class_id <= total:
            problem = f"class {ep.class_id} is not a {el.dataset} class id (1..{total})"
        elif not lo <= len(ep.supports) <= hi:
            want = f"{lo}..{hi}" if lo != hi else str(lo)
            problem = f"it has {len(ep.supports)} support(s), the file says {want}"
        elif ep.query[0] in {img for img, _ in ep.supports}:
            problem = f"its query {ep.query[0]} is also one of its supports"
        elif len({img for img, _ in ep.supports}) != len(ep.supports):
            problem = "it lists the same support image twice"
        if problem:
            raise DataError(f"episode file {path}, episode {i}: {problem}; fix that episode or "
                            "re-create the file with `fsstools episodes`")


def load_episodes(
    path: str | Path, root: str | Path | None = None, accept_edited: bool = False
) -> EpisodeList:
    """Read an episode list saved by ``save_episodes`` and check it.

    Args:
        path: the JSON file.
        root: data root to use instead of the saved one (data moved, other machine).
        accept_edited: take a file whose episodes no longer match its stored hash (edited
            on purpose); a warning names both hashes and the list gets its new hash, so
            results keyed by it never mix with the original's.

    Raises:
        MissingError: no such file.
        DataError: not an episode list, edited (without ``accept_edited``), or an episode
            that cannot be a task (unknown class, wrong number of supports, query among the
            supports).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingError(
            f"episode file {path} not found; create it with `fsstools episodes`"
        )
    try:
        data = json.loads(path.read_text())
        if data.pop("format", None) != FORMAT:
            raise ValueError(f"not a {FORMAT} file")
        episodes = tuple(
            Episode(_pair(e["query"]), int(e["class_id"]), tuple(_pair(s) for s in e["supports"]))
            for e in data.pop("episodes")
        )
        shots = data.pop("random_shots")
        data["random_shots"] = tuple(shots) if shots is not None else None
        data["classes"] = tuple(data.pop("classes"))
        data["skipped"] = {int(c): n for c, n in data.pop("skipped").items()}
        el = EpisodeList(**data, episodes=episodes)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise DataError(
            f"episode file {path} is not a valid episode list ({err}); re-create it with "
            "`fsstools episodes`"
        ) from err
    actual = episode_hash(el)
    if actual != el.hash:
        if not accept_edited:
            raise DataError(
                f"episode file {path} does not match its hash {el.hash} (it was edited or "
                "corrupted); if you edited it on purpose, accept it with --accept-edited "
                "(accept_edited=True), else re-create it with `fsstools episodes`"
            )
        warnings.warn(
            f"episode file {path} was edited (stored hash {el.hash}, now {actual}); using it "
            f"as edited, under the new hash {actual}",
            stacklevel=2,
        )
        el = replace(el, hash=actual)
    _check_episodes(el, path)
    return replace(el, root=str(root)) if root is not None else el


def load_episode_files(
    files: Sequence[str | Path],
    dataset: str | None = None,
    fold: int | None = None,
    scheme: str = "interleaved",
    accept_edited: bool = False,
) -> dict[tuple[int, int], EpisodeList]:
    """Saved episode lists for one study, keyed by (shots, seed), checked to fit together.

    Args:
        files: JSON files of ``fsstools episodes`` (relative paths: to the working folder).
        dataset, fold, scheme: what the study evaluates; every file must hold such episodes
            (None: those of the first file).
        accept_edited: see :func:`load_episodes`.

    Raises:
        ConfigError: a file of another dataset, fold or scheme; random-shot lists; two files
            with the same shots and seed; files drawn from different data roots.
        MissingError: a file, or the data root it names, does not exist.
        DataError: see :func:`load_episodes`.
    """
    lists: dict[tuple[int, int], EpisodeList] = {}
    names: dict[tuple[int, int], str] = {}
    for name in files:
        el = load_episodes(paths.resolve(name), accept_edited=accept_edited)
        if dataset is None or fold is None:
            dataset, fold, scheme = el.dataset, el.fold, el.scheme
        scheme_differs = dataset == "coco" and el.scheme != scheme  # only COCO has two
        if (el.dataset, el.fold) != (dataset, fold) or scheme_differs:
            fix = f"--set dataset={el.dataset} --set fold={el.fold}"
            fix += f" --set scheme={el.scheme}" if el.dataset == "coco" else ""
            raise ConfigError(
                f"episode file {name} holds {el.dataset} fold {el.fold} episodes but the config "
                f"evaluates {dataset} fold {fold}; make them agree, e.g. {fix}",
                key="episodes",
            )
        if el.random_shots is not None:
            raise ConfigError(
                f"episode file {name} draws each episode's shots in {el.random_shots[0]}.."
                f"{el.random_shots[1]}; evaluation scores fixed-shot lists: sample one with "
                "`fsstools episodes --shots K`",
                key="episodes",
            )
        if (el.shots, el.seed) in lists:
            raise ConfigError(
                f"episode files {names[el.shots, el.seed]} and {name} both hold {el.shots}-shot "
                f"episodes of seed {el.seed}; results are labelled by (shots, seed): pass one "
                "of them per evaluation",
                key="episodes",
            )
        first = next(iter(lists.values()), el)
        if el.root != first.root:
            raise ConfigError(
                f"episode files {next(iter(names.values()))} and {name} were drawn from "
                f"different data roots ({first.root}, {el.root}); evaluate one root at a time",
                key="episodes",
            )
        if not Path(el.root).is_dir():
            raise MissingError(
                f"episode file {name} reads its images under {el.root}, which does not exist; "
                "if the data moved, set the file's \"root\" entry to the new folder (the "
                "hash does not cover it)"
            )
        lists[el.shots, el.seed], names[el.shots, el.seed] = el, str(name)
    return lists


def episode_mask(full_mask: MaskT, class_id: int | torch.Tensor) -> MaskT:
    """Binary task mask from a class-id mask: 1 for ``class_id``, 255 kept, 0 elsewhere.

    Args:
        full_mask: (..., H, W) class ids, numpy or torch.
        class_id: one class, or a (B,) tensor of classes for a (B, H, W) batch.

    Returns:
        int64 mask shaped like ``full_mask``, of the same kind (numpy or torch).
    """
    if isinstance(full_mask, torch.Tensor):
        c = torch.as_tensor(class_id, device=full_mask.device)
        if c.ndim == 1:
            c = c.view(-1, *[1] * (full_mask.ndim - 1))  # (B, 1, 1) broadcasts over (B, H, W)
        out = (full_mask == c).long()
        out[full_mask == IGNORE_INDEX] = IGNORE_INDEX
        return out
    out = (full_mask == class_id).astype(np.int64)
    out[full_mask == IGNORE_INDEX] = IGNORE_INDEX
    return out
