"""Image/mask transforms for base training and for evaluation (torchvision.transforms.v2).

Both transforms take an image uint8 (H, W, 3) and a class-id mask uint8 (H, W), as
``voc.load_pair`` returns them, and give a dict:
``image`` float (3, H', W') ImageNet-normalised, ``mask`` int64 (H', W'), ``valid`` bool
(H', W') False on padding, and ``orig_size`` (H, W). Geometry moves image and mask
together; masks use nearest interpolation, so they keep their original ids plus 255 where
padding or rotation brings new pixels in. Randomness comes from torch's global generator,
so ``torch.manual_seed`` makes the training transform repeatable.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from fsstools.constants import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD

FEATURE_STRIDE = 8
"""Test sizes are floored to a multiple of the backbone's output stride."""

_PAD_FILL = {tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}
_VALID = 1  # value of the tracking mask that marks real (not padded) pixels


class RandomScale(v2.Transform):
    """Resize by a factor drawn uniformly from ``scale`` (aspect ratio kept)."""

    def __init__(self, scale: tuple[float, float]) -> None:
        super().__init__()
        self.scale = scale

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = v2.query_size(flat_inputs)
        factor = torch.empty(1).uniform_(*self.scale).item()
        return {"size": [max(1, round(h * factor)), max(1, round(w * factor))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        # Masks dispatch to a nearest-neighbour kernel whatever the interpolation says.
        return self._call_kernel(F.resize, inpt, params["size"], antialias=True)


def _wrap(image: np.ndarray, mask: np.ndarray | None) -> tuple[Any, Any, Any]:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    img = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
    h, w = image.shape[:2]
    if mask is None:
        mask = np.zeros((h, w), dtype=np.uint8)
    if mask.shape != (h, w):
        raise ValueError(f"mask shape {mask.shape} does not match image shape {(h, w)}")
    msk = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(mask)))
    valid = tv_tensors.Mask(torch.full((h, w), _VALID, dtype=torch.uint8))
    return img, msk, valid


_normalise = v2.Compose(
    [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
)


def _finish(img: Any, msk: Any, valid: Any, orig_size: tuple[int, int]) -> dict[str, Any]:
    return {
        "image": _normalise(img).as_subclass(torch.Tensor),
        "mask": msk.as_subclass(torch.Tensor).long(),
        "valid": valid.as_subclass(torch.Tensor) == _VALID,
        "orig_size": orig_size,
    }


def to_tensors(image: np.ndarray, mask: np.ndarray | None = None) -> dict[str, Any]:
    """Normalise and convert without changing the size (same dict as the transforms)."""
    img, msk, valid = _wrap(image, mask)
    result = _finish(img, msk, valid, tuple(image.shape[:2]))
    if mask is None:
        del result["mask"]
    return result


def _floor_to_stride(side: int) -> int:
    return max(FEATURE_STRIDE, side // FEATURE_STRIDE * FEATURE_STRIDE)


class TrainTransform:
    """Random scale, rotation, horizontal flip and crop for base training.

    Args:
        crop_size: output side (square) or (height, width).
        scale: range of the random resize factor.
        rotation: maximum absolute rotation in degrees.
    """

    def __init__(
        self,
        crop_size: int | tuple[int, int],
        scale: tuple[float, float] = (0.5, 2.0),
        rotation: float = 10.0,
    ) -> None:
        self.crop_size = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
        self.geometry = v2.Compose(
            [
                RandomScale(scale),
                v2.RandomRotation(
                    rotation, interpolation=v2.InterpolationMode.BILINEAR, fill=_PAD_FILL
                ),
                v2.RandomHorizontalFlip(),
                v2.RandomCrop(self.crop_size, pad_if_needed=True, fill=_PAD_FILL),
            ]
        )

    def __call__(self, image: np.ndarray, mask: np.ndarray | None = None) -> dict[str, Any]:
        img, msk, valid = self.geometry(*_wrap(image, mask))
        return _finish(img, msk, valid, tuple(image.shape[:2]))


class TestTransform:
    """Longer side to ``size`` (aspect kept, sides floored to a multiple of 8), then pad.

    Padding goes bottom/right up to ``size`` x ``size``: black image (0 before
    normalisation), mask 255, ``valid`` False.
    """

    __test__ = False  # the name starts with "Test"; keep pytest from collecting it

    def __init__(self, size: int) -> None:
        if size < FEATURE_STRIDE:
            raise ValueError(f"test size must be at least {FEATURE_STRIDE}, got {size}")
        self.size = size

    def resized_hw(self, h: int, w: int) -> tuple[int, int]:
        """Size before padding for an (h, w) input."""
        longer = max(h, w)  # integer arithmetic: a float ratio can land just below a multiple
        return _floor_to_stride(h * self.size // longer), _floor_to_stride(w * self.size // longer)

    def __call__(self, image: np.ndarray, mask: np.ndarray | None = None) -> dict[str, Any]:
        img, msk, valid = _wrap(image, mask)
        new_hw = list(self.resized_hw(*image.shape[:2]))
        pad = [0, 0, self.size - new_hw[1], self.size - new_hw[0]]  # left, top, right, bottom
        out = []
        for x in (img, msk, valid):
            x = F.resize(x, new_hw, antialias=True)
            out.append(F.pad(x, pad, fill=_PAD_FILL[type(x)]))
        result = _finish(*out, tuple(image.shape[:2]))
        if mask is None:
            del result["mask"]
        return result
