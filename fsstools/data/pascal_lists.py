"""The PASCAL-5i image lists of the RePRI paper, shipped in ``data/lists/pascal/``.

``train.txt`` (5,953 images) and ``val.txt`` (1,449) are the lists of the RePRI and PFENet
repositories, one ``JPEGImages/<id>.jpg SegmentationClassAug/<id>.png`` pair per line; their
source, licence and the rule that made them are in ``data/lists/pascal/README.md``. A data
root keeps its lists as ``lists/train.txt`` and ``lists/val.txt`` (what the PASCAL configs
read); :func:`install_paper_lists` copies the shipped ones there.
"""

from __future__ import annotations

from pathlib import Path

from fsstools import paths
from fsstools.cache import atomic_write_text
from fsstools.errors import ConflictError, MissingError

SPLITS = ("train", "val")
PAPER_LIST_LINES = {"train": 5953, "val": 1449}
"""Lines of each shipped list (RePRI's and PFENet's ``lists/pascal/*.txt``)."""


def root_list(split: str) -> str:
    """Where a data root keeps the list of ``split``, relative to the root."""
    return f"lists/{split}.txt"


def paper_list(split: str) -> Path:
    """The shipped list file of ``split`` ("train" or "val").

    Raises:
        MissingError: the package runs outside a checkout that holds ``data/lists``.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    path = paths.lists_dir() / "pascal" / f"{split}.txt"
    if not path.is_file():
        raise MissingError(
            f"the paper's PASCAL list {path} is missing; it ships with the repository: run "
            "fsstools from a checkout (`pip install -e .`) or restore data/lists/pascal/"
        )
    return path


def install_paper_lists(root: str | Path, overwrite: bool = False) -> list[Path]:
    """Copy the shipped lists to ``root/lists/{train,val}.txt``.

    A list already there with the same text is left alone.

    Returns:
        The two list files under ``root``.

    Raises:
        ConflictError: a list there differs from the paper's and ``overwrite`` is false.
    """
    written = []
    for split in SPLITS:
        text = paper_list(split).read_text()
        target = Path(root) / root_list(split)
        if target.is_file() and target.read_text() != text and not overwrite:
            raise ConflictError(
                f"{target} exists and differs from the paper's {split} list "
                f"({PAPER_LIST_LINES[split]} lines); move it away, or pass --overwrite to "
                "replace it with the paper's list"
            )
        if not target.is_file() or target.read_text() != text:
            atomic_write_text(target, text)
        written.append(target)
    return written
