"""Numbers and names fixed once and shared by every layer."""

from typing import Literal, get_args

IGNORE_INDEX = 255
"""Mask value for pixels that are neither scored nor used as labels (borders, padding)."""

MIN_FG_PIXELS = 2 * 32 * 32
"""An image counts for a class only if the class covers at least this many pixels (PASCAL scale)."""

PASCAL_REFERENCE_AREA = 500 * 375
"""Typical PASCAL VOC image area; MIN_FG_PIXELS is scaled by area / this for other image sizes."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

EPS = 1e-10
"""Added to denominators and inside logarithms."""

FeatureDtype = Literal["float32", "float16"]
"""How cached features are stored."""
FEATURE_DTYPES: tuple[str, ...] = get_args(FeatureDtype)


def min_fg_pixels(image_area: int) -> int:
    """The min-foreground rule scaled from PASCAL's image area to ``image_area`` pixels."""
    return max(1, round(MIN_FG_PIXELS * image_area / PASCAL_REFERENCE_AREA))
