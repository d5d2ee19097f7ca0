"""Check a PASCAL data root before a long run: every missing or malformed item, at once.

:func:`check_pascal` reads every image and mask its lists name and returns a list of
:class:`Problem` (empty when the root is usable): a missing folder or list, a list line that
is not an ``image mask`` pair, a listed file that is missing or cannot be decoded, a mask of
another size than its image, mask values other than 0..20 and 255, a colour or palette mask
that does not hold class ids, an image in two lists. Each problem names the file and the fix;
``fsstools data-check`` prints them all and exits 2.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fsstools.constants import IGNORE_INDEX
from fsstools.data import pascal_lists
from fsstools.data.images import open_image
from fsstools.data.sbd import IMAGE_DIR, MASK_DIR, N_VOC_CLASSES
from fsstools.progress import bar as progress_bar

MISSING_FOLDER, MISSING_LIST, BAD_LINE = "missing-folder", "missing-list", "bad-line"
MISSING_IMAGE, MISSING_MASK = "missing-image", "missing-mask"
CORRUPT_IMAGE, CORRUPT_MASK = "corrupt-image", "corrupt-mask"
COLOUR_MASK, PALETTE_MASK, BAD_VALUES = "colour-mask", "palette-mask", "bad-values"
SIZE_MISMATCH, LIST_OVERLAP, LIST_DIFFERS = "size-mismatch", "list-overlap", "list-differs"
_SHOWN = 5  # values or ids quoted in one problem
_REBUILD = "rebuild the masks with `fsstools prepare-pascal --voc VOC2012 --sbd SBD --out ROOT`"
_UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, ValueError)
_CLASS_ID_MODES = ("1", "L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N")
"""PIL modes of single-channel integer images (what a class-id mask can be stored as)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a data root.

    Attributes:
        kind: one of the constants of this module (``"missing-mask"``, ...).
        path: the file or folder at fault.
        what: what is wrong with it.
        fix: how to fix it.
    """

    kind: str
    path: Path
    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what}; {self.fix}"


@dataclass(frozen=True)
class _Entry:
    image: str
    mask: str
    where: str  # "lists/train.txt line 12"


@functools.lru_cache(maxsize=1)
def voc_colormap() -> np.ndarray:
    """VOC's colour of each palette index, (256, 3) uint8: the bits of the index are dealt
    to R, G and B in turn from the most significant bit down (1 -> (128, 0, 0))."""
    cmap = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        bits, rgb = index, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((bits >> channel) & 1) << shift
            bits >>= 3
        cmap[index] = rgb
    return cmap


def check_pascal(root: str | Path, lists: Sequence[str] | None = None,
                 paper_lists: bool = False, progress: bool = True) -> list[Problem]:
    """Every problem of a PASCAL data root, in list order; empty when it is usable.

    Args:
        root: folder holding ``JPEGImages/``, ``SegmentationClassAug/`` and the lists.
        lists: list files relative to ``root`` (default ``lists/train.txt``, ``lists/val.txt``).
        paper_lists: also report lists that differ from the paper's (``data/lists/pascal``).
        progress: show a progress bar while images are read.
    """
    root = Path(root)
    if not root.is_dir():
        return [Problem(MISSING_FOLDER, root, "the data root does not exist",
                        "pass the folder holding JPEGImages/, SegmentationClassAug/ and lists/ "
                        f"(or make one: {_REBUILD})")]
    problems = _folder_problems(root)
    names = list(lists) if lists is not None else [pascal_lists.root_list(s)
                                                   for s in pascal_lists.SPLITS]
    by_list: dict[str, list[_Entry]] = {}
    for name in names:
        entries, list_problems = _read_list(root, name)
        by_list[name] = entries
        problems += list_problems
    problems += _overlap_problems(root, by_list)
    if paper_lists:
        problems += _paper_list_problems(root, names)
    seen, checked = set(), []
    for entry in (e for entries in by_list.values() for e in entries):
        if (entry.image, entry.mask) not in seen:  # a pair in two lists is read once
            seen.add((entry.image, entry.mask))
            checked.append(entry)
    # files under a missing folder are covered by that folder's problem
    missing_dirs = {p.path.name for p in problems if p.kind == MISSING_FOLDER}
    for entry in progress_bar(checked, desc=f"checking {root}", unit="pair", disable=not progress):
        problems += _pair_problems(root, entry, missing_dirs)
    return problems


def _folder_problems(root: Path) -> list[Problem]:
    fixes = {IMAGE_DIR: "unpack VOCtrainval_11-May-2012.tar and link or copy its "
                        "VOC2012/JPEGImages/ here",
             MASK_DIR: _REBUILD}
    return [Problem(MISSING_FOLDER, root / d, "folder missing", fix)
            for d, fix in fixes.items() if not (root / d).is_dir()]


def _read_list(root: Path, name: str) -> tuple[list[_Entry], list[Problem]]:
    path = root / name
    if not path.is_file():
        split = Path(name).stem
        fix = ("run `fsstools prepare-pascal` (it copies the paper's lists) or copy "
               f"data/lists/pascal/{split}.txt of the repository there"
               if name == pascal_lists.root_list(split) and split in pascal_lists.SPLITS else
               "check the list path (relative to the data root)")
        return [], [Problem(MISSING_LIST, path, "list file missing", fix)]
    entries, problems = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        where = f"{name} line {number}"
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) == 1:  # a VOC image id
            fields = [f"{IMAGE_DIR}/{fields[0]}.jpg", f"{MASK_DIR}/{fields[0]}.png"]
        if len(fields) != 2:
            problems.append(Problem(BAD_LINE, path, f"line {number} is {line!r}, not "
                                    "'image_path mask_path'", "fix or remove that line"))
            continue
        entries.append(_Entry(fields[0].lstrip("/"), fields[1].lstrip("/"), where))
    return entries, problems


def _overlap_problems(root: Path, by_list: dict[str, list[_Entry]]) -> list[Problem]:
    problems, names = [], list(by_list)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            shared = sorted({e.image for e in by_list[first]} & {e.image for e in by_list[second]})
            if shared:
                problems.append(Problem(
                    LIST_OVERLAP, root / second,
                    f"{len(shared)} image(s) also in {first} (e.g. {', '.join(shared[:_SHOWN])})",
                    "a validation image must not be a training image: use the paper's lists "
                    "(data/lists/pascal/) or remove the shared lines"))
    return problems


def _paper_list_problems(root: Path, names: Sequence[str]) -> list[Problem]:
    problems = []
    for split in pascal_lists.SPLITS:
        name = pascal_lists.root_list(split)
        path = root / name
        text = path.read_text() if name in names and path.is_file() else None
        if text is not None and text != pascal_lists.paper_list(split).read_text():
            problems.append(Problem(
                LIST_DIFFERS, path, f"{len(text.splitlines())} lines, not the paper's {split} "
                f"list ({pascal_lists.PAPER_LIST_LINES[split]} lines)",
                f"run `fsstools prepare-pascal --overwrite` or copy data/lists/pascal/{split}.txt "
                "there"))
    return problems


def _open(path: Path) -> Image.Image | str:
    """The decoded image, or why it cannot be read."""
    try:
        return open_image(path)  # decoded (a truncated file fails here), as viewers show it
    except _UNREADABLE as err:
        return str(err) or type(err).__name__


def _pair_problems(root: Path, entry: _Entry, missing_dirs: set[str]) -> list[Problem]:
    problems, sizes = [], {}
    for rel, kind in ((entry.image, "image"), (entry.mask, "mask")):
        path = root / rel
        if not path.is_file():
            if rel.split("/")[0] not in missing_dirs:
                fix = f"copy VOC2012's {rel} here" if kind == "image" else _REBUILD
                problems.append(Problem(MISSING_IMAGE if kind == "image" else MISSING_MASK,
                                        path, f"missing (listed in {entry.where})",
                                        f"{fix}, or remove the line"))
            continue
        img = _open(path)
        if isinstance(img, str):
            problems.append(Problem(
                CORRUPT_IMAGE if kind == "image" else CORRUPT_MASK, path,
                f"cannot be decoded ({img}; listed in {entry.where})",
                f"the file is truncated or not an image: copy it again ({_REBUILD} for a "
                "mask) or remove the line"))
            continue
        sizes[kind] = (img.height, img.width)
        if kind == "mask":
            problems += _mask_problems(path, img)
    if len(sizes) == 2 and sizes["image"] != sizes["mask"]:
        (ih, iw), (mh, mw) = sizes["image"], sizes["mask"]
        problems.append(Problem(SIZE_MISMATCH, root / entry.mask,
                                f"{mh}x{mw} but its image {entry.image} is {ih}x{iw} "
                                f"({entry.where})",
                                f"the list pairs the wrong files or the mask was resized: fix "
                                f"the line or {_REBUILD}"))
    return problems


def _mask_problems(path: Path, img: Image.Image) -> list[Problem]:
    if img.mode in ("RGB", "RGBA"):
        colours = np.unique(np.asarray(img.convert("RGB")).reshape(-1, 3), axis=0)
        voc = {tuple(c) for c in voc_colormap()[[*range(N_VOC_CLASSES + 1), IGNORE_INDEX]]}
        coded = all(tuple(c) in voc for c in colours)
        what = ("a colour-coded VOC mask (RGB colours), not class ids" if coded else
                f"a {img.mode} colour image, not a single-channel class-id mask")
        return [Problem(COLOUR_MASK, path, what, _REBUILD)]
    if img.mode not in _CLASS_ID_MODES:
        return [Problem(COLOUR_MASK, path, f"a {img.mode} image, not a class-id mask", _REBUILD)]
    values = np.asarray(img)
    used = np.unique(values)
    if img.mode == "P" and (palette := img.getpalette()) is not None:
        colours = np.zeros((256, 3), dtype=np.int64)
        table = np.asarray(palette, dtype=np.int64).reshape(-1, 3)[:256]
        colours[: len(table)] = table
        valid = used[used < 256]
        grey = (colours[valid] == valid[:, None]).all(axis=1)
        voc = (colours[valid] == voc_colormap()[valid]).all(axis=1)
        if not (grey | voc).all():
            return [Problem(PALETTE_MASK, path, "a palette PNG whose indices are not class ids "
                            "(its colours are neither VOC's class colours nor grey levels)",
                            _REBUILD)]
    bad = used[(used > N_VOC_CLASSES) & (used != IGNORE_INDEX)]
    if bad.size:
        shown = ", ".join(map(str, bad[:_SHOWN].tolist())) + (", ..." if bad.size > _SHOWN else "")
        return [Problem(BAD_VALUES, path, f"holds the value(s) {shown}; a PASCAL mask holds only "
                        f"0 (background), 1..{N_VOC_CLASSES} (classes) and {IGNORE_INDEX} "
                        "(boundary/ignore)", _REBUILD)]
    return []


def problems_message(root: str | Path, problems: Sequence[Problem]) -> str:
    """One paragraph listing every problem, with a count per kind (for an error message)."""
    counts: dict[str, int] = {}
    for p in problems:
        counts[p.kind] = counts.get(p.kind, 0) + 1
    summary = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    lines = [f"{len(problems)} problem(s) in the PASCAL data root {root} ({summary}):"]
    lines += [f"  {p}" for p in problems]
    return "\n".join(lines)
