"""Contact sheet of the synthetic benchmark: sample images above their coloured masks."""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fsstools.cache import atomic_write
from fsstools.constants import IGNORE_INDEX
from fsstools.data.synth.classes import N_CLASSES
from fsstools.data.synth.manifest import MANIFEST
from fsstools.data.synth.manifest import read as read_manifest
from fsstools.errors import MissingError

COLUMNS = 8
GAP = 4
HEADER = 16


def class_colours() -> np.ndarray:
    """(256, 3) uint8 lookup: black background, 20 distinct class colours, white borders."""
    lut = np.zeros((IGNORE_INDEX + 1, 3), dtype=np.uint8)
    for c in range(1, N_CLASSES + 1):
        # Golden-ratio hue steps keep neighbouring ids apart; two brightness levels add contrast.
        rgb = colorsys.hsv_to_rgb((c * 0.618034) % 1.0, 0.75, 1.0 if c % 2 else 0.7)
        lut[c] = [round(255 * v) for v in rgb]
    lut[IGNORE_INDEX] = 255
    return lut


def _mask_tile(mask: np.ndarray, lut: np.ndarray) -> Image.Image:
    """Coloured mask with each class id written at its pixels' centroid."""
    tile = Image.fromarray(lut[mask])
    draw = ImageDraw.Draw(tile)
    for c in np.unique(mask):
        if c == 0 or c == IGNORE_INDEX:
            continue
        ys, xs = np.nonzero(mask == c)
        draw.text((float(xs.mean()) - 5, float(ys.mean()) - 5), str(int(c)), fill=(0, 0, 0))
    return tile


def render_sheet(root: Path, styles: tuple[str, ...], out_png: Path, n: int) -> Path:
    """Grid of the first ``n`` val images of each style in ``root``, masks below images."""
    lut = class_colours()
    blocks = []
    for style in styles:
        lines = (root / style / "lists" / "val.txt").read_text().split("\n")
        pairs = [line.split() for line in lines if line.strip()][:n]
        images = [Image.open(root / style / img).convert("RGB") for img, _ in pairs]
        masks = [_mask_tile(np.asarray(Image.open(root / style / m)), lut) for _, m in pairs]
        blocks.append((style, images, masks))
    size = blocks[0][1][0].width
    cols = min(COLUMNS, max(len(b[1]) for b in blocks))
    rows = [-(-len(b[1]) // cols) for b in blocks]
    step = size + GAP
    height = sum(HEADER + 2 * r * step for r in rows)
    sheet = Image.new("RGB", (cols * step - GAP, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    y = 0
    for (style, images, masks), n_rows in zip(blocks, rows, strict=True):
        draw.text(
            (2, y + 2),
            f"style {style}: images, then masks (class ids; white = border 255)",
            fill=(0, 0, 0),
        )
        y += HEADER
        for k, (img, mask) in enumerate(zip(images, masks, strict=True)):
            r, c = divmod(k, cols)
            sheet.paste(img, (c * step, y + 2 * r * step))
            sheet.paste(mask, (c * step, y + (2 * r + 1) * step))
        y += 2 * n_rows * step
    return atomic_write(Path(out_png), lambda p: sheet.save(p, format="PNG"))


def contact_sheet(root: Path, out_png: Path, n: int = 16) -> Path:
    """Save a grid of the first ``n`` validation images of each style above their masks.

    Masks are coloured per class (black background, white borders).
    """
    root = Path(root)
    manifest = read_manifest(root / MANIFEST)
    if not manifest.get("complete"):
        raise MissingError(
            f"{root / MANIFEST} is missing or incomplete; run `fsstools synth --out {root}` first"
        )
    return render_sheet(root, tuple(manifest["config"]["styles"]), Path(out_png), n)
