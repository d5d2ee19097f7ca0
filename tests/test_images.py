"""Images and masks read as viewers show them: a photo's EXIF orientation applied by every
reader (your own images, the VOC-layout and folder data sets, the data check)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fsstools.data import check, voc
from fsstools.data.images import open_image
from fsstools.data.user_masks import read_image, read_support
from tests.fixtures import write_mask, write_turned

SHOWN = (20, 30)  # (H, W) as viewers show it; stored 30 high, 20 wide


def photo() -> tuple[np.ndarray, np.ndarray]:
    """A dark image with a bright block in its top-left corner, and the block's 0/1 mask
    (no turn or flip maps the block onto itself)."""
    img = np.full((*SHOWN, 3), 20, np.uint8)
    mask = np.zeros(SHOWN, np.uint8)
    mask[2:8, 3:12] = 1
    img[mask == 1] = 235
    return img, mask


@pytest.mark.parametrize("orientation", [6, 8])
def test_a_turned_photo_reads_as_shown_by_every_reader(tmp_path, orientation):
    img, mask = photo()
    path = tmp_path / "JPEGImages" / "a.jpg"
    write_turned(path, img, orientation)
    assert Image.open(path).size == SHOWN  # stored (W, H) is the shown (H, W)
    for got in (voc.load_image(path), read_image(path), read_image(Image.open(path)),
                np.array(open_image(path))):
        assert got.shape == (*SHOWN, 3)
        assert got[mask == 1].mean() > 200 and got[mask == 0].mean() < 60  # block in place
    write_mask(tmp_path / "SegmentationClass" / "a.png", mask * 5)  # drawn on the photo as shown
    image, labels = voc.load_pair(tmp_path, "JPEGImages/a.jpg", "SegmentationClass/a.png", 20)
    assert labels.shape == image.shape[:2] == SHOWN
    assert image[labels == 5].mean() > 200
    problems = check._pair_problems(tmp_path, check._Entry("JPEGImages/a.jpg",
                                                           "SegmentationClass/a.png", "x"), set())
    assert not [p for p in problems if p.kind == check.SIZE_MISMATCH]


def test_a_mask_with_an_orientation_tag_reads_as_shown(tmp_path):
    img, mask = photo()
    write_turned(tmp_path / "m.png", mask * 255, 6)
    assert Image.open(tmp_path / "m.png").size == SHOWN
    _, task = read_support(img, tmp_path / "m.png")
    np.testing.assert_array_equal(task, mask)
    np.testing.assert_array_equal(voc.load_mask(tmp_path / "m.png", 255) // 255, mask)
