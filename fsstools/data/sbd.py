"""SBD ``.mat`` annotations + VOC2012 masks -> ``SegmentationClassAug/`` class-id PNGs.

The Semantic Boundaries Dataset (SBD, ``benchmark.tgz``) stores one MATLAB file per image in
``dataset/cls/<id>.mat``: a struct ``GTcls`` whose ``Segmentation`` field holds uint8 class
ids (0 background, 1..20 the VOC classes; no boundary value). VOC2012's own
``SegmentationClass/<id>.png`` are palette PNGs whose indices are class ids, with 255 on object
boundaries. ``SegmentationClassAug`` is their union as single-channel PNGs: an image with a
VOC mask keeps it (boundaries included), every other SBD image gets its SBD mask. Output
masks are 8-bit grey PNGs, written atomically; an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fsstools.cache import atomic_write
from fsstools.constants import IGNORE_INDEX
from fsstools.data import pascal_lists
from fsstools.data.voc import load_mask
from fsstools.errors import DataError, MissingError
from fsstools.progress import bar as progress_bar

N_VOC_CLASSES = 20
MASK_DIR = "SegmentationClassAug"
IMAGE_DIR = "JPEGImages"
_MAT_STRUCT, _MAT_FIELD = "GTcls", "Segmentation"
_SBD_CLS = ("dataset/cls", "cls", "benchmark_RELEASE/dataset/cls")
"""Where ``cls/`` may sit under the folder given as SBD: the unpacked archive, its
``benchmark_RELEASE/``, or ``dataset/``."""
_VOC_ROOTS = (".", "VOC2012", "VOCdevkit/VOC2012")
"""Where the VOC2012 folder may sit under the folder given as VOC."""


@dataclass(frozen=True)
class PreparedPascal:
    """What :func:`prepare_pascal` did.

    Attributes:
        root: the data root (``JPEGImages/``, ``SegmentationClassAug/``, ``lists/``).
        n_voc: masks taken from VOC2012 ``SegmentationClass/``.
        n_sbd: masks taken from SBD (images without a VOC mask).
        n_written: masks written by this call; the others were already there.
        lists: the list files under ``root``.
    """

    root: Path
    n_voc: int
    n_sbd: int
    n_written: int
    lists: tuple[Path, ...]


_UNREADABLE_MAT = (OSError, ValueError, IndexError, TypeError, EOFError, NotImplementedError,
                   zlib.error)
"""What scipy.io.loadmat raises on a truncated, foreign or MATLAB v7.3 (HDF5) file."""


def read_sbd_mat(path: str | Path) -> np.ndarray:
    """The class-id mask (H, W) uint8 of one SBD ``cls/<id>.mat`` file.

    Raises:
        DataError: the file is unreadable, lacks ``GTcls.Segmentation``, or holds values
            other than 0..20 (and 255).
    """
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    path = Path(path)
    redo = "unpack SBD's benchmark.tgz again (the file is damaged) or delete the file"
    try:
        data = loadmat(path)
    except (MatReadError, *_UNREADABLE_MAT) as err:
        raise DataError(f"SBD file {path} cannot be read as a MATLAB file ({err}); {redo}"
                        ) from err
    struct = data.get(_MAT_STRUCT)
    fields = getattr(getattr(struct, "dtype", None), "names", None) or ()
    if _MAT_FIELD not in fields:
        found = (f"struct {_MAT_STRUCT} has fields {list(fields)}" if struct is not None else
                 f"variables {sorted(k for k in data if not k.startswith('__'))}")
        raise DataError(
            f"SBD file {path} has no {_MAT_STRUCT}.{_MAT_FIELD} ({found}); give the class "
            f"annotations of dataset/cls/ (not inst/), or {redo}"
        )
    mask = np.asarray(struct[_MAT_FIELD].ravel()[0])
    bad = (mask > N_VOC_CLASSES) & (mask != IGNORE_INDEX)
    if mask.ndim != 2 or mask.dtype.kind not in "ui" or bad.any() or (mask < 0).any():
        raise DataError(
            f"SBD file {path}: {_MAT_STRUCT}.{_MAT_FIELD} is a {mask.dtype} array of shape "
            f"{mask.shape} with values {np.unique(mask)[:10].tolist()}, not a 2-D mask of "
            f"class ids 0..{N_VOC_CLASSES}; {redo}"
        )
    return mask.astype(np.uint8)


def _find_dir(base: Path, candidates: tuple[str, ...], marker: str, what: str, fix: str
              ) -> Path:
    if not base.is_dir():
        raise MissingError(f"{what} folder {base} does not exist; {fix}")
    for rel in candidates:
        if (base / rel / marker).is_dir():
            return (base / rel).resolve()
    tried = ", ".join(str(base / rel / marker) for rel in candidates)
    raise MissingError(f"{what} folder {base} holds no {marker}/ (looked for {tried}); {fix}")


def find_voc_root(voc: str | Path) -> Path:
    """The VOC2012 folder (holding ``JPEGImages/``) given it, its VOCdevkit or their parent."""
    return _find_dir(Path(voc), _VOC_ROOTS, IMAGE_DIR, "VOC2012",
                     "pass the VOC2012 folder of VOCtrainval_11-May-2012.tar (the one holding "
                     "JPEGImages/ and SegmentationClass/)")


def find_sbd_cls(sbd: str | Path) -> Path:
    """SBD's ``cls/`` folder given the unpacked ``benchmark.tgz`` (or a folder inside it)."""
    if Path(sbd).is_dir() and any(Path(sbd).glob("*.mat")):
        return Path(sbd).resolve()  # the cls/ folder itself
    cls_dir = _find_dir(Path(sbd), tuple(str(Path(c).parent) for c in _SBD_CLS), "cls", "SBD",
                        "pass the folder where SBD's benchmark.tgz was unpacked (it holds "
                        "benchmark_RELEASE/dataset/cls/)")
    return cls_dir / "cls"


