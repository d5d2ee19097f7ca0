import numpy as np
import pytest
import torch

from fsstools.constants import IGNORE_INDEX
from fsstools.data import datasets, splits
from fsstools.data import transforms as T
from tests.fixtures import MIN_FG_TEST, default_masks, list_path, make_voc_folder


def block_mask(*blocks, size=(16, 16)):
    """Mask with ``(class, row0, row1)`` horizontal bands and a 255 bottom row."""
    mask = np.zeros(size, np.uint8)
    for c, r0, r1 in blocks:
        mask[r0:r1] = c
    mask[-1] = IGNORE_INDEX
    return mask


@pytest.fixture
def relabel_root(tmp_path):
    # synth fold 0: novel 1..5, base 6..20 -> labels 1..15 (6 -> 1, 20 -> 15)
    masks = {
        "mixed": block_mask((6, 0, 5), (1, 5, 9), (20, 9, 12)),  # base + novel
        "novel_only": block_mask((2, 0, 10)),  # dropped: no base class
        "tiny_base": block_mask((7, 0, 1)),  # dropped: 16 px < min_fg
    }
    return make_voc_folder(tmp_path, masks)


def test_relabel_novel_to_ignore_never_background(relabel_root):
    ds = datasets.BaseTrainDataset(relabel_root, list_path(), "synth", 0, min_fg=MIN_FG_TEST)
    assert len(ds) == 1 and ds.pairs[0][0] == "JPEGImages/mixed.jpg"
    assert ds.n_base == 15
    image, mask = ds[0]
    assert image.shape == (3, 16, 16) and mask.dtype == torch.int64
    assert (mask[0:5] == 1).all()  # class 6 -> 1
    assert (mask[5:9] == IGNORE_INDEX).all()  # novel class 1 -> 255, not 0
    assert (mask[9:12] == 15).all()  # class 20 -> 15
    assert (mask[12:15] == 0).all() and (mask[15] == IGNORE_INDEX).all()


def test_base_label_map_coco_interleaved():
    lut = datasets.base_label_map("coco", 0)
    base = splits.base_classes("coco", 0)
    assert lut[0] == 0 and lut[255] == 255
    assert lut[base].tolist() == list(range(1, 61))
    assert (lut[splits.test_classes("coco", 0)] == IGNORE_INDEX).all()


def test_train_and_val_transforms(tmp_path):
    root = make_voc_folder(tmp_path, default_masks(20))
    train = datasets.BaseTrainDataset(
        root, list_path(), "synth", 1, transform=T.TrainTransform(16)
    )
    # fold 1 novel classes 6..10: images whose main class is novel still hold a base class
    # in their small block under the default (area-scaled) min_fg
    assert len(train) == 20
    torch.manual_seed(0)
    image, mask = train[3]
    assert image.shape == (3, 16, 16)
    assert set(mask.unique().tolist()) <= set(range(16)) | {IGNORE_INDEX}
    val = datasets.BaseTrainDataset(root, list_path(), "synth", 1, transform=T.TestTransform(40))
    image, mask = val[0]
    assert image.shape == (3, 40, 40) and (mask[-1] == IGNORE_INDEX).all()


def test_no_base_image_is_an_error(relabel_root):
    with pytest.raises(ValueError, match="no image of lists/train.txt"):
        datasets.BaseTrainDataset(relabel_root, list_path(), "synth", 0, min_fg=10_000)


def test_preloaded_images_are_the_same_items(tmp_path, monkeypatch):
    root = make_voc_folder(tmp_path, default_masks(20))
    args = (root, list_path(), "synth", 1)
    disk = datasets.BaseTrainDataset(*args, transform=T.TrainTransform(16))
    memory = datasets.BaseTrainDataset(*args, transform=T.TrainTransform(16), preload=True)
    expected = []
    for i in (0, 7):
        torch.manual_seed(i)
        expected.append(disk[i])
    monkeypatch.setattr(datasets.voc, "load_pair", None)  # no file is read after preloading
    for i, (ref_image, ref_mask) in zip((0, 7), expected, strict=True):
        torch.manual_seed(i)
        image, mask = memory[i]
        assert torch.equal(image, ref_image) and torch.equal(mask, ref_mask)
