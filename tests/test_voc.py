import numpy as np
import pytest
from PIL import Image

from fsstools.data import voc
from fsstools.errors import DataError, MissingError
from tests.fixtures import (
    MIN_FG_TEST,
    default_masks,
    list_path,
    main_class,
    make_voc_folder,
    write_image,
    write_mask,
)


def small_folder(tmp_path, n=4, **kwargs):
    return make_voc_folder(tmp_path / "data", default_masks(n), **kwargs)


def test_read_pairs_reference_format(tmp_path):
    root = small_folder(tmp_path)
    pairs = voc.read_pairs(root, "lists/train.txt")
    assert pairs[0] == ("JPEGImages/img000.jpg", "SegmentationClass/img000.png")
    assert len(pairs) == 4


def test_read_pairs_voc_ids_prefer_aug_masks(tmp_path):
    root = small_folder(tmp_path, layout="voc", mask_dir="SegmentationClassAug")
    pairs = voc.read_pairs(root, list_path("voc"))
    assert pairs[1] == ("JPEGImages/img001.jpg", "SegmentationClassAug/img001.png")
    image, mask = voc.load_pair(root, *pairs[1], 20)
    assert image.shape == (*mask.shape, 3) and mask.max() == 255


def test_read_pairs_skips_comments_and_strips_leading_slash(tmp_path):
    root = small_folder(tmp_path)
    (root / "extra.txt").write_text("# header\n\n/JPEGImages/a.jpg /SegmentationClass/a.png\n")
    assert voc.read_pairs(root, root / "extra.txt") == [
        ("JPEGImages/a.jpg", "SegmentationClass/a.png")
    ]


def test_missing_root_and_list_named(tmp_path):
    with pytest.raises(MissingError, match="nowhere"):
        voc.read_pairs(tmp_path / "nowhere", "lists/train.txt")
    root = small_folder(tmp_path)
    with pytest.raises(MissingError, match="lists/val.txt"):
        voc.read_pairs(root, "lists/val.txt")


def test_bad_list_line_named(tmp_path):
    root = small_folder(tmp_path)
    (root / "lists/bad.txt").write_text("a.jpg a.png\na.jpg a.png extra\n")
    with pytest.raises(DataError, match=r"bad.txt, line 2"):
        voc.read_pairs(root, "lists/bad.txt")
    (root / "lists/empty.txt").write_text("\n")
    with pytest.raises(DataError, match="empty.txt lists no images"):
        voc.read_pairs(root, "lists/empty.txt")


def test_missing_image_named(tmp_path):
    with pytest.raises(MissingError, match="ghost.jpg"):
        voc.load_image(tmp_path / "ghost.jpg")


def test_corrupt_image_named(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match="broken.jpg.*corrupt"):
        voc.load_image(path)


def test_truncated_image_named(tmp_path):
    path = tmp_path / "cut.png"
    write_mask(path, np.arange(64 * 64, dtype=np.uint8).reshape(64, 64))
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataError, match="cut.png"):
        voc.load_mask(path, 20)


def test_size_mismatch_names_both_files(tmp_path):
    write_image(tmp_path / "JPEGImages/x.jpg", 10, 12)
    write_mask(tmp_path / "SegmentationClass/x.png", np.zeros((12, 10), np.uint8))
    with pytest.raises(DataError, match=r"x\.jpg is 10x12 but its mask .*x\.png is 12x10"):
        voc.load_pair(tmp_path, "JPEGImages/x.jpg", "SegmentationClass/x.png", 20)


def test_mask_values_out_of_range_named(tmp_path):
    mask = np.zeros((5, 5), np.uint8)
    mask[0, 0], mask[1, 1] = 21, 255
    write_mask(tmp_path / "m.png", mask)
    with pytest.raises(DataError, match=r"m\.png \(L\) holds the value\(s\) 21; .* only hold 0 "
                       r"\(background\), 1\.\.20 \(class ids\) and 255"):
        voc.load_mask(tmp_path / "m.png", 20)
    assert voc.load_mask(tmp_path / "m.png", 80)[0, 0] == 21


def test_sixteen_bit_masks_are_read_and_their_values_checked(tmp_path):
    mask = np.zeros((5, 5), np.uint16)
    mask[0, 0], mask[1, 1] = 3, 255
    Image.fromarray(mask).save(tmp_path / "ok16.png")  # a 16-bit PNG of valid class ids
    assert Image.open(tmp_path / "ok16.png").mode.startswith("I")
    out = voc.load_mask(tmp_path / "ok16.png", 20)
    assert out.dtype == np.uint8 and out[0, 0] == 3 and out[1, 1] == 255
    mask[2, 2] = 300  # not a class id, and not a colour image either
    Image.fromarray(mask).save(tmp_path / "bad16.png")
    with pytest.raises(DataError, match=r"bad16\.png \(I;16\) holds the value\(s\) 300;") as err:
        voc.load_mask(tmp_path / "bad16.png", 20)
    assert "colour" not in str(err.value)


def test_rgb_mask_rejected(tmp_path):
    write_image(tmp_path / "rgb.png", 5, 5)
    with pytest.raises(DataError, match=r"rgb\.png is a 3-channel RGB image; .*single-channel"):
        voc.load_mask(tmp_path / "rgb.png", 20)


def test_palette_mask_reads_indices(tmp_path):
    img = Image.fromarray(np.array([[0, 3], [15, 255]], np.uint8)).convert("P")
    img.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    img.save(tmp_path / "p.png")
    assert voc.load_mask(tmp_path / "p.png", 20).tolist() == [[0, 3], [15, 255]]


def test_class_index_counts_classes_over_min_fg(tmp_path):
    root = small_folder(tmp_path, n=40)
    pairs = voc.read_pairs(root, "lists/train.txt")
    index = voc.class_index(root, pairs, 20, MIN_FG_TEST)
    assert set(index) == set(range(1, 21))
    assert index[main_class(3)] == [3, 23]
    # min_fg 1 also counts the small block of the secondary class
    assert sum(map(len, voc.class_index(root, pairs, 20, 1).values())) == 80


def test_class_index_cached_outside_the_data_and_invalidated(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FSSTOOLS_OUTPUTS", str(tmp_path / "outputs"))
    root = small_folder(tmp_path / "data", n=4)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    pairs = voc.read_pairs(root, "lists/train.txt")
    first = voc.class_index(root, pairs, 20, MIN_FG_TEST)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing beside data
    assert len(list((tmp_path / "outputs" / "cache" / "class_index").glob("*.json"))) == 1

    def fail(*args):
        raise AssertionError("recomputed despite a valid cache")

    real = voc._compute_index
    monkeypatch.setattr(voc, "_compute_index", fail)
    capsys.readouterr()
    assert voc.class_index(root, pairs, 20, MIN_FG_TEST) == first
    assert "reusing class index of 4 masks" in capsys.readouterr().out
    assert voc.class_index(root, pairs, 20, MIN_FG_TEST) == first
    assert "reusing" not in capsys.readouterr().out  # said once per process

    monkeypatch.setattr(voc, "_compute_index", real)
    mask = np.zeros((24, 32), np.uint8)
    mask[:10, :10] = 20
    write_mask(root / pairs[0][1], mask)  # a regenerated mask must not reuse the old index
    second = voc.class_index(root, pairs, 20, MIN_FG_TEST)
    assert 0 in second[20] and 0 not in second[main_class(0)]
