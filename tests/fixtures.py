"""Helpers that build tiny VOC-layout data folders for tests (import, don't collect)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.io import savemat

from fsstools import config as config_lib
from fsstools.constants import IGNORE_INDEX
from fsstools.data.check import voc_colormap
from fsstools.models import ModelConfig
from fsstools.models.checkpoints import CHECKPOINT_FORMAT
from fsstools.models.pspnet import PSPNet, build_model
from tests.tiny import TINY_MODEL, training_record

SIZE = (24, 32)  # (H, W) of the default images
BIG = (12, 16)  # block of the image's main class: 192 px
SMALL = (4, 4)  # block of the secondary class: 16 px, below MIN_FG_TEST
MIN_FG_TEST = 50  # min_fg that counts the main class of an image but not the secondary one


def main_class(j: int) -> int:
    """Class covering the big block of default image ``j``."""
    return j % 20 + 1


def second_class(j: int) -> int:
    """Class covering the small block of default image ``j``."""
    return (j + 7) % 20 + 1


def default_masks(n_images: int = 60, size: tuple[int, int] = SIZE) -> dict[str, np.ndarray]:
    """Masks of ``n_images`` images: a big block of ``main_class(j)``, a small block of
    ``second_class(j)``, a 255 top row; so each class is the main class of n_images/20 images."""
    masks = {}
    for j in range(n_images):
        mask = np.zeros(size, dtype=np.uint8)
        mask[2 : 2 + BIG[0], 2 : 2 + BIG[1]] = main_class(j)
        mask[-1 - SMALL[0] : -1, -1 - SMALL[1] : -1] = second_class(j)
        mask[0, :] = IGNORE_INDEX
        masks[f"img{j:03d}"] = mask
    return masks


def write_image(path: Path, h: int, w: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=90)


def write_mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8)).save(path)  # uint8 (H, W) -> mode L


def make_voc_folder(
    root: Path,
    masks: dict[str, np.ndarray] | None = None,
    layout: str = "list",
    list_name: str = "train",
    mask_dir: str = "SegmentationClass",
) -> Path:
    """Write JPEGImages/<name>.jpg, <mask_dir>/<name>.png and a list of them under ``root``.

    Args:
        root: folder to fill (created).
        masks: name -> uint8 (H, W) class-id mask; ``default_masks()`` when None.
        layout: "list" writes lists/<list_name>.txt ("img mask" lines, the reference
            format); "voc" writes ImageSets/Segmentation/<list_name>.txt (ids).
        list_name: list file stem.
        mask_dir: mask folder name (SegmentationClass or SegmentationClassAug).

    Returns:
        ``root``.
    """
    masks = default_masks() if masks is None else masks
    lines = []
    for seed, (name, mask) in enumerate(masks.items()):
        write_image(root / "JPEGImages" / f"{name}.jpg", *mask.shape, seed=seed)
        write_mask(root / mask_dir / f"{name}.png", mask)
        lines.append(name if layout == "voc" else f"JPEGImages/{name}.jpg {mask_dir}/{name}.png")
    list_dir = root / ("ImageSets/Segmentation" if layout == "voc" else "lists")
    list_dir.mkdir(parents=True, exist_ok=True)
    (list_dir / f"{list_name}.txt").write_text("\n".join(lines) + "\n")
    return root


def list_path(layout: str = "list", list_name: str = "train") -> str:
    """The list file ``make_voc_folder`` writes, relative to the root."""
    folder = "ImageSets/Segmentation" if layout == "voc" else "lists"
    return f"{folder}/{list_name}.txt"


def write_base_checkpoint(path: Path, fold: int, dataset: str = "synth", seed: int = 0) -> Path:
    """A random tiny base model of ``dataset`` ``fold`` in our checkpoint format, recording
    the fold's base classes as a trained one does (nothing is trained)."""
    torch.manual_seed(seed)
    n_outputs = len(training_record(fold, dataset)["classes"]) + 1
    path.parent.mkdir(parents=True, exist_ok=True)
    model = build_model(TINY_MODEL, n_outputs)
    torch.save({"format": CHECKPOINT_FORMAT, "model": model.state_dict(),
                "model_config": config_lib.to_dict(TINY_MODEL), "n_classes": n_outputs,
                **training_record(fold, dataset)}, path)
    return path