def mask_sources(voc_root: Path, sbd_cls: Path) -> dict[str, Path]:
    """Image id -> the file its mask comes from: VOC's PNG where there is one, else SBD's .mat."""
    sources = {p.stem: p for p in sorted(sbd_cls.glob("*.mat"))}
    voc_dir = voc_root / "SegmentationClass"
    if not voc_dir.is_dir():
        raise MissingError(f"VOC2012 folder {voc_root} has no SegmentationClass/; unpack the "
                           "whole VOCtrainval_11-May-2012.tar (its masks take precedence)")
    sources.update({p.stem: p for p in sorted(voc_dir.glob("*.png"))})
    if not any(p.suffix == ".mat" for p in sources.values()):
        raise MissingError(f"SBD folder {sbd_cls} holds no .mat file; unpack SBD's benchmark.tgz "
                           "completely")
    return dict(sorted(sources.items()))


def read_source_mask(path: Path) -> np.ndarray:
    """The class-id mask (H, W) uint8 of a VOC palette PNG or an SBD .mat file."""
    if path.suffix == ".mat":
        return read_sbd_mat(path)
    return load_mask(path, N_VOC_CLASSES)


def prepare_pascal(voc: str | Path, sbd: str | Path, out: str | Path | None = None,
                   overwrite: bool = False, progress: bool = True) -> PreparedPascal:
    """Write ``SegmentationClassAug/`` and the paper's lists: a PASCAL-5i data root.

    Args:
        voc: VOC2012 folder (or its VOCdevkit), from VOCtrainval_11-May-2012.tar.
        sbd: folder where SBD's benchmark.tgz was unpacked.
        out: the data root to fill (default: the VOC2012 folder). Elsewhere, ``JPEGImages``
            there is a symbolic link to VOC's.
        overwrite: rewrite masks and lists already there (otherwise a run resumes).
        progress: show a progress bar.

    Raises:
        MissingError: a folder is missing. DataError: a source mask is unusable (the
            message names the file); masks written before it are kept.
    """
    voc_root = find_voc_root(voc)
    sources = mask_sources(voc_root, find_sbd_cls(sbd))
    root = Path(out).resolve() if out is not None else voc_root
    root.mkdir(parents=True, exist_ok=True)
    if not (root / IMAGE_DIR).exists():
        os.symlink(voc_root / IMAGE_DIR, root / IMAGE_DIR, target_is_directory=True)
    written = 0
    for image_id, source in progress_bar(sources.items(), desc="SegmentationClassAug", unit="mask",
                                 disable=not progress):
        target = root / MASK_DIR / f"{image_id}.png"
        if overwrite or not target.is_file():
            mask = read_source_mask(source)
            atomic_write(target, lambda p, m=mask: Image.fromarray(m).save(p, "PNG"))
            written += 1
    n_voc = sum(p.suffix == ".png" for p in sources.values())
    lists = pascal_lists.install_paper_lists(root, overwrite)
    return PreparedPascal(root, n_voc, len(sources) - n_voc, written, tuple(lists))
