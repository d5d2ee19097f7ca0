"""Commands on your own images: ``segment``."""

from __future__ import annotations

import argparse
from pathlib import Path

from fsstools.cli.common import at_least, new_parser


def segment_parser() -> argparse.ArgumentParser:
    p = new_parser("segment", "Segment your own images from a few labelled ones: per query a "
                   "mask PNG of its size, an overlay PNG, p(foreground) as .npy and a row of "
                   "results.csv/.json (pi, predicted share, iterations, seconds).")
    p.add_argument("--checkpoint", required=True, type=Path, help="a best.pt of fsstools train, "
                   "a RePRI/PFENet PSPNet checkpoint or a torchvision ImageNet ResNet file")
    p.add_argument("--support", required=True, action="append", metavar="IMAGE:MASK",
                   help="a labelled example (repeatable); masks 0/1 or 0/255, 255 ignore "
                   "beside 1, or class ids with --class-id")
    p.add_argument("--query", action="append", default=[], type=Path, help="image to segment "
                   "(repeatable)")
    p.add_argument("--query-dir", type=Path, help="also segment every image of this folder")
    p.add_argument("--method", help="inference method (default: repri; with --keep-base: diam)")
    p.add_argument("--keep-base", action="store_true", help="also label every base class of "
                   "the model (DIaM on its own classifier): adds a label map PNG per query "
                   "and classes.csv, the overlay coloured per class; needs a base model")
    p.add_argument("--class-id", type=at_least(1), help="the class to segment in class-id masks")
    p.add_argument("--size", type=at_least(8), help="test size (default: the checkpoint's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--batch-size", type=at_least(1), default=8, help="images per forward pass")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run_segment(args: argparse.Namespace) -> int:
    from fsstools.data.user_masks import query_files
    from fsstools.own_images.segmentation import iter_segment, parse_support, write_results

    queries = [*args.query, *(query_files(args.query_dir) if args.query_dir else [])]
    results = iter_segment([parse_support(s) for s in args.support], queries, args.checkpoint,
                           args.method, args.size, args.device, args.class_id, args.batch_size,
                           args.keep_base)
    rows = write_results(results, args.out, [str(q) for q in queries], not args.no_progress)
    print(f"{len(rows)} queries segmented: masks, overlays and results.csv in {args.out}")
    return 0
