"""Opening an image file as people see it: the one place every reader of images and masks
opens a file (your own images, the VOC-layout and folder data sets, the data check).

A camera stores a photo in its sensor's orientation and records how to turn it in the EXIF
orientation tag; every viewer applies that tag. Reading the pixels as stored would show a
model a photo turned on its side, refuse a mask drawn on the photo as shown (its size is
transposed) or, for a square photo, misplace it silently. So the tag is applied here, to
masks too, and everything computed from an image is in its displayed orientation.

Example:
    >>> from PIL import Image
    >>> img = Image.new("RGB", (30, 20))  # stored 30 wide, 20 high
    >>> img.getexif()[ORIENTATION] = 6  # "turn 90 degrees clockwise to view"
    >>> displayed(img).size
    (20, 30)
"""

from __future__ import annotations

from pathlib import Path

from PIL import ExifTags, Image, ImageOps

ORIENTATION = ExifTags.Base.Orientation
"""EXIF tag of how a stored image is turned for viewing (1: as stored)."""


def displayed(img: Image.Image) -> Image.Image:
    """``img`` as viewers show it: its EXIF orientation applied (the tag then removed), or
    ``img`` itself when it has no orientation other than "as stored"."""
    if img.getexif().get(ORIENTATION, 1) == 1:
        return img
    return ImageOps.exif_transpose(img)


def open_image(path: str | Path) -> Image.Image:
    """The decoded image of ``path`` in its displayed orientation (see :func:`displayed`).

    Raises:
        OSError, SyntaxError, ValueError: the file is missing or is no readable image (the
            callers turn them into a message naming the file and the fix).
    """
    img = Image.open(path)
    img.load()  # decode now: a truncated or foreign file fails here, and the file is closed
    return displayed(img)

