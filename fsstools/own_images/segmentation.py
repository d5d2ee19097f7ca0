"""Segment your own images: a few labelled supports, any number of queries, one call.

The backbone is loaded once from any checkpoint: one of ours (``fsstools train``), the
authors' RePRI/PFENet PSPNet checkpoints, or a torchvision ImageNet ResNet state dict
from a local file (its last stage as features, no base training). Every image is resized
to ``size`` on its longer side and padded (the test transform), features are extracted in
batches, the method fits one classifier per query on the supports and that query, and its
p(foreground) is brought back to the query's own resolution. With ``keep_base=True`` the
output labels every base class the base model knows and the novel class of the supports
(DIaM on the model's own classifier, :mod:`fsstools.own_images.keep_base`).

Example:
    >>> from fsstools import segment
    >>> results = segment(supports=[("cat.jpg", "cat.png")], queries=["q.jpg"],
    ...                   checkpoint="best.pt")  # doctest: +SKIP
    >>> results[0].mask.shape == results[0].image.shape[:2]  # doctest: +SKIP
    True
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from fsstools.cache import atomic_write, atomic_write_text
from fsstools.data.transforms import FEATURE_STRIDE, TestTransform
from fsstools.data.user_masks import ImageLike, describe, read_image, read_support
from fsstools.errors import ConfigError
from fsstools.features import feature_batches, restore_lost_foreground
from fsstools.inference import MethodConfig, fg_probs, resolve_method, run_method
from fsstools.inference.generalized import GFSS_METHODS, GFSSConfig
from fsstools.models.checkpoints import checkpoint_meta, load_model, read_checkpoint
from fsstools.models.imagenet import imagenet_extractor, imagenet_state
from fsstools.own_images import keep_base as kb
from fsstools.progress import bar as progress_bar

DEFAULT_SIZE = 417
"""Test size of the reference recipe (PASCAL), used unless the checkpoint records its own."""
THRESHOLD = 0.5
"""p(foreground) above which a pixel is foreground."""


@dataclass(frozen=True)
class Backbone:
    """A loaded feature extractor.

    Attributes:
        model: has ``extract_features(images) -> (B, C, h, w)``, in eval mode.
        kind: "fsstools" (our checkpoint), "reference" (RePRI/PFENet PSPNet) or "imagenet".
        size: the test size the checkpoint was validated at (else :data:`DEFAULT_SIZE`).
        path: the file it came from.
    """

    model: nn.Module
    kind: str
    size: int
    path: Path


def load_backbone(checkpoint: str | Path, device: str | torch.device = "cpu") -> Backbone:
    """The feature extractor of ``checkpoint`` (see the module doc), on ``device``.

    Raises:
        MissingError, DataError: no such file, or a file none of the loaders reads.
    """
    path = Path(checkpoint)
    state = imagenet_state(read_checkpoint(path))
    if state is not None:
        return Backbone(imagenet_extractor(state, path).to(device), "imagenet", DEFAULT_SIZE,
                        path)
    model = load_model(path, device)
    meta = checkpoint_meta(path)
    size = meta.get("config", {}).get("data", {}).get("val_size") if "format" in meta else None
    kind = "fsstools" if "format" in meta else "reference"
    return Backbone(model, kind, int(size or DEFAULT_SIZE), path)


@dataclass
class ImageFeatures:
    """Features of N images at one test size.

    Attributes:
        feats: (N, C, h, w) float32, on the CPU (L2-normalised over C unless asked not).
        valid: (N, h, w) bool, False on padding.
        masks: (N, h, w) {0, 1, 255} task masks on the feature grid, or None.
        masks_full: (N, size, size) {0, 1, 255} padded task masks, or None.
        resized: per image, its (height, width) before padding.
    """

    feats: torch.Tensor
    valid: torch.Tensor
    masks: torch.Tensor | None
    masks_full: torch.Tensor | None
    resized: list[tuple[int, int]]


def extract(model: nn.Module, images: Sequence[np.ndarray], size: int,
            masks: Sequence[np.ndarray] | None = None, device: str | torch.device = "cpu",
            batch_size: int = 8, normalize: bool = True) -> ImageFeatures:
    """Features of ``images`` ((H, W, 3) uint8 each, any sizes) resized and padded to
    ``size``, ``batch_size`` images per forward pass (:func:`fsstools.features.feature_batches`);
    ``masks`` (H, W) {0, 1, 255} go through the same geometry. ``normalize=False`` keeps
    the model's own scale (what its classifier reads)."""
    transform = TestTransform(size)
    samples = (transform(img, None if masks is None else masks[i]) for i, img in enumerate(images))
    batches = list(feature_batches(model, samples, device, batch_size, normalize))
    if not batches:
        raise ValueError("no images to extract features from")
    cat = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    resized = [transform.resized_hw(*img.shape[:2]) for img in images]
    return ImageFeatures(cat["feats"], cat["valid_small"], cat.get("masks_small"),
                         cat.get("masks_full"), resized)