# ----------------------------------------------------------------------------- VOC2012 and SBD


def write_sbd_mat(path: Path, segmentation: np.ndarray) -> None:
    """An SBD ``dataset/cls/<id>.mat`` file holding ``segmentation`` (class ids)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"GTcls": {"Segmentation": segmentation, "Boundaries": np.zeros((1, 1)),
                             "CategoriesPresent": np.unique(segmentation[segmentation > 0])}})


def write_palette_png(path: Path, mask: np.ndarray) -> None:
    """A VOC ``SegmentationClass/<id>.png``: class ids as palette indices, VOC's colours."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(mask, mode="L").convert("P")
    img.putpalette(voc_colormap().ravel().tolist())
    img.save(path)


# ----------------------------------------------------------------------------- the authors' archive
# A PSPNet of the project's builder with ResNet-50/101 depths and tiny widths, under the key
# names of the authors' code (src/model/pspnet.py: ``layer0`` Sequential stem,
# ``ppm.features``, ``bottleneck``, ``classifier``; saved from DDP, so ``module.``), in their
# file layout ``{"epoch", "state_dict", "optimizer"}``.

_STEM = {"conv1": "0", "bn1": "1", "conv2": "3", "bn2": "4", "conv3": "6", "bn3": "7"}


def authors_state(arch: str, n_classes: int) -> dict[str, torch.Tensor]:
    """A deep-stem PSPNet of ``arch`` depths, tiny widths, under the authors' key names."""
    cfg = ModelConfig(arch=arch, deep_stem=True, widths=(2, 2, 2, 2), stem_width=2,
                      bottleneck_dim=4)
    state = {}
    for key, value in PSPNet(cfg, n_classes).state_dict().items():
        part, *rest = key.split(".")
        if part == "backbone" and rest[0] in _STEM:
            key = ".".join(["layer0", _STEM[rest[0]], *rest[1:]])
        elif part == "backbone":
            key = ".".join(rest)
        elif part == "ppm":  # ppm.branches.<i>.<conv|bn>.* -> ppm.features.<i>.<1|2>.*
            key = ".".join(["ppm.features", rest[1], {"conv": "1", "bn": "2"}[rest[2]], *rest[3:]])
        state[f"module.{key}"] = value
    return state


def write_authors_file(root: Path, dataset: str, fold: int, arch: str = "resnet50",
                       n_classes: int = 16, folder_arch: str | None = None,
                       smoothing: bool = True) -> Path:
    """One fold's ``best.pth`` where the authors' test script reads it under ``root``."""
    path = (root / "model_ckpt" / dataset / f"split={fold}" / "model" /
            f"pspnet_{folder_arch or arch}" / f"smoothing={smoothing}" / "mixup=False" / "best.pth")
    path.parent.mkdir(parents=True, exist_ok=True)
    optimizer = {"state": {}, "param_groups": [{"lr": 0.0025, "params": [0, 1]}]}
    torch.save({"epoch": 99, "state_dict": authors_state(arch, n_classes),
                "optimizer": optimizer}, path)
    return path


def write_authors_archive(root: Path, dataset: str = "pascal", folds: range = range(4),
                          seed: int = 0) -> Path:
    """The authors' archive as unpacked under ``root``: one tiny ResNet-50 per fold."""
    torch.manual_seed(seed)
    n_classes = 16 if dataset == "pascal" else 61
    for fold in folds:
        write_authors_file(root, dataset, fold, n_classes=n_classes)
    return root


# ----------------------------------------------------------------------------- PASCAL sources
# VOC2012 and SBD in miniature, in their own layouts, with the paper's lists standing in for
# the shipped ones: what `prepare-pascal` turns into a data root.

PASCAL_HW = (40, 48)
PER_CLASS = 6  # val images whose main class is c: a 5-shot task needs 5 supports + a query
PASCAL_VAL = [f"2008_{j:06d}" for j in range(20 * PER_CLASS)]
PASCAL_SBD_TRAIN = [f"2009_{j:06d}" for j in range(4)]
PASCAL_VOC_TRAIN = ["2010_000001"]


def pascal_mask(j: int) -> np.ndarray:
    """A big block of class j % 20 + 1, a block of another class too small to count, a 255
    row: VOC's masks in miniature."""
    h, w = PASCAL_HW
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[6:34, 4:40] = j % 20 + 1
    mask[35:38, 41:44] = (j + 7) % 20 + 1
    mask[0, :] = IGNORE_INDEX
    return mask


