import json
import sys

import numpy as np
import pytest

from fsstools import cli
from fsstools.constants import IGNORE_INDEX
from fsstools.data import coco, voc
from fsstools.data.splits import COCO_CLASSES
from tests.fixtures import write_image

mask_api = pytest.importorskip("pycocotools.mask")

# COCO 2014 category ids run 1..90 with these ten unused.
UNUSED_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
CATEGORY_IDS = [i for i in range(1, 91) if i not in UNUSED_IDS]
H, W = 20, 30


def box(r0, r1, c0, c1):
    region = np.zeros((H, W), np.uint8)
    region[r0:r1, c0:c1] = 1
    return region


def compressed_rle(region):
    rle = mask_api.encode(np.asfortranarray(region))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def uncompressed_rle(region):
    flat = region.ravel(order="F")  # COCO runs go down columns, starting with zeros
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return {"size": [H, W], "counts": ([0] if flat[0] else []) + runs}


def polygon(r0, r1, c0, c1):
    return [[c0, r0, c1, r0, c1, r1, c0, r1]]  # x, y pairs


def make_coco(root, categories=None):
    names = ["a", "b", "c"]  # three images, written out of file-name order
    images = [
        {"id": 7 + i, "file_name": f"COCO_val2014_{n}.jpg", "height": H, "width": W}
        for i, n in enumerate(names)
    ]
    for im in images:
        write_image(root / "val2014" / im["file_name"], H, W)
    annotations = [
        # image a: a small toothbrush (id 90) on a large person (id 1), listed first
        {"id": 1, "image_id": 7, "category_id": 90, "iscrowd": 0,
         "segmentation": compressed_rle(box(5, 9, 5, 11))},
        {"id": 2, "image_id": 7, "category_id": 1, "iscrowd": 0,
         "segmentation": polygon(2, 18, 2, 26)},
        # image b: a car (id 3) inside a crowd of people, crowd listed last
        {"id": 3, "image_id": 8, "category_id": 3, "iscrowd": 0,
         "segmentation": polygon(2, 6, 2, 8)},
        {"id": 4, "image_id": 8, "category_id": 1, "iscrowd": 1,
         "segmentation": uncompressed_rle(box(0, 10, 0, W))},
        # image c: no annotation
    ]  # fmt: skip
    if categories is None:
        categories = [{"id": i, "name": n} for i, n in zip(CATEGORY_IDS, COCO_CLASSES, strict=True)]
    data = {"images": images, "annotations": annotations, "categories": categories}
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(data))
    return root


def test_masks_and_list(tmp_path, capsys):
    root = make_coco(tmp_path / "coco")
    assert cli.main(["coco-masks", "--coco-root", str(root), "--split", "val2014"]) == 0
    assert "lists/val2014.txt" in capsys.readouterr().out
    pairs = voc.read_pairs(root, "lists/val2014.txt")
    assert pairs[0] == ("val2014/COCO_val2014_a.jpg", "masks/val2014/COCO_val2014_a.png")
    masks = [voc.load_pair(root, *pair, 80)[1] for pair in pairs]

    a, b, c = masks
    assert a[7, 8] == 80  # toothbrush: category 90 -> class 80, smaller instance on top
    assert a[12, 20] == 1 and a[0, 0] == 0
    assert set(np.unique(a).tolist()) == {0, 1, 80}
    assert b[4, 4] == 3  # the car keeps its class inside the crowd
    assert b[8, 20] == IGNORE_INDEX and b[15, 20] == 0  # crowd -> 255
    assert not c.any()


def test_out_folder_elsewhere(tmp_path):
    root = make_coco(tmp_path / "coco")
    list_file = coco.write_masks(root, "val2014", out=tmp_path / "derived")
    pairs = voc.read_pairs(tmp_path / "derived", list_file)
    assert pairs[1][0] == "../coco/val2014/COCO_val2014_b.jpg"
    image, mask = voc.load_pair(tmp_path / "derived", *pairs[1], 80)
    assert image.shape[:2] == mask.shape == (H, W)


def test_wrong_categories_rejected(tmp_path):
    root = make_coco(tmp_path / "coco", categories=[{"id": 1, "name": "person"}])
    with pytest.raises(ValueError, match="do not match the 80 COCO classes"):
        coco.write_masks(root, "val2014")


def test_missing_inputs_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="instances_val2014.json"):
        coco.write_masks(tmp_path, "val2014")
    with pytest.raises(ValueError, match="train2014, val2014"):
        coco.write_masks(tmp_path, "test2015")


def test_missing_pycocotools_explained(monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"pip install fsstools\[coco\]"):
        coco.class_mask([], 4, 4, {})