def support_tensors(supports: ImageFeatures) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, C, h, w) features and (S, h, w) masks of one task's supports; a support whose
    object vanished on the feature grid gets back the cell holding most of it."""
    masks = supports.masks.numpy().astype(np.uint8)[None]  # (1, S, h, w)
    restore_lost_foreground(masks, supports.masks_full.numpy(), np.arange(len(masks[0]))[None],
                            np.ones(1, dtype=np.int64))
    return supports.feats, torch.from_numpy(masks[0]).long()


@dataclass
class QueryResult:
    """The segmentation of one query.

    Attributes:
        name: file stem, or "query<i>" for an image given in memory.
        image: (H, W, 3) uint8, the query as viewers show it (EXIF orientation applied).
        mask: (H, W) bool, foreground where ``probs`` > 0.5 (with ``labels``: where the
            novel class is the most probable).
        probs: (H, W) float32 p(foreground) (p(novel class)) at the query's resolution.
        logits: (h, w) the classifier's final logits on the feature grid ((K, h, w) with
            ``labels``).
        pi: the foreground (novel class) prior in force at the end (NaN for a method
            without one).
        traces: name -> (T,) per-iteration values ("loss", "ce", "entropy", "kl", "pi",
            "fg_share", ... ; "kd" with ``labels``); empty for a method that takes no step.
        iterations: steps the method took.
        seconds: this query's share of the time of its batch (features and fitting).
        labels: None, or with ``keep_base`` (H, W) int64 output indices: 0 background,
            the base classes, the novel class last (:attr:`classes` says which is which).
        classes: with ``keep_base``, the :class:`~fsstools.own_images.keep_base.OutputClass`
            of each output index; else empty.
    """

    name: str
    image: np.ndarray
    mask: np.ndarray
    probs: np.ndarray
    logits: torch.Tensor
    pi: float
    traces: dict[str, np.ndarray] = field(default_factory=dict)
    iterations: int = 0
    seconds: float = 0.0
    labels: np.ndarray | None = None
    classes: tuple[kb.OutputClass, ...] = ()

    @property
    def share(self) -> float:
        """Predicted foreground share of the query."""
        return float(self.mask.mean())

    @property
    def prior(self) -> np.ndarray:
        """(T,) the prior pi over the iterations (empty without traces)."""
        return self.traces.get("pi", np.zeros(0))


def _probs_at(logits: torch.Tensor, size: int, resized: tuple[int, int],
              hw: tuple[int, int]) -> np.ndarray:
    """(h, w) logits -> (H, W) p(foreground): upsampled to the padded size, cropped to the
    image, resized to the query's own size."""
    probs = fg_probs(logits[None].float(), (size, size))[:, :resized[0], :resized[1]]
    probs = F.interpolate(probs[None], size=hw, mode="bilinear", align_corners=False)
    return probs[0, 0].clamp(0, 1).numpy().astype(np.float32)


def _method(method: str | MethodConfig | GFSSConfig | None, keep_base: bool
            ) -> MethodConfig | GFSSConfig:
    if keep_base:
        return kb.resolve(method)
    if isinstance(method, GFSSConfig) or (isinstance(method, str) and method in GFSS_METHODS):
        name = getattr(method, "name", method)
        raise ConfigError(f"method {name!r} labels the base classes too: pass keep_base=True "
                          "(--keep-base), or a binary method such as repri", key="method")
    cfg = resolve_method("repri" if method is None else method)
    if cfg.prior == "oracle" or cfg.reference:
        raise ConfigError(f"method {cfg.name!r} reads the query's ground truth, which your "
                          "images do not have; use repri (or another method without oracle "
                          "prior or reference mode)", key="method")
    return cfg


def parse_support(text: str) -> tuple[str, str]:
    """``"IMAGE:MASK"`` -> (image, mask); the mask is after the last colon."""
    image, sep, mask = str(text).rpartition(":")
    if not sep or not image or not mask:
        raise ConfigError(f"--support {text!r}: expected IMAGE:MASK, e.g. --support "
                          "cat.jpg:cat.png", key="support")
    return image, mask


def query_names(queries: Sequence[ImageLike]) -> list[str]:
    """A unique name per query: its file stem (``_2``, ``_3`` ... on repeats) or query<i>."""
    names: list[str] = []
    for i, q in enumerate(queries):
        base = Path(q).stem if isinstance(q, str | Path) else f"query{i}"
        name, k = base, 1
        while name in names:
            k += 1
            name = f"{base}_{k}"
        names.append(name)
    return names


