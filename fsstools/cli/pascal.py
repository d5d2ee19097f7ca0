"""Commands for the real PASCAL data: ``prepare-pascal`` and ``data-check``."""

from __future__ import annotations

import argparse
from pathlib import Path

from fsstools.cli.common import new_parser
from fsstools.errors import DataError

DATASETS = ("pascal",)
"""Data sets ``data-check`` knows (COCO masks are checked as ``coco-masks`` writes them)."""


def prepare_pascal_parser() -> argparse.ArgumentParser:
    p = new_parser("prepare-pascal", "Make a PASCAL-5i data root from VOC2012 and SBD: "
                   "SegmentationClassAug/ (SBD's .mat class masks, VOC's own masks where they "
                   "exist) and the paper's lists/train.txt (5,953 images) and lists/val.txt "
                   "(1,449), then check it.")
    p.add_argument("--voc", required=True, type=Path,
                   help="VOC2012 folder of VOCtrainval_11-May-2012.tar (or its VOCdevkit)")
    p.add_argument("--sbd", required=True, type=Path,
                   help="folder where SBD's benchmark.tgz was unpacked (holds "
                   "benchmark_RELEASE/dataset/cls/)")
    p.add_argument("--out", type=Path, help="data root to fill (default: the VOC2012 folder; "
                   "elsewhere JPEGImages is linked to VOC's)")
    p.add_argument("--overwrite", action="store_true",
                   help="rewrite masks and lists already there (default: resume, keep them)")
    p.add_argument("--no-check", action="store_true", help="skip reading every listed image "
                   "and mask afterwards (fsstools data-check does it later)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run_prepare_pascal(args: argparse.Namespace) -> int:
    from fsstools.data.sbd import prepare_pascal

    done = prepare_pascal(args.voc, args.sbd, args.out, args.overwrite,
                          progress=not args.no_progress)
    print(f"{done.root}: {done.n_voc} VOC + {done.n_sbd} SBD masks in SegmentationClassAug/ "
          f"({done.n_written} written now), lists {', '.join(p.name for p in done.lists)}")
    if not args.no_check:
        _check(done.root, progress=not args.no_progress)
    print(f"use it with --set data.root={done.root} (configs/pascal/foldN.yaml)")
    return 0


def data_check_parser() -> argparse.ArgumentParser:
    p = new_parser("data-check", "Read every image and mask a data root's lists name and list "
                   "every problem (missing or corrupt file, wrong size, values that are not "
                   "class ids, colour masks, images in two lists); exit 2 if there is one.")
    p.add_argument("--dataset", required=True, choices=DATASETS, help="layout and classes")
    p.add_argument("--data-root", required=True, type=Path,
                   help="folder holding JPEGImages/, SegmentationClassAug/ and lists/")
    p.add_argument("--list", dest="lists", nargs="+", metavar="FILE",
                   help="list files relative to the root (default: lists/train.txt "
                   "lists/val.txt)")
    p.add_argument("--paper-lists", action="store_true",
                   help="also require the paper's lists (5,953 train, 1,449 val)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run_data_check(args: argparse.Namespace) -> int:
    _check(args.data_root, args.lists, args.paper_lists, progress=not args.no_progress)
    return 0


def _check(root: Path, lists: list[str] | None = None, paper_lists: bool = False,
           progress: bool = True) -> None:
    from fsstools.data.check import check_pascal, problems_message

    problems = check_pascal(root, lists, paper_lists=paper_lists, progress=progress)
    if problems:
        raise DataError(problems_message(root, problems))
    print(f"{root}: no problem found")
