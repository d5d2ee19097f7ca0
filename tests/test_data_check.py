"""``fsstools data-check``: each malformed item of a PASCAL root is reported, named with its fix,
and the command exits 2; a clean root exits 0. The roots are tiny ones the tests write."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsstools import cli
from fsstools.data import check
from fsstools.data.check import check_pascal, voc_colormap
from tests.fixtures import default_masks, make_voc_folder, write_image

MASKS = "SegmentationClassAug"


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clean") / "pascal"
    masks = default_masks(6)
    make_voc_folder(root, dict(list(masks.items())[:4]), list_name="train", mask_dir=MASKS)
    make_voc_folder(root, dict(list(masks.items())[4:]), list_name="val", mask_dir=MASKS)
    return root


@pytest.fixture
def root(clean_root, tmp_path) -> Path:
    """A copy of the clean root that a case may spoil."""
    return shutil.copytree(clean_root, tmp_path / "pascal")


def save_rgb(path: Path, rgb: np.ndarray) -> None:
    Image.fromarray(rgb.astype(np.uint8), mode="RGB").save(path)


# ----------------------------------------------------------------------------- cases
# Each spoils one thing and returns (the one problem's kind, its path, words it must hold).

Case = Callable[[Path], tuple[str, Path, list[str]]]


def mask_folder_missing(root: Path):
    shutil.rmtree(root / MASKS)  # one problem for the folder, none for each of its masks
    return check.MISSING_FOLDER, root / MASKS, ["folder missing", "fsstools prepare-pascal"]


def list_missing(root: Path):
    (root / "lists/val.txt").unlink()
    return check.MISSING_LIST, root / "lists/val.txt", ["list file missing",
                                                         "data/lists/pascal/val.txt"]


def line_with_three_fields(root: Path):
    with open(root / "lists/train.txt", "a") as f:
        f.write("JPEGImages/a.jpg SegmentationClassAug/a.png extra\n")
    return check.BAD_LINE, root / "lists/train.txt", ["line 5 is", "fix or remove that line"]


def image_missing(root: Path):
    (root / "JPEGImages/img001.jpg").unlink()
    return check.MISSING_IMAGE, root / "JPEGImages/img001.jpg", [
        "missing (listed in lists/train.txt line 2)", "copy VOC2012's JPEGImages/img001.jpg"]


def mask_missing(root: Path):
    (root / MASKS / "img004.png").unlink()
    return check.MISSING_MASK, root / MASKS / "img004.png", [
        "missing (listed in lists/val.txt line 1)", "prepare-pascal"]


def image_not_an_image(root: Path):
    (root / "JPEGImages/img002.jpg").write_bytes(b"these bytes are no JPEG")
    return check.CORRUPT_IMAGE, root / "JPEGImages/img002.jpg", ["cannot be decoded",
                                                                 "copy it again"]


def image_truncated(root: Path):
    path = root / "JPEGImages/img003.jpg"
    path.write_bytes(path.read_bytes()[:300])
    return check.CORRUPT_IMAGE, path, ["cannot be decoded", "truncated"]


def mask_not_an_image(root: Path):
    (root / MASKS / "img005.png").write_bytes(b"\x89PNG but not really")
    return check.CORRUPT_MASK, root / MASKS / "img005.png", ["cannot be decoded"]


def mask_of_another_size(root: Path):
    write_image(root / "JPEGImages/img000.jpg", 10, 12)
    return check.SIZE_MISMATCH, root / MASKS / "img000.png", [
        "24x32 but its image JPEGImages/img000.jpg is 10x12", "lists/train.txt line 1"]


def mask_value_outside_the_classes(root: Path):
    path = root / MASKS / "img001.png"
    mask = np.array(Image.open(path))
    mask[5, 5], mask[6, 6] = 21, 254
    Image.fromarray(mask).save(path)
    return check.BAD_VALUES, path, ["holds the value(s) 21, 254", "1..20 (classes) and 255"]


def mask_coloured_with_voc_colours(root: Path):
    path = root / MASKS / "img002.png"
    save_rgb(path, voc_colormap()[np.array(Image.open(path))])
    return check.COLOUR_MASK, path, ["colour-coded VOC mask (RGB colours)", "prepare-pascal"]


def mask_saved_as_a_photo(root: Path):
    path = root / MASKS / "img003.png"
    save_rgb(path, np.random.default_rng(0).integers(0, 256, (24, 32, 3)))
    return check.COLOUR_MASK, path, ["RGB colour image, not a single-channel class-id mask"]


def palette_mask_with_other_colours(root: Path):
    path = root / MASKS / "img004.png"
    # what quantising a colour mask gives: small indices, arbitrary colours
    img = Image.fromarray(np.array(Image.open(path)) % 4).convert("P")
    img.putpalette([200, 10, 10, 10, 200, 10, 10, 10, 200, 90, 90, 0] + [0] * 756)
    img.save(path)
    return check.PALETTE_MASK, path, ["palette PNG whose indices are not class ids"]


def image_in_both_lists(root: Path):
    with open(root / "lists/val.txt", "a") as f:
        f.write("JPEGImages/img000.jpg SegmentationClassAug/img000.png\n")
    return check.LIST_OVERLAP, root / "lists/val.txt", [
        "1 image(s) also in lists/train.txt (e.g. JPEGImages/img000.jpg)"]


CASES: list[Case] = [
    mask_folder_missing, list_missing, line_with_three_fields, image_missing, mask_missing,
    image_not_an_image, image_truncated, mask_not_an_image, mask_of_another_size,
    mask_value_outside_the_classes, mask_coloured_with_voc_colours, mask_saved_as_a_photo,
    palette_mask_with_other_colours, image_in_both_lists,
]


def data_check(root: Path, *extra: str) -> list[str]:
    return ["data-check", "--dataset", "pascal", "--data-root", str(root), "--no-progress",
            *extra]


def test_a_clean_root_passes(clean_root, capsys):
    assert check_pascal(clean_root, progress=False) == []
    assert cli.main(data_check(clean_root)) == 0
    assert "no problem found" in capsys.readouterr().out


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_each_problem_is_named_and_exits_2(case, root, capsys):
    kind, path, words = case(root)
    problems = check_pascal(root, progress=False)
    assert [(p.kind, p.path) for p in problems] == [(kind, path)], problems
    capsys.readouterr()
    assert cli.main(data_check(root)) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 1
    assert f"fsstools data-check: error: 1 problem(s) in the PASCAL data root {root} " \
           f"(1 {kind})" in err
    line = next(x for x in err.splitlines() if x.startswith(f"  {path}: "))
    for word in words:
        assert word in line, (word, line)


def test_every_problem_is_listed_at_once(root, capsys):
    expected = [case(root)[:2] for case in (list_missing, image_missing, mask_of_another_size,
                                            mask_value_outside_the_classes)]
    problems = check_pascal(root, progress=False)
    assert sorted((p.kind, str(p.path)) for p in problems) == sorted(
        (k, str(p)) for k, p in expected)
    assert cli.main(data_check(root)) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "4 problem(s)" in err and all(f"  {p}: " in err for _, p in expected)


def test_masks_stored_as_voc_or_grey_palettes_are_class_ids(root):
    for j, palette in ((0, voc_colormap()), (4, np.repeat(np.arange(256), 3).reshape(256, 3))):
        path = root / MASKS / f"img{j:03d}.png"
        img = Image.fromarray(np.array(Image.open(path))).convert("P")
        img.putpalette(palette.astype(np.uint8).ravel().tolist())
        img.save(path)
        with Image.open(path) as saved:
            assert saved.mode == "P"
    assert check_pascal(root, progress=False) == []


def test_paper_lists_are_required_on_request(root, capsys):
    assert check_pascal(root, progress=False) == []
    assert cli.main(data_check(root, "--paper-lists")) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert re.search(r"lists/train\.txt: 4 lines, not the paper's train list \(5953 lines\)",
                     err)
    assert "lists/val.txt: 2 lines, not the paper's val list (1449 lines)" in err


def test_a_missing_root_is_one_problem(tmp_path, capsys):
    assert cli.main(data_check(tmp_path / "nowhere")) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert f"  {tmp_path / 'nowhere'}: the data root does not exist" in err


def test_enough_cases():
    assert len(CASES) >= 12


def test_a_list_of_ones_own_is_checked_alone(root, capsys):
    (root / "lists/mine.txt").write_text("JPEGImages/img000.jpg SegmentationClassAug/img000.png\n"
                                         "img009\n")  # a VOC id: JPEGImages/img009.jpg ...
    argv = data_check(root, "--list", "lists/mine.txt", "lists/other.txt")
    assert cli.main(argv) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "3 problem(s)" in err and "(1 missing-list, 1 missing-image, 1 missing-mask)" in err
    assert f"  {root / 'lists/other.txt'}: list file missing; check the list path" in err
    assert f"  {root / 'JPEGImages/img009.jpg'}: missing (listed in lists/mine.txt line 2)" in err
