import pytest

from fsstools.data import splits

# Worked out by hand from the class lists: a PASCAL class is kept for COCO fold i when its
# COCO namesake has id c with (c - 1) % 4 == i, i.e. it is a COCO test class of fold i.
# aeroplane=airplane 5, boat 9, chair 57, diningtable 61, dog 17, person 1 -> fold 0
# bicycle 2, bus 6, horse 18, sofa=couch 58 -> fold 1
# bird 15, car 3, pottedplant 59, sheep 19, train 7, tvmonitor=tv 63 -> fold 2
# bottle 40, cat 16, cow 20, motorbike=motorcycle 4 -> fold 3
COCO_TO_PASCAL = {
    0: [1, 4, 9, 11, 12, 15],
    1: [2, 6, 13, 18],
    2: [3, 7, 16, 17, 19, 20],  # 7 = car (the reference code tests cat here)
    3: [5, 8, 10, 14],  # 8 = cat
}


@pytest.mark.parametrize("fold", range(4))
def test_coco_to_pascal_kept_classes_pinned(fold):
    assert splits.coco_to_pascal_classes(fold) == COCO_TO_PASCAL[fold]


def test_coco_to_pascal_folds_partition_pascal_classes():
    kept = [c for fold in range(4) for c in splits.coco_to_pascal_classes(fold)]
    assert sorted(kept) == list(range(1, 21))


def test_pascal_names_in_voc_order():
    assert len(splits.PASCAL_CLASSES) == 20
    assert splits.PASCAL_CLASSES[7 - 1] == "car"
    assert splits.PASCAL_CLASSES[8 - 1] == "cat"
    assert splits.PASCAL_CLASSES[20 - 1] == "tvmonitor"


def test_coco_names():
    assert len(set(splits.COCO_CLASSES)) == 80
    assert splits.COCO_CLASSES[0] == "person"
    assert splits.COCO_CLASSES[-1] == "toothbrush"
    assert splits.COCO_CLASSES[63 - 1] == "tv"


@pytest.mark.parametrize("dataset", ["pascal", "synth"])
def test_pascal_folds(dataset):
    for fold in range(4):
        novel = splits.test_classes(dataset, fold)
        assert novel == list(range(5 * fold + 1, 5 * fold + 6))
        base = splits.base_classes(dataset, fold)
        assert len(base) == 15 and not set(base) & set(novel)
        assert base == sorted(base)
    assert splits.n_classes(dataset) == 20


def test_coco_interleaved_and_contiguous():
    assert splits.test_classes("coco", 1) == list(range(2, 80, 4))
    assert splits.test_classes("coco", 3)[-1] == 80
    assert splits.test_classes("coco", 0)[:3] == [1, 5, 9]
    assert splits.test_classes("coco", 2, "contiguous") == list(range(41, 61))
    assert len(splits.base_classes("coco", 0)) == 60
    assert splits.n_classes("coco") == 80


@pytest.mark.parametrize("scheme", splits.SCHEMES)
def test_coco_folds_partition_classes(scheme):
    novel = [c for fold in range(4) for c in splits.test_classes("coco", fold, scheme)]
    assert sorted(novel) == list(range(1, 81))


@pytest.mark.parametrize(
    "args, valid",
    [
        (("voc", 0), "pascal, coco, synth"),
        (("pascal", 4), "0, 1, 2, 3"),
        (("coco", 0, "random"), "interleaved, contiguous"),
    ],
)
def test_unknown_values_list_valid_ones(args, valid):
    with pytest.raises(ValueError, match=valid):
        splits.test_classes(*args)
