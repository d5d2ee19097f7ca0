"""Object-size statistics of the embedded benchmark, measured from its masks, beside PASCAL's.

Builds (or reuses) a benchmark, measures every style and split from the masks on disk
(``fsstools.data.synth.stats``) and prints, per split, the size statistics the benchmark aims at (class
medians of the held (image, class) foreground shares differ >= 5x; their 5-95% range spans
>= 8x), images per class, classes per image and the share of objects cut by the border, then
a per-class table beside PASCAL VOC 2012 (``fsstools.data.synth.pascal``). Optionally draws the per-class
share distributions (``--figure``) and recomputes the PASCAL table from Dataset Ninja's
per-image file (``--pascal``). The last line is ``median_ratio=<x> range_ratio=<y>`` (the
smallest over the splits).

    python bench/synth_sizes.py                                 # default build, data/synth
    python bench/synth_sizes.py --root data/synth_v1 --preset v1
    python bench/synth_sizes.py --compare data/synth_v1 --figure docs/benchmark_sizes.png
    python bench/synth_sizes.py --pascal classes_per_image.json  # check the PASCAL table

The PASCAL file: stats/classes_per_image.json of github.com/dataset-ninja/pascal-voc-2012.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from fsstools.cache import atomic_write
from fsstools.constants import min_fg_pixels
from fsstools.data.splits import PASCAL_CLASSES
from fsstools.data.synth.benchmark import ensure_synth
from fsstools.data.synth.classes import N_CLASSES, class_names
from fsstools.data.synth.generate import SPLITS, SynthConfig
from fsstools.data.synth.pascal import (
    PASCAL_CLASS_STATS,
    PASCAL_HELD_MEDIANS,
    PASCAL_SUMMARY,
    class_stats,
)
from fsstools.data.synth.stats import measure, read_counts

PASCAL_SPLIT = "trainval"
PASCAL_REFERENCE_PX = 2048


def pair_shares(root: Path, style: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Class ids and foreground shares of every labelled (image, class) pair of a style.

    Returns:
        (P,) class ids, (P,) shares, and the image side in pixels.
    """
    ids, shares, size = [], [], 0
    for split in SPLITS:
        counts, size = read_counts(root / style, root / style / "lists" / f"{split}.txt")
        pixels = counts[:, 0, 1:]  # (N, 20)
        img, cls = np.nonzero(pixels)
        ids.append(cls + 1)
        shares.append(pixels[img, cls] / float(size * size))
    return np.concatenate(ids), np.concatenate(shares), size


def pascal_table(path: Path) -> dict[str, tuple[float, ...]]:
    """Per class (q05, median, q95 in percent, P(one object), held median in percent) of
    Dataset Ninja's per-image PASCAL VOC 2012 table (its ``trainval`` rows); prints the
    summary."""
    data = json.loads(Path(path).read_text())
    cols = data["columns"]
    rows = [r for r in data["data"] if r[1] == PASCAL_SPLIT]
    table, held_shares, held_medians, per_image, held_per_image, objects = {}, [], [], [], [], []
    first = {name: cols.index(name) for name in PASCAL_CLASSES}  # objects; area follows
    for name in PASCAL_CLASSES:
        pairs = [(r[first[name]], r[first[name] + 1], r[2] * r[3]) for r in rows if r[first[name]]]
        n_obj = np.array([p[0] for p in pairs])
        share = np.array([p[1] for p in pairs])
        held = share >= np.array([100.0 * PASCAL_REFERENCE_PX / p[2] for p in pairs])
        held_shares.append(share[held])
        held_medians.append(np.median(share[held]))
        table[name] = (*np.quantile(share, [0.05, 0.5, 0.95]).round(2),
                       round((n_obj == 1).mean(), 2), round(held_medians[-1], 2))
    for r in rows:
        labelled = [(r[first[n]], r[first[n] + 1]) for n in PASCAL_CLASSES if r[first[n]]]
        per_image.append(len(labelled))
        min_share = 100.0 * PASCAL_REFERENCE_PX / (r[2] * r[3])
        held_per_image.append(sum(a >= min_share for _, a in labelled))
        objects.append(sum(n for n, _ in labelled))
    held_all = np.concatenate(held_shares)
    q05, q95 = np.quantile(held_all, [0.05, 0.95])
    print(f"PASCAL VOC 2012 {PASCAL_SPLIT}: {len(rows)} images, {np.mean(objects):.2f} objects "
          f"and {np.mean(per_image):.2f} classes per image ({np.mean(held_per_image):.2f} held), "
          f"{np.mean(np.array(per_image) >= 2):.2f} with 2+ classes "
          f"({np.mean(np.array(held_per_image) >= 2):.2f} held); held shares 5-95% "
          f"{q05 / 100:.4f}-{q95 / 100:.4f} ({q95 / q05:.1f}x), class medians differ "
          f"{max(held_medians) / min(held_medians):.1f}x")
    return table


def print_pascal_check(path: Path) -> None:
    table = pascal_table(path)
    worst = 0.0
    for c, (name, row) in enumerate(table.items()):
        ours = np.array([*PASCAL_CLASS_STATS[name], PASCAL_HELD_MEDIANS[c]])
        worst = max(worst, float(np.max(np.abs(np.array(row) - ours))))
        print(f"  {name:12s} q05 {row[0]:5.2f}  median {row[1]:5.2f}  q95 {row[2]:5.2f}  "
              f"one object {row[3]:.2f}  held median {row[4]:5.2f}")
    print(f"largest difference to pascal.PASCAL_CLASS_STATS: {worst:.3f}")
    print(f"pascal.PASCAL_SUMMARY: {PASCAL_SUMMARY}")


