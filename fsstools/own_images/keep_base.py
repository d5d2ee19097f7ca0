"""Keeping the base classes when segmenting your own images (``keep_base=True``).

The base model's own 1x1 classifier (background + the base classes it was trained on) gets
one more output, the novel class of the supports, and DIaM fits it per query
(:func:`fsstools.inference.generalized.run_gfss`, as the generalized protocol scores it):
every query pixel is labelled background, one of the base classes or the novel class. This
needs a model with a base classifier: a base PSPNet (ours, or the authors' RePRI/PFENet
one), not an ImageNet trunk or an episodic peer.

A label map holds output indices: 0 background, 1..n_base the base classes in the
classifier's order, n_base + 1 the novel class; :class:`OutputClass` gives each index its
kind, its class id in the data set the model was trained on (where the checkpoint records
it) and a name.

Example:
    >>> labels = np.array([[0, 1], [2, 2]])
    >>> overlay_classes(np.full((2, 2, 3), 200, np.uint8), labels,
    ...                 np.array([[0, 0, 0], [0, 0, 255], [255, 0, 0]], np.uint8))[1, 1].tolist()
    [255, 0, 0]
"""

from __future__ import annotations

import colorsys
import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from fsstools.cache import atomic_write_text
from fsstools.constants import IGNORE_INDEX
from fsstools.data import splits
from fsstools.errors import ConfigError, UserError, did_you_mean
from fsstools.inference.generalized import GFSS_METHODS, GFSSConfig, GFSSResult, run_gfss
from fsstools.models.checkpoints import authors_split, checkpoint_meta
from fsstools.models.pspnet import PSPNet

DEFAULT_METHOD = "diam"
NOVEL_COLOUR = (255, 48, 48)
"""Colour of the novel class in overlays (the binary overlays' tint)."""
BASE_HUES = (0.1, 0.9)
"""Base classes take hues spread evenly over this range: vivid, none grey, none the novel
class's red."""
CLASS_FIELDS = ("index", "kind", "class_id", "name", "colour")
"""Columns of ``classes.csv`` (with ``keep_base``): what each value of a label map is."""
UPSAMPLE_ELEMENTS = 1 << 25
"""Probabilities brought to a query's own size at a time (128 MiB in float32), so a phone
photo with many classes never holds all its full-size maps at once."""
OVERLAY_ALPHA = 0.5
BACKGROUND_DIM = 0.55


@dataclass(frozen=True)
class OutputClass:
    """One output of the keep-base classifier.

    Attributes:
        index: the value of its pixels in a label map.
        kind: "background", "base" or "novel".
        class_id: its id in the data set the base model was trained on (None where the
            checkpoint does not say; for the novel class, ``class_id`` of :func:`segment`).
        name: the data set's name of the class, else "base <index>" / "novel".
        colour: (R, G, B) of the class in overlays and in the label map's palette.
    """

    index: int
    kind: str
    class_id: int | None
    name: str
    colour: tuple[int, int, int]


@dataclass(frozen=True)
class BaseClassifier:
    """A base model's 1x1 classifier and what its outputs are.

    Attributes:
        weight: (K_b, C) float32, background first; bias: (K_b,).
        classes: the K_b outputs (background, then the base classes).
    """

    weight: torch.Tensor
    bias: torch.Tensor
    classes: tuple[OutputClass, ...]


def _known_classes(path: Path, kind: str, n_base: int) -> tuple[list[int] | None, str | None,
                                                                 str | None]:
    """The base class ids (classifier order), the data set and its root, where the
    checkpoint records them (ours) or its place in the authors' archive says."""
    if kind == "fsstools":
        meta = checkpoint_meta(path)
        data = meta.get("config", {}).get("data", {})
        ids = [int(c) for c in meta.get("classes") or []]
        return (ids if len(ids) == n_base else None), data.get("dataset"), data.get("root")
    split = authors_split(path)
    if split is None:
        return None, None, None
    ids = splits.base_classes(*split)  # the reference relabels base classes in id order
    return (ids if len(ids) == n_base else None), split[0], None