def paper_line(image_id: str) -> str:
    """One line of the paper's lists."""
    return f"JPEGImages/{image_id}.jpg SegmentationClassAug/{image_id}.png\n"


def write_pascal_sources(folder: Path) -> tuple[Path, Path, Path]:
    """Under ``folder``: ``VOCdevkit/VOC2012`` (JPEGImages, palette SegmentationClass for the
    val images and one train image), ``sbd/benchmark_RELEASE/dataset/cls/*.mat`` (the other
    train images) and ``shipped/pascal/{train,val}.txt`` (lists in the paper's format, to
    stand in for ``data/lists``).

    Returns:
        The VOCdevkit folder, the SBD folder and the lists folder.
    """
    voc = folder / "VOCdevkit" / "VOC2012"
    for seed, image_id in enumerate(PASCAL_VAL + PASCAL_SBD_TRAIN + PASCAL_VOC_TRAIN):
        write_image(voc / "JPEGImages" / f"{image_id}.jpg", *PASCAL_HW, seed=seed)
    for j, image_id in enumerate(PASCAL_VAL + PASCAL_VOC_TRAIN):
        write_palette_png(voc / "SegmentationClass" / f"{image_id}.png", pascal_mask(j))
    sbd = folder / "sbd"
    for j, image_id in enumerate(PASCAL_SBD_TRAIN):
        segmentation = pascal_mask(j)
        segmentation[segmentation == IGNORE_INDEX] = 0  # SBD has no boundary label
        write_sbd_mat(sbd / "benchmark_RELEASE/dataset/cls" / f"{image_id}.mat", segmentation)
    lists = folder / "shipped"
    (lists / "pascal").mkdir(parents=True)
    train = PASCAL_SBD_TRAIN + PASCAL_VOC_TRAIN
    (lists / "pascal/train.txt").write_text("".join(map(paper_line, train)))
    (lists / "pascal/val.txt").write_text("".join(map(paper_line, PASCAL_VAL)))
    return voc.parent, sbd, lists


TURN_FOR_STORAGE = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
"""EXIF orientation -> how a camera stores a picture that viewers turn back with that tag
(6: viewers turn it 90 degrees clockwise, 8: counter-clockwise)."""


def write_turned(path: Path, shown: np.ndarray, orientation: int) -> None:
    """Write ``shown`` (the picture as viewers show it) stored turned, with the EXIF
    orientation tag that turns it back: a phone photo (JPEG) or a mask (PNG) of that kind."""
    img = Image.fromarray(shown).transpose(TURN_FOR_STORAGE[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, exif=exif, **({"quality": 95} if path.suffix == ".jpg" else {}))


# ----------------------------------------------------------------------------- COCO-20i
# The data root `fsstools coco-masks` writes, in miniature: val2014 images, class-id masks
# (1..80) under masks/val2014 and lists/val2014.txt, so that every class of every fold is the
# main class of PER_CLASS images (a 5-shot task of any fold has its supports and query).

COCO_VAL = [f"COCO_val2014_{j:012d}" for j in range(80 * PER_CLASS)]


def coco_mask(j: int) -> np.ndarray:
    """A big block of class j % 80 + 1, a block of another class too small to count, a 255
    row where a crowd lay: the masks coco-masks writes, in miniature."""
    h, w = PASCAL_HW
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[6:34, 4:40] = j % 80 + 1
    mask[35:38, 41:44] = (j + 7) % 80 + 1
    mask[0, :] = IGNORE_INDEX
    return mask


def write_coco_root(root: Path) -> Path:
    """A COCO-20i data root under ``root`` as ``fsstools coco-masks`` leaves it (val2014 only).

    Returns:
        ``root``.
    """
    lines = []
    for j, stem in enumerate(COCO_VAL):
        write_image(root / "val2014" / f"{stem}.jpg", *PASCAL_HW, seed=j)
        write_mask(root / "masks" / "val2014" / f"{stem}.png", coco_mask(j))
        lines.append(f"val2014/{stem}.jpg masks/val2014/{stem}.png\n")
    (root / "lists").mkdir(parents=True, exist_ok=True)
    (root / "lists" / "val2014.txt").write_text("".join(lines))
    return root
