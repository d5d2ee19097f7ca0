import numpy as np
import pytest
import torch

from fsstools.constants import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from fsstools.data import transforms as T

BLACK = torch.tensor([-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)])


def sample(h=30, w=50, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = rng.choice(np.array([0, 3, 7, 19], np.uint8), size=(h, w))  # many ids, sharp edges
    mask[0, :] = IGNORE_INDEX
    return image, mask


def test_train_mask_keeps_ids_and_shapes():
    image, mask = sample()
    torch.manual_seed(0)
    for _ in range(5):
        out = T.TrainTransform(24)(image, mask)
        assert out["image"].shape == (3, 24, 24) and out["image"].dtype == torch.float32
        assert out["mask"].shape == (24, 24) and out["mask"].dtype == torch.int64
        assert set(out["mask"].unique().tolist()) <= {0, 3, 7, 19, IGNORE_INDEX}
        assert out["orig_size"] == (30, 50)


def test_train_padding_is_ignored_and_black():
    image, mask = sample(10, 12)
    torch.manual_seed(1)
    out = T.TrainTransform(64, scale=(1.0, 1.0), rotation=0.0)(image, mask)
    pad = ~out["valid"]
    assert pad.sum() == 64 * 64 - 10 * 12
    assert (out["mask"][pad] == IGNORE_INDEX).all()
    assert torch.allclose(out["image"][:, pad], BLACK[:, None], atol=1e-5)


def test_train_rotation_fills_mask_with_ignore():
    image = np.zeros((40, 40, 3), np.uint8)
    mask = np.ones((40, 40), np.uint8)
    torch.manual_seed(0)
    out = T.TrainTransform(40, scale=(1.0, 1.0), rotation=30.0)(image, mask)
    corners = out["mask"][[0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners == IGNORE_INDEX).any() and (out["mask"] != 0).all()
    assert not out["valid"][out["mask"] == IGNORE_INDEX].any()


def test_train_deterministic_given_torch_seed():
    image, mask = sample()
    tf = T.TrainTransform(24)
    outs = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        outs.append(tf(image, mask))
    assert torch.equal(outs[0]["image"], outs[1]["image"])
    assert torch.equal(outs[0]["mask"], outs[1]["mask"])
    assert not torch.equal(outs[0]["image"], outs[2]["image"])


@pytest.mark.parametrize("h, w", [(30, 50), (50, 30), (41, 41), (7, 100)])
def test_test_transform_resize_and_pad(h, w):
    image, mask = sample(h, w)
    tf = T.TestTransform(41)
    out = tf(image, mask)
    new_h, new_w = tf.resized_hw(h, w)
    assert new_h % 8 == 0 and new_w % 8 == 0 and max(new_h, new_w) == 40
    assert out["image"].shape == (3, 41, 41) and out["mask"].shape == (41, 41)
    assert out["orig_size"] == (h, w)
    assert out["valid"][:new_h, :new_w].all() and out["valid"].sum() == new_h * new_w
    pad = ~out["valid"]
    assert (out["mask"][pad] == IGNORE_INDEX).all()
    assert torch.allclose(out["image"][:, pad], BLACK[:, None], atol=1e-5)
    assert set(out["mask"].unique().tolist()) <= {0, 3, 7, 19, IGNORE_INDEX}


def test_test_transform_reference_size():
    assert T.TestTransform(417).resized_hw(375, 500) == (312, 416)
    assert T.TestTransform(64).resized_hw(64, 64) == (64, 64)  # exact, no float round-down


def test_test_transform_without_mask():
    image, _ = sample()
    out = T.TestTransform(32)(image)
    assert "mask" not in out and out["valid"].shape == (32, 32)