def _name(dataset: str | None, root: str | None, class_id: int, index: int) -> str:
    if dataset is None:
        return f"base {index}"
    try:
        return splits.class_name(dataset, class_id, root)
    except (UserError, OSError, IndexError):  # a folder data set not on this machine
        return f"class {class_id}"


def base_colour(index: int, n_base: int) -> tuple[int, int, int]:
    """(R, G, B) of base class ``index`` (1..n_base): hues evenly over :data:`BASE_HUES`."""
    lo, hi = BASE_HUES
    hue = lo + (hi - lo) * (index - 1) / max(1, n_base - 1)
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95 if index % 2 else 0.7)
    return round(r * 255), round(g * 255), round(b * 255)


def base_classifier(model: nn.Module, kind: str, path: str | Path) -> BaseClassifier:
    """The classifier of a loaded base model (``kind`` as :class:`Backbone` says) and its
    classes, named where the checkpoint records its data set.

    Raises:
        ConfigError: the model has no base classifier (an ImageNet trunk, an episodic peer).
    """
    path = Path(path)
    if kind == "imagenet" or not isinstance(model, PSPNet):
        what = ("an ImageNet trunk" if kind == "imagenet"
                else f"a {type(model).__name__} (an episodic model)")
        raise ConfigError(f"keep_base: checkpoint {path} is {what}, with no classifier of base "
                          "classes to label them with; pass a base model (a best.pt of "
                          "`fsstools train`, or the authors' RePRI PSPNet checkpoint), or leave "
                          "keep_base off (--keep-base) for novel-versus-background masks",
                          key="keep_base")
    weight = model.classifier.weight.detach()[:, :, 0, 0].float().cpu()  # (K_b, C)
    bias = model.classifier.bias.detach().float().cpu()
    n_base = weight.shape[0] - 1
    if n_base + 2 > IGNORE_INDEX:
        raise ConfigError(f"keep_base: checkpoint {path} has {n_base} base classes; a label "
                          f"map holds at most {IGNORE_INDEX - 2}", key="keep_base")
    ids, dataset, root = _known_classes(path, kind, n_base)
    classes = [OutputClass(0, "background", 0, "background", (0, 0, 0))]
    for i in range(1, n_base + 1):
        cid = ids[i - 1] if ids is not None else None
        name = _name(dataset, root, cid, i) if cid is not None else f"base {i}"
        classes.append(OutputClass(i, "base", cid, name, base_colour(i, n_base)))
    return BaseClassifier(weight, bias, tuple(classes))


def with_novel(classifier: BaseClassifier, class_id: int | None) -> tuple[OutputClass, ...]:
    """The classifier's classes and the novel one after them."""
    name = f"class {class_id}" if class_id is not None else "novel"
    return (*classifier.classes, OutputClass(len(classifier.classes), "novel", class_id, name,
                                             NOVEL_COLOUR))


def resolve(method: str | GFSSConfig | None) -> GFSSConfig:
    """The generalized method to fit (default :data:`DEFAULT_METHOD`).

    Raises:
        ConfigError: an unknown name, or a method that reads the query's labels.
    """
    if isinstance(method, GFSSConfig):
        cfg = method
    else:
        name = DEFAULT_METHOD if method is None else getattr(method, "name", str(method))
        if name not in GFSS_METHODS:
            raise ConfigError(f"method {name!r} with keep_base: use a generalized method "
                              f"({', '.join(GFSS_METHODS)}){did_you_mean(name, GFSS_METHODS)}",
                              key="method")
        cfg = GFSS_METHODS[name]
    if cfg.needs_labels:
        raise ConfigError(f"method {cfg.name!r} reads the query's labels (pi={cfg.pi!r}), which "
                          "your images do not have; use diam", key="method")
    return cfg


