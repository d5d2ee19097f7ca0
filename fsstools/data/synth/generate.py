"""Writing the embedded synthetic benchmark: 20 shape x texture classes in two visual styles.

Two scene layouts, chosen by ``SynthConfig.preset``: ``"v2"`` (the default, the benchmark)
imitates PASCAL VOC's scene statistics (class-dependent object sizes with a wide spread
within each class, objects cut by the frame, small objects, 1-4 classes per image; see
:mod:`.pascal` and ``docs/benchmark.md``); ``"v1"`` is the uniform-size variant, every object
covering 12-36% of the image, for comparison.

Generated on demand in VOC layout (see ``data/README.md``), deterministic from a seed and
cached: ``<root>/synth.json`` records the generating config and its hash, and a second
call with the same config reuses the files.

    >>> from pathlib import Path
    >>> from fsstools.data.synth.benchmark import ensure_synth
    >>> root = ensure_synth(Path("data/synth"))  # doctest: +SKIP
    >>> (root / "A" / "lists" / "train.txt").read_text().splitlines()[0]  # doctest: +SKIP
    'JPEGImages/A_train_00000.jpg SegmentationClass/A_train_00000.png'

The code version of this module (with what it imports) is the generator version a folder's
manifest records; :mod:`.benchmark` adds the reuse, the summary and the contact sheet.

Every image is rendered from its own seed, derived from (seed, style, split, index), so the
bytes on disk do not depend on the number of worker processes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fsstools import cache
from fsstools.cache import atomic_write_text
from fsstools.constants import IGNORE_INDEX
from fsstools.data.synth.classes import N_CLASSES, class_names
from fsstools.data.synth.manifest import MANIFEST, generator_version
from fsstools.data.synth.manifest import read as _read_manifest
from fsstools.data.synth.pascal import plan_images
from fsstools.data.synth.render import RENDERERS, STYLES
from fsstools.data.synth.stats import label_counts, summarise
from fsstools.errors import ConfigError, UserError
from fsstools.progress import bar as progress_bar

SYNTH_CLASSES = tuple(class_names())
SPLITS = ("train", "val")
MIN_IMAGES_PER_CLASS = 11
"""One query plus up to ten support images per class for 10-shot episodes."""

PRESETS = tuple(RENDERERS)
"""Benchmark versions: "v1" (uniform 12-36% objects) and "v2" (PASCAL-like, the default)."""
# v1 only: objects per image, 1, 2 or 3 with these probabilities (mean 1.9).
N_OBJECTS_PROBS = (0.35, 0.40, 0.25)
SAME_CLASS_PROB = 0.1
"""v1 only: chance that an image's second object repeats the first one's class."""


class SynthError(UserError):
    """The output folder cannot hold the synthetic benchmark."""


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Equal configs produce byte-identical files.

    Attributes:
        n_train, n_val: images per style in each split.
        size: image side in pixels (square images).
        seed: root of every per-image seed.
        styles: visual domains to write, each a key of ``render.STYLES``.
        jpeg_quality: JPEG quality of the images.
        preset: scene layout, "v2" (the benchmark: PASCAL-like sizes) or "v1" (the
            uniform-size variant).
    """

    n_train: int = 5000
    n_val: int = 1000
    size: int = 128
    seed: int = 0
    styles: tuple[str, ...] = ("A", "B")
    jpeg_quality: int = 90
    preset: str = "v2"

    def __post_init__(self) -> None:
        if self.n_train < 1 or self.n_val < 1:
            raise ConfigError(f"n_train and n_val must be >= 1, got {self.n_train}, {self.n_val}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if self.size < 32:
            raise ConfigError(f"size must be >= 32 pixels, got {self.size}")
        unknown = [s for s in self.styles if s not in STYLES]
        if unknown or not self.styles or len(set(self.styles)) != len(self.styles):
            raise ConfigError(
                f"styles must be distinct names from {sorted(STYLES)}, got {self.styles}"
            )
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.preset not in PRESETS:
            raise ConfigError(
                f"preset must be one of {list(PRESETS)} (v2: PASCAL-like object sizes, v1: "
                f"the first version), got {self.preset!r}",
                key="preset",
            )

    def n_images(self, split: str) -> int:
        return self.n_train if split == "train" else self.n_val


def synth_hash(cfg: SynthConfig) -> str:
    """Hash of the config and the generator version: the cache key of a generated set."""
    return cache.cache_key(stage="synth", config=asdict(cfg), code=generator_version())


def image_name(style: str, split: str, index: int) -> str:
    return f"{style}_{split}_{index:05d}"


def plan_classes(cfg: SynthConfig, style: str, split: str) -> list[tuple[int, ...]]:
    """Object classes of every image of one split (one id per object).

    Classes are dealt from a stream of shuffled permutations of 1..20, so every class
    appears (almost exactly) equally often. The benchmark ("v2") draws PASCAL's classes per
    image and objects per class (``pascal.plan_images``); the uniform-size variant ("v1")
    draws 1-3 objects, later ones on top.
    """
    n = cfg.n_images(split)
    if cfg.preset == "v2":
        tag = PRESETS.index(cfg.preset)  # a stream of its own
        rng = np.random.default_rng([cfg.seed, _style_index(style), SPLITS.index(split), tag])
        return plan_images(rng, n, N_CLASSES)
    rng = np.random.default_rng([cfg.seed, _style_index(style), SPLITS.index(split), 0])
    counts = rng.choice(np.arange(1, len(N_OBJECTS_PROBS) + 1), size=n, p=N_OBJECTS_PROBS)
    repeat = rng.random(n) < SAME_CLASS_PROB
    n_perm = -(-int(counts.sum()) // N_CLASSES)
    stream = np.concatenate([rng.permutation(N_CLASSES) + 1 for _ in range(n_perm)]).tolist()
    plan, pos = [], 0
    for k, dup in zip(counts.tolist(), repeat.tolist(), strict=True):
        classes = stream[pos : pos + k]
        pos += k
        if dup and k > 1:
            classes[1] = classes[0]
        plan.append(tuple(classes))
    return plan


def _style_index(style: str) -> int:
    return sorted(STYLES).index(style)


def _render_task(task: tuple) -> np.ndarray:
    """Render and write one image and its mask; returns its ``label_counts`` (2, N_CLASSES + 1)."""
    style_dir, name, classes, entropy, size, style, quality, preset = task
    rng = np.random.default_rng(np.random.SeedSequence(entropy))
    image, label = RENDERERS[preset](rng, classes, size, STYLES[style], IGNORE_INDEX)
    Image.fromarray(image).save(Path(style_dir, "JPEGImages", f"{name}.jpg"), quality=quality)
    Image.fromarray(label).save(Path(style_dir, "SegmentationClass", f"{name}.png"))
    return label_counts(label)


def _tasks(root: Path, cfg: SynthConfig) -> list[tuple]:
    tasks = []
    for style in cfg.styles:
        for split in SPLITS:
            for i, classes in enumerate(plan_classes(cfg, style, split)):
                entropy = (cfg.seed, _style_index(style), SPLITS.index(split), i)
                name = image_name(style, split, i)
                tasks.append(
                    (str(root / style), name, classes, entropy, cfg.size, style,
                     cfg.jpeg_quality, cfg.preset)
                )
    return tasks


def _prepare_root(root: Path, styles: tuple[str, ...]) -> None:
    """Make ``root`` writable and empty of older synthetic styles; refuse foreign folders."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write_probe"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise SynthError(f"cannot write to {root} ({e}); choose a writable --out folder") from None
    manifest = root / MANIFEST
    old_styles: list[str] = []
    if manifest.is_file():
        # Only names we know: a damaged manifest must never point rmtree elsewhere.
        old = _read_manifest(manifest).get("config", {}).get("styles", [])
        old_styles = [s for s in old if s in STYLES]
    for style in sorted(set(styles) | set(old_styles)):
        folder = root / style
        if not folder.exists():
            continue
        if not manifest.is_file():
            raise SynthError(
                f"{folder} exists but {manifest} does not, so it was not written by "
                "`fsstools synth`; delete it or choose another --out folder"
            )
        shutil.rmtree(folder)


def _run(tasks: list[tuple], workers: int, progress: bool) -> list[np.ndarray]:
    bar = progress_bar(total=len(tasks), desc="synth", unit="img", disable=not progress)
    results = []
    if workers <= 1:
        for task in tasks:
            results.append(_render_task(task))
            bar.update()
    else:
        # spawn: safe even when the caller (a notebook) already runs torch threads.
        chunk = max(1, min(32, len(tasks) // (4 * workers)))
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for counts in pool.imap(_render_task, tasks, chunksize=chunk):
                results.append(counts)
                bar.update()
    bar.close()
    return results


def generate(
    root: Path, cfg: SynthConfig, workers: int | None = None, progress: bool = True
) -> dict:
    """Write the benchmark under ``root`` (replacing an older one) and return its manifest."""
    root = Path(root)
    _prepare_root(root, cfg.styles)
    manifest = {"config": asdict(cfg), "hash": synth_hash(cfg), "version": generator_version()}
    atomic_write_text(root / MANIFEST, json.dumps({**manifest, "complete": False}, indent=1))
    for style in cfg.styles:
        for sub in ("JPEGImages", "SegmentationClass", "lists"):
            (root / style / sub).mkdir(parents=True, exist_ok=True)
    tasks = _tasks(root, cfg)
    start = time.perf_counter()
    workers = min(workers or os.cpu_count() or 1, len(tasks))
    counts = np.stack(_run(tasks, workers, progress))  # (N, 2, 21)
    objects = [len(t[2]) for t in tasks]
    stats, pos = {}, 0
    for style in cfg.styles:
        for split in SPLITS:
            n = cfg.n_images(split)
            lines = "".join(
                f"JPEGImages/{image_name(style, split, i)}.jpg "
                f"SegmentationClass/{image_name(style, split, i)}.png\n"
                for i in range(n)
            )
            atomic_write_text(root / style / "lists" / f"{split}.txt", lines)
            stats[f"{style}/{split}"] = summarise(
                counts[pos : pos + n], cfg.size, objects[pos : pos + n]
            )
            pos += n
    manifest.update(
        complete=True,
        classes=list(SYNTH_CLASSES),
        stats=stats,
        seconds=round(time.perf_counter() - start, 1),
    )
    atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=1))
    _warn_sparse_classes(root, stats)
    return manifest


def _warn_sparse_classes(root: Path, stats: dict) -> None:
    for key, s in stats.items():
        few = [c + 1 for c, n in enumerate(s["images_per_class"]) if n < MIN_IMAGES_PER_CLASS]
        if few:
            warnings.warn(
                f"{root}/{key}: classes {few} appear in fewer than {MIN_IMAGES_PER_CLASS} images "
                "(too few for 10-shot episodes); raise --n-train/--n-val",
                stacklevel=3,
            )


def is_current(root: Path, cfg: SynthConfig) -> bool:
    """True when ``root`` holds a complete set generated from ``cfg`` by this generator."""
    manifest = _read_manifest(Path(root) / MANIFEST)
    if not manifest.get("complete") or manifest.get("hash") != synth_hash(cfg):
        return False
    return all(
        (Path(root) / s / "lists" / f"{sp}.txt").is_file() for s in cfg.styles for sp in SPLITS
    )


