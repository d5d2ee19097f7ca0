"""The generalized protocol with its queries streamed: their features extracted a block at a
time while scoring and never written, for test sets too large to cache (COCO-20i).

Every image of the test list with an object is a query, so caching the queries' features
(:func:`fsstools.features.ensure_features`) costs about 6.1 MB per image in float32 at 417
pixels (512 channels on 53 x 53, with the masks): 8.8 GB for PASCAL-5i's 1,449 validation
images, about 245 GB for COCO-20i's 40,000 or so. Past a size limit (``feature_cache_gb``,
:data:`FEATURE_CACHE_GB` by default) only the supports' features are cached (at most shots x
novel classes x runs images, shared by every query of a run); the queries are read, resized
and run through the base model a block at a time, and every pending (method, shot count,
run) of a study is scored on a block before the next one is extracted, so the model runs
once per query image whatever the number of methods, shot counts and runs. Only the
per-class counts are kept; the support sets of the runs being scored stay in memory
meanwhile (at most novel classes x shots x runs images' features).

The counts equal the cached path's: the same extraction (:func:`fsstools.features.
feature_batches` with the transform, batch size and storage type of the cache), the same
inference on the same queries and the same confusion, summed in integers. The forward
passes group the images otherwise, which changes no feature on a CPU; on a GPU a pass of
another size may pick another convolution algorithm and round a feature otherwise, so
the two paths' scores are cached under different keys.

Example:
    >>> cache_bytes(40137, channels=512, size=417, dtype="float32") // 10**9
    245
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fsstools import cache
from fsstools.data import splits, voc
from fsstools.data.generalized import ANY_PIXEL, Pair, SupportDraw
from fsstools.data.transforms import FEATURE_STRIDE, TestTransform
from fsstools.evaluation.generalized_scoring import (
    RunInputs,
    class_rows,
    count_queries,
    query_batch,
    query_workers,
)
from fsstools.features import FeatureSettings, FeatureStore, feature_batches, features_key
from fsstools.inference.generalized import GFSSConfig
from fsstools.models.checkpoints import load_model
from fsstools.progress import bar as progress_bar

FEATURE_CACHE_GB = 10.0
"""Default size limit (GB, 10^9 bytes) of the queries' feature cache: PASCAL-5i at 417 pixels
(8.8 GB) and the embedded benchmark are cached, COCO-20i (245 GB) streams."""
EXTRACT_BATCH = 32
"""Images per forward pass, the feature cache's (``ensure_features``' ``batch_size``)."""


def cache_bytes(n_images: int, channels: int, size: int, dtype: str) -> int:
    """Bytes of the feature cache of ``n_images`` at test size ``size``: the features
    (``channels`` on the stride-8 grid, in ``dtype``), and the masks and padding flags on the
    grid and at image size (a byte each)."""
    grid = -(-size // FEATURE_STRIDE)
    per_image = channels * grid * grid * np.dtype(dtype).itemsize + 2 * (grid * grid + size * size)
    return n_images * per_image


def support_images(draws: Sequence[SupportDraw]) -> list[Pair]:
    """Every support of every run of ``draws``, each once, in list order."""
    used = {pair for draw in draws for run in range(len(draw.runs))
            for _, pair in draw.supports(run)}
    return [pair for pair in draws[0].images if pair in used]


def _store(parts: list[dict[str, torch.Tensor]], pairs: Sequence[Pair], dtype: str
           ) -> FeatureStore:
    """An in-memory :class:`FeatureStore` of ``pairs`` from :func:`feature_batches`' output,
    in the cache's storage types."""
    kinds = {"feats": dtype, "masks_small": np.uint8, "valid_small": bool,
             "masks_full": np.uint8, "valid_full": bool}
    arrays = {name: np.concatenate([p[name].numpy() for p in parts]).astype(kind)
              for name, kind in kinds.items()}
    return FeatureStore(**arrays, index={img: i for i, (img, _) in enumerate(pairs)}, key="")