def fit(cfg: GFSSConfig, classifier: BaseClassifier, support_feats: torch.Tensor,
        support_masks: torch.Tensor, query_feats: torch.Tensor, query_valid: torch.Tensor,
        device: str | torch.device = "cpu") -> GFSSResult:
    """DIaM's classifier for B queries sharing one support set.

    Args:
        support_feats: (S, C, h, w) unnormalised; support_masks: (S, h, w) {0, 1, 255}.
        query_feats: (B, C, h, w) unnormalised; query_valid: (B, h, w) bool.

    Returns:
        :class:`GFSSResult` with traces; logits (B, K_b + 1, h, w), the novel class last.
    """
    novel = classifier.weight.shape[0]
    labels = torch.where(support_masks == 1, novel, support_masks)  # base pixels are background
    return run_gfss(cfg, classifier.weight.to(device), classifier.bias.to(device),
                    support_feats[None].to(device), labels[None].to(device),
                    query_feats.to(device), query_valid.to(device), 1, trace=True)


def labels_at(logits: torch.Tensor, size: int, resized: tuple[int, int],
              hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(K, h, w) logits -> the most probable class per pixel (H, W) int64 and the novel
    class's probability (H, W) float32, at the query's own size.

    The probabilities are upsampled to the padded size (bilinear, align_corners=True, as
    the generalized protocol scores them), cropped to the image and resized to its own size
    a few classes at a time.
    """
    probs = torch.softmax(logits.float(), dim=0)[None]  # (1, K, h, w)
    probs = F.interpolate(probs, size=(size, size), mode="bilinear", align_corners=True)
    probs = probs[:, :, :resized[0], :resized[1]]
    K = probs.shape[1]
    step = max(1, UPSAMPLE_ELEMENTS // (hw[0] * hw[1]))
    best = torch.full(hw, -1.0)
    labels = torch.zeros(hw, dtype=torch.long)
    for a in range(0, K, step):
        part = F.interpolate(probs[:, a:a + step], size=hw, mode="bilinear",
                             align_corners=False)[0]  # (k, H, W)
        value, index = part.max(dim=0)
        better = value > best
        best = torch.where(better, value, best)
        labels = torch.where(better, index + a, labels)
    novel = part[-1].clamp(0, 1)  # the last chunk holds the last class
    return labels.numpy(), novel.numpy().astype(np.float32)


def overlay_classes(image: np.ndarray, labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: background (label 0) dimmed, every other class tinted with its
    colour (``colours`` (K, 3) uint8) and outlined in it."""
    out = image.astype(np.float64)
    fg = labels != 0
    out[~fg] *= BACKGROUND_DIM
    tint = colours[labels].astype(np.float64)
    out[fg] = (1 - OVERLAY_ALPHA) * out[fg] + OVERLAY_ALPHA * tint[fg]
    p = np.pad(labels, 1, mode="edge")
    inner = ((p[:-2, 1:-1] == labels) & (p[2:, 1:-1] == labels) & (p[1:-1, :-2] == labels)
             & (p[1:-1, 2:] == labels))
    edge = fg & ~inner
    out[edge] = tint[edge]
    return out.round().astype(np.uint8)


def label_png(labels: np.ndarray, classes: Sequence[OutputClass]) -> Callable[[Path], None]:
    """A palette PNG: pixel values are the output indices, shown in the classes' colours."""
    def write(path: Path) -> None:
        h, w = labels.shape
        img = Image.frombytes("P", (w, h), np.ascontiguousarray(labels, np.uint8).tobytes())
        img.putpalette([v for c in classes for v in c.colour])
        img.save(path, format="PNG")

    return write


def write_classes(classes: Sequence[OutputClass], out_dir: str | Path) -> None:
    """``classes.csv``: the index, kind, class id, name and colour of every output."""
    with io.StringIO() as text:
        writer = csv.DictWriter(text, fieldnames=CLASS_FIELDS)
        writer.writeheader()
        writer.writerows({"index": c.index, "kind": c.kind,
                          "class_id": "" if c.class_id is None else c.class_id, "name": c.name,
                          "colour": "#{:02x}{:02x}{:02x}".format(*c.colour)} for c in classes)
        atomic_write_text(Path(out_dir) / "classes.csv", text.getvalue())
