"""Recipes of notebook 07 (your own images): the task from the notebook's parameters, or a
demo task cut from the profile's test data, and the results written as files.

Example:
    >>> task = own_task(prof, out, supports=[], queries=[], shots=2, n_queries=4)  # doctest: +SKIP
    >>> results = segment(task.supports, task.queries, "best.pt")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fsstools import paths
from fsstools.cache import atomic_write
from fsstools.data import splits, voc
from fsstools.errors import ConfigError
from fsstools.own_images.segmentation import QueryResult, parse_support, write_results
from fsstools.studies.profiles import Profile, ensure_data

DEMO_FOLDER = "demo_images"
RESULTS_FOLDER = "segmented"


@dataclass(frozen=True)
class OwnTask:
    """Supports as (image, mask) paths, queries as paths; ``demo``: made by the notebook."""

    supports: list[tuple[str, str]]
    queries: list[str]
    demo: bool


def _save(array: np.ndarray, path: Path) -> str:
    atomic_write(path, lambda p: Image.fromarray(array).save(p, format=path.suffix[1:].upper()
                                                             .replace("JPG", "JPEG")))
    return str(path)


def demo_task(prof: Profile, out: Path, shots: int, n_queries: int, fold: int = 0) -> OwnTask:
    """Images of the first novel class of ``fold`` in the profile's test data, written as a
    user would have them: JPEG images, 0/255 PNG masks for the supports (under
    ``<out>/demo_images``)."""
    ensure_data(prof, progress=False)
    root = prof.style_root("A")
    pairs = voc.read_pairs(root, prof.list_file)
    cls = splits.test_classes(prof.test_dataset, fold, root=root)[0]
    index = voc.class_index(root, pairs, splits.n_classes(prof.test_dataset, root))
    chosen = index[cls][:shots + n_queries]
    if len(chosen) < shots + n_queries:
        raise ConfigError(f"parameter n_queries: class {cls} is in {len(chosen)} test images, "
                          f"fewer than {shots} supports + {n_queries} queries", key="n_queries")
    folder = out / DEMO_FOLDER
    supports, queries = [], []
    for k, i in enumerate(chosen):
        image, mask = voc.load_pair(root, *pairs[i], splits.n_classes(prof.test_dataset, root))
        name = Path(pairs[i][0]).stem
        if k < shots:
            binary = np.where(mask == cls, 255, 0).astype(np.uint8)
            supports.append((_save(image, folder / f"{name}.jpg"),
                             _save(binary, folder / f"{name}_mask.png")))
        else:
            queries.append(_save(image, folder / f"{name}.jpg"))
    return OwnTask(supports, queries, demo=True)


def own_task(prof: Profile, out: Path, supports: Sequence[str], queries: Sequence[str],
             shots: int, n_queries: int) -> OwnTask:
    """The notebook's task: ``supports`` ("image:mask" paths, relative to the working
    folder) and ``queries``, or, when both are empty, :func:`demo_task`."""
    if not supports and not queries:
        return demo_task(prof, out, shots, n_queries)
    if not supports or not queries:
        raise ConfigError("parameters supports and queries: give both (or neither, for the "
                          "demo images)", key="supports")
    pairs = [parse_support(s) for s in supports]
    return OwnTask([(str(paths.resolve(i)), str(paths.resolve(m))) for i, m in pairs],
                   [str(paths.resolve(q)) for q in queries], demo=False)


def save_segmentation(results: Sequence[QueryResult], task: OwnTask, out: Path) -> pd.DataFrame:
    """Masks, overlays, p(foreground) and results.csv under ``<out>/segmented``; the rows."""
    rows = write_results(iter(results), out / RESULTS_FOLDER, task.queries, progress=False)
    return pd.DataFrame(rows)