def iter_segment(
    supports: Sequence[tuple[ImageLike, ImageLike]],
    queries: Sequence[ImageLike],
    checkpoint: str | Path | Backbone,
    method: str | MethodConfig | GFSSConfig | None = None,
    size: int | None = None,
    device: str | torch.device = "cpu",
    class_id: int | None = None,
    batch_size: int = 8,
    keep_base: bool = False,
) -> Iterator[QueryResult]:
    """:func:`segment`, one query at a time (features of ``batch_size`` queries at once).

    Every input is read and checked before the first result: a bad support, query or
    checkpoint fails before anything is computed or written.
    """
    cfg = _method(method, keep_base)
    if not supports:
        raise ConfigError("no support given; pass at least one (image, mask) pair")
    if not queries:
        raise ConfigError("no query given; pass at least one image to segment")
    pairs = [read_support(img, mask, i, class_id) for i, (img, mask) in enumerate(supports)]
    for i, q in enumerate(queries):  # a bad query fails now, not after hours of work
        read_image(q, describe(q, f"query {i}"))
    backbone = checkpoint if isinstance(checkpoint, Backbone) else load_backbone(checkpoint,
                                                                                 device)
    classifier = (kb.base_classifier(backbone.model, backbone.kind, backbone.path)
                  if keep_base else None)
    classes = kb.with_novel(classifier, class_id) if classifier is not None else ()
    size = size or backbone.size
    if size < FEATURE_STRIDE:
        raise ConfigError(f"size {size}: the test size must be at least {FEATURE_STRIDE}",
                          key="size")
    normalize = classifier is None  # DIaM reads features at the scale the classifier does
    shots = extract(backbone.model, [p[0] for p in pairs], size, [p[1] for p in pairs],
                    device, batch_size, normalize)
    s_feats, s_masks = support_tensors(shots)
    names = query_names(queries)
    peer = backbone.model if getattr(cfg, "classifier", None) == "pfenet" else None
    for a in range(0, len(queries), batch_size):
        tic = time.perf_counter()
        images = [read_image(q, names[a + i]) for i, q in enumerate(queries[a:a + batch_size])]
        q = extract(backbone.model, images, size, device=device, batch_size=batch_size,
                    normalize=normalize)
        b = len(images)
        if classifier is not None:
            out = kb.fit(cfg, classifier, s_feats, s_masks, q.feats, q.valid, device)
        else:
            out = run_method(cfg, s_feats.expand(b, *s_feats.shape),
                             s_masks.expand(b, *s_masks.shape), q.feats, q.valid, trace=True,
                             device=device, model=peer)
        seconds = (time.perf_counter() - tic) / b
        for i, img in enumerate(images):
            traces = {k: v[:, i].double().numpy() for k, v in (out.traces or {}).items()}
            steps = max(0, len(traces.get("loss", [])) - 1)
            logits = out.logits[i].cpu()
            if classifier is None:
                probs = _probs_at(logits, size, q.resized[i], img.shape[:2])
                yield QueryResult(names[a + i], img, probs > THRESHOLD, probs, logits,
                                  float(out.pi[i]), traces, steps, seconds)
                continue
            labels, probs = kb.labels_at(logits, size, q.resized[i], img.shape[:2])
            yield QueryResult(names[a + i], img, labels == len(classes) - 1, probs, logits,
                              float(out.pi[i, -1]), traces, steps, seconds, labels, classes)


def segment(
    supports: Sequence[tuple[ImageLike, ImageLike]],
    queries: Sequence[ImageLike],
    checkpoint: str | Path | Backbone,
    method: str | MethodConfig | GFSSConfig | None = None,
    size: int | None = None,
    device: str | torch.device = "cpu",
    class_id: int | None = None,
    batch_size: int = 8,
    keep_base: bool = False,
) -> list[QueryResult]:
    """Segment ``queries`` from a few labelled ``supports`` with one method (RePRI): the
    novel class of the supports against background, or with ``keep_base`` every base class
    of the model too (DIaM).

    Args:
        supports: (image, mask) pairs; each a path, a PIL image or an array. Masks: binary
            (0/1 or 0/255, 255 ignore beside 1) or class ids with ``class_id``.
        queries: images (paths, PIL images or arrays), any sizes.
        checkpoint: our checkpoint, the authors' RePRI/PFENet one, a torchvision ImageNet
            ResNet state dict, or a :class:`Backbone` already loaded.
        method: a name of :data:`fsstools.inference.METHODS` or a MethodConfig (default
            repri); with ``keep_base``, one of :data:`fsstools.inference.GFSS_METHODS` or a
            GFSSConfig (default diam).
        size: test size (longer side, padded square); default the checkpoint's own.
        device: "cpu", "cuda", "cuda:1" ...
        class_id: the class to segment in class-id masks.
        batch_size: images per forward pass.
        keep_base: also label every base class of the model (its own classifier plus the
            novel class, fitted by DIaM); the results then carry ``labels`` and ``classes``.
            Needs a base model: an ImageNet trunk or an episodic peer is refused.

    Returns:
        One :class:`QueryResult` per query, in order.

    Raises:
        MissingError, DataError, ConfigError: a missing or unreadable file, a mask of
            another size than its image or without foreground, an unknown method (the
            message names the file or value and the fix); ``keep_base`` with a model
            without base classifier.
    """
    return list(iter_segment(supports, queries, checkpoint, method, size, device, class_id,
                             batch_size, keep_base))