@dataclass(frozen=True)
class QueryStream:
    """The base model and how it reads the queries.

    Attributes:
        model: the base model (eval mode, on ``device``).
        root: the data root; n_classes: of the dataset's class table.
        settings: the feature settings of the cache it stands in for.
        key: of the checkpoint, the images with their files' fingerprints, the settings,
            the supports' cached features and this module's code.
    """

    model: torch.nn.Module
    root: Path
    n_classes: int
    settings: FeatureSettings
    device: str
    key: str

    def stores(self, pairs: Sequence[Pair], block: int) -> Iterator[FeatureStore]:
        """In-memory stores of ``pairs`` in order, about ``block`` images each (whole
        forward passes of :data:`EXTRACT_BATCH` images)."""
        transform = TestTransform(self.settings.size)
        samples = (transform(*voc.load_pair(self.root, img, mask, self.n_classes))
                   for img, mask in pairs)
        parts: list[dict[str, torch.Tensor]] = []
        start = count = 0
        for batch in feature_batches(self.model, samples, self.device, EXTRACT_BATCH,
                                     self.settings.normalize):
            parts.append(batch)
            count += len(batch["feats"])
            if count - start >= block:
                yield _store(parts, pairs[start:count], self.settings.dtype)
                parts, start = [], count
        if parts:
            yield _store(parts, pairs[start:count], self.settings.dtype)


def open_stream(checkpoint: Path, root: str | Path, pairs: Sequence[Pair], dataset: str,
                settings: FeatureSettings, supports_key: str, device: str = "cpu"
                ) -> QueryStream:
    """The :class:`QueryStream` of the queries ``pairs`` under ``checkpoint``, whose supports'
    features are cached under ``supports_key``."""
    root = Path(root)
    key = cache.cache_key(stage="gfss_stream",
                          queries=features_key(checkpoint, pairs, root, settings),
                          supports=supports_key, code=cache.code_version(__name__))
    model = load_model(checkpoint, device).eval()
    return QueryStream(model, root, splits.n_classes(dataset, root), settings, device, key)


@dataclass(frozen=True)
class StreamJob:
    """One (method, shot count, run) to score: its run's inputs, queries and method."""

    inputs: RunInputs
    queries: frozenset[str]
    method: GFSSConfig | None


def score_streamed(stream: QueryStream, jobs: Sequence[StreamJob], order: Sequence[Pair],
                   batch_queries: int | None = None, progress: bool = True
                   ) -> list[pd.DataFrame]:
    """Per-class rows of every job (:func:`~fsstools.evaluation.generalized_scoring.
    score_run`'s) from one pass over their queries, in the order of ``order``.

    Args:
        order: the draw's images; the pass reads those that are a query of some job.
        batch_queries: queries fitted together (None: as in ``score_run``).
    """
    pairs = [pair for pair in order if any(pair[0] in job.queries for job in jobs)]
    C, h, w = jobs[0].inputs.support_feats.shape[-3:]
    batch = query_batch(C * h * w, stream.device, batch_queries)
    block = batch * query_workers(stream.device)
    confs = [torch.zeros(len(j.inputs.classes), len(j.inputs.classes), dtype=torch.long,
                         device=stream.device) for j in jobs]
    bar = progress_bar(total=len(pairs), desc="stream queries", unit="img", disable=not progress)
    try:
        for store in stream.stores(pairs, block):
            for conf, job in zip(confs, jobs, strict=True):
                rows = np.array([row for img, row in store.index.items() if img in job.queries])
                if len(rows):
                    conf += count_queries(store, job.inputs, rows, job.method, stream.device,
                                          batch_queries)
            bar.update(len(store.index))
    finally:
        bar.close()
    return [class_rows(conf, job.inputs.classes, job.inputs.n_base)
            for conf, job in zip(confs, jobs, strict=True)]


def richest_listed_query(draw: SupportDraw, run: int, n_classes: int) -> int:
    """Position in ``draw.images`` of the run's query holding the most classes (then the
    most novel ones), from the list's class index (no feature, no mask read again)."""
    pairs = list(dict.fromkeys(voc.read_pairs(draw.root, draw.list_file)))
    present = voc.class_index(draw.root, pairs, n_classes, ANY_PIXEL)
    held: dict[str, set[int]] = {}
    for c, images in present.items():
        for i in images:
            held.setdefault(pairs[i][0], set()).add(c)
    novel, queries = set(draw.novel), {img for img, _ in draw.queries(run)}
    ranked = [((len(held.get(img, ())), len(held.get(img, set()) & novel)), -pos)
              for pos, (img, _) in enumerate(draw.images) if img in queries]
    return -max(ranked)[1]