def print_stats(root: Path) -> tuple[float, float]:
    """Print the measured statistics of every split; return the smallest ratios."""
    stats = measure(root)
    ratios = []
    for key, s in stats.items():
        q = s["held_share_quantiles"]
        print(f"{key}: held shares median {q['0.5']:.3f} (5-95% {q['0.05']:.4f}-{q['0.95']:.3f}: "
              f"{s['range_ratio']:.1f}x); class medians differ {s['median_ratio']:.1f}x; images "
              f"per class {min(s['images_per_class'])}-{max(s['images_per_class'])}; classes per "
              f"image {s['classes_per_image']:.2f} ({s['multi_class_share']:.0%} with 2+); held "
              f"pairs cut by the border {s['border_cut_share']:.0%}; 255 pixels "
              f"{s['border_share']:.1%}")
        ratios.append((s["median_ratio"], s["range_ratio"]))
    names = class_names()
    print(f"{'class':28s} {'PASCAL held median':>18s} " + " ".join(f"{k:>9s}" for k in stats))
    for c in range(N_CLASSES):
        ref = f"{PASCAL_HELD_MEDIANS[c] / 100:.3f}"
        ours = " ".join(f"{s['class_share']['0.5'][c] or 0:9.3f}" for s in stats.values())
        print(f"{c + 1:2d} {PASCAL_CLASSES[c]:11s} {names[c]:14s} {ref:>18s} {ours}")
    return min(r[0] for r in ratios), min(r[1] for r in ratios)


def draw_figure(root: Path, compare: Path | None, out: Path, style: str = "A") -> Path:
    """Per class: our labelled shares (box 25-75%, whiskers 5-95%), PASCAL's 5/50/95%."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids, shares, size = pair_shares(root, style)
    fig, ax = plt.subplots(figsize=(8.5, 8.5))
    rows = np.arange(N_CLASSES)[::-1]  # class 1 on top
    for c, y in zip(range(1, N_CLASSES + 1), rows, strict=True):
        s = shares[ids == c]
        ax.bxp([{"med": np.median(s), "q1": np.quantile(s, 0.25), "q3": np.quantile(s, 0.75),
                 "whislo": np.quantile(s, 0.05), "whishi": np.quantile(s, 0.95), "fliers": []}],
               positions=[y + 0.12], vert=False, widths=0.3, showfliers=False,
               boxprops={"color": "#1f77b4"}, medianprops={"color": "#1f77b4", "lw": 2},
               whiskerprops={"color": "#1f77b4"}, capprops={"color": "#1f77b4"})
        q05, med, q95, _ = class_stats(c)
        ax.plot([q05, q95], [y - 0.2, y - 0.2], color="#d62728", lw=1)
        ax.plot([med], [y - 0.2], "D", color="#d62728", ms=5)
    if compare is not None:
        v1_ids, v1_shares, _ = pair_shares(compare, style)
        v1_med = [np.median(v1_shares[v1_ids == c]) for c in range(1, N_CLASSES + 1)]
        ax.plot(v1_med, rows + 0.12, "|", color="0.55", ms=12, mew=2)
    ax.axvline(min_fg_pixels(size * size) / size**2, color="0.3", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlim(1e-3, 1.0)
    names = class_names()
    ax.set_yticks(rows, [f"{c + 1} {PASCAL_CLASSES[c]} ({names[c]})" for c in range(N_CLASSES)])
    ax.set_xlabel("share of the image a class covers in an image (labelled pairs, log scale)")
    handles = [
        plt.Line2D([], [], color="#1f77b4", lw=6, alpha=0.6, label=f"ours (style {style}): "
                   "box 25-75%, whiskers 5-95%"),
        plt.Line2D([], [], color="#d62728", marker="D", label="PASCAL VOC 2012: median, 5-95%"),
        plt.Line2D([], [], color="0.3", ls=":", label="min_fg: smaller pairs hold no episode"),
    ]
    if compare is not None:
        handles.append(plt.Line2D([], [], color="0.55", marker="|", ls="", ms=12, mew=2,
                                  label="uniform-size variant median"))
    ax.set_title("Foreground share per class: the embedded benchmark beside PASCAL VOC 2012",
                 fontsize=10)
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0.0, 0.07, 1.0, 1.0))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("data/synth"), help="benchmark folder")
    p.add_argument("--preset", default="v2", help="generate with this preset if missing")
    p.add_argument("--n-train", type=int, default=SynthConfig.n_train)
    p.add_argument("--n-val", type=int, default=SynthConfig.n_val)
    p.add_argument("--workers", type=int, default=None, help="generating processes")
    p.add_argument("--compare", type=Path, help="a uniform-size (v1) build to mark on the figure")
    p.add_argument("--figure", type=Path, help="save the per-class share figure here")
    p.add_argument("--pascal", type=Path, help="Dataset Ninja classes_per_image.json")
    args = p.parse_args()
    if args.pascal:
        print_pascal_check(args.pascal)
    cfg = SynthConfig(n_train=args.n_train, n_val=args.n_val, preset=args.preset)
    start = time.perf_counter()
    ensure_synth(args.root, cfg, workers=args.workers)
    print(f"build ready in {time.perf_counter() - start:.0f} s")
    median_ratio, range_ratio = print_stats(args.root)
    if args.figure:
        print(f"figure: {draw_figure(args.root, args.compare, args.figure)}")
    print(f"median_ratio={median_ratio:.1f} range_ratio={range_ratio:.1f}")


if __name__ == "__main__":
    main()