# ----------------------------------------------------------------------------- files

OVERLAY_COLOUR = (255, 48, 48)
"""Tint of the predicted foreground in overlays."""
OVERLAY_ALPHA = 0.45
BACKGROUND_DIM = 0.55
RESULT_FIELDS = ("query", "source", "height", "width", "pi", "predicted_share", "iterations",
                 "seconds", "mask", "overlay", "probs")
"""Columns of ``results.csv`` (and keys of each row of ``results.json``)."""
KEEP_BASE_FIELDS = (*RESULT_FIELDS, "labels", "classes")
"""The same with ``keep_base``: the label map's file and the names of the classes in it."""


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: the background dimmed, the foreground tinted, its outline drawn."""
    out = image.astype(np.float64)
    out[~mask] *= BACKGROUND_DIM
    out[mask] = (1 - OVERLAY_ALPHA) * out[mask] + OVERLAY_ALPHA * np.array(OVERLAY_COLOUR)
    p = np.pad(mask, 1, mode="edge")
    inner = mask & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    out[mask & ~inner] = OVERLAY_COLOUR
    return out.round().astype(np.uint8)


def _png(array: np.ndarray) -> Callable[[Path], None]:
    return lambda p: Image.fromarray(array).save(p, format="PNG")


def _npy(array: np.ndarray) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with path.open("wb") as f:  # a file object: np.save would add ".npy" to the name
            np.save(f, array)

    return write


def write_result(result: QueryResult, out_dir: Path, source: str = "") -> dict:
    """Write ``<name>_mask.png`` (0/255, the query's size), ``<name>_overlay.png`` and
    ``<name>_probs.npy`` (float32 p(foreground)) into ``out_dir``, each atomically; return
    the result's row (see :data:`RESULT_FIELDS`). A result with labels (``keep_base``) also
    gets ``<name>_labels.png`` (output indices, a palette PNG in the classes' colours), its
    overlay is coloured per class, and its row has :data:`KEEP_BASE_FIELDS`."""
    files = {"mask": f"{result.name}_mask.png", "overlay": f"{result.name}_overlay.png",
             "probs": f"{result.name}_probs.npy"}
    atomic_write(out_dir / files["mask"], _png(result.mask.astype(np.uint8) * 255))
    if result.labels is None:
        shown = overlay(result.image, result.mask)
    else:
        colours = np.array([c.colour for c in result.classes], dtype=np.uint8)
        shown = kb.overlay_classes(result.image, result.labels, colours)
    atomic_write(out_dir / files["overlay"], _png(shown))
    atomic_write(out_dir / files["probs"], _npy(result.probs))
    h, w = result.mask.shape
    row = {"query": result.name, "source": source, "height": h, "width": w,
           "pi": result.pi, "predicted_share": result.share, "iterations": result.iterations,
           "seconds": round(result.seconds, 4), **files}
    if result.labels is not None:
        row["labels"] = f"{result.name}_labels.png"
        atomic_write(out_dir / row["labels"], kb.label_png(result.labels, result.classes))
        row["classes"] = "; ".join(result.classes[i].name for i in np.unique(result.labels))
    return row


def write_results(results: Iterator[QueryResult], out_dir: str | Path, sources: Sequence[str],
                  progress: bool = True) -> list[dict]:
    """Write every result of ``results`` (see :func:`write_result`) as it comes, then
    ``results.csv`` and ``results.json`` with one row per query (and ``classes.csv`` for
    results with labels, :func:`fsstools.own_images.keep_base.write_classes`); a bar shows progress.

    Nothing is written before the first result exists, so inputs that fail their checks
    leave no folder behind."""
    out_dir = Path(out_dir)
    rows = []
    with progress_bar(total=len(sources), desc="segment", unit="query",
                      disable=not progress) as bar:
        for result in results:
            rows.append(write_result(result, out_dir, sources[len(rows)]))
            bar.update(1)
    classes = result.classes if rows else ()
    if classes:
        kb.write_classes(classes, out_dir)
    with io.StringIO() as text:
        writer = csv.DictWriter(text, fieldnames=KEEP_BASE_FIELDS if classes else RESULT_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(out_dir / "results.csv", text.getvalue())
    atomic_write_text(out_dir / "results.json", json.dumps(rows, indent=1))
    return rows
