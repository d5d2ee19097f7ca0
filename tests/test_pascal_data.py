"""The real PASCAL-5i data path: the paper's lists, SBD .mat + VOC masks -> SegmentationClassAug,
and the data check, on tiny VOC and SBD trees the tests write (scipy.io.savemat for SBD)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from fsstools import cli, paths
from fsstools.data import pascal_lists
from fsstools.data.sbd import prepare_pascal, read_sbd_mat
from fsstools.errors import ConflictError, DataError, MissingError
from tests.fixtures import write_image, write_palette_png, write_sbd_mat

H, W = 20, 24
VOC_TRAIN = ["2007_000032", "2007_000039"]  # VOC masks (palette PNGs with 255 boundaries)
SBD_TRAIN = ["2008_000008", "2008_000015", "2007_000039"]  # 2007_000039: VOC's mask wins
VAL = ["2007_000033", "2007_000042"]  # VOC val masks


def sbd_segmentation(seed: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[2:12, 3:15] = seed % 20 + 1
    mask[14:18, 16:22] = (seed + 7) % 20 + 1
    return mask


def voc_mask(seed: int) -> np.ndarray:
    mask = sbd_segmentation(seed + 100)
    mask[0, :] = 255  # VOC's object boundaries
    return mask


def paper_line(image_id: str) -> str:
    return f"JPEGImages/{image_id}.jpg SegmentationClassAug/{image_id}.png"


@pytest.fixture
def sources(tmp_path, monkeypatch):
    """A VOC2012 folder, an unpacked SBD archive and tiny paper lists in the authors' format."""
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for seed, image_id in enumerate(sorted({*VOC_TRAIN, *SBD_TRAIN, *VAL})):
        write_image(voc / "JPEGImages" / f"{image_id}.jpg", H, W, seed=seed)
    for seed, image_id in enumerate(VOC_TRAIN + VAL):
        write_palette_png(voc / "SegmentationClass" / f"{image_id}.png", voc_mask(seed))
    sbd = tmp_path / "sbd"
    for seed, image_id in enumerate(SBD_TRAIN):
        write_sbd_mat(sbd / "benchmark_RELEASE/dataset/cls" / f"{image_id}.mat",
                      sbd_segmentation(seed))
    lists = tmp_path / "shipped"
    train = list(dict.fromkeys(SBD_TRAIN[:2] + VOC_TRAIN))  # the PFENet rule, in miniature
    (lists / "pascal").mkdir(parents=True)
    (lists / "pascal/train.txt").write_text("".join(paper_line(i) + "\n" for i in train))
    (lists / "pascal/val.txt").write_text("".join(paper_line(i) + "\n" for i in VAL))
    monkeypatch.setattr(paths, "lists_dir", lambda: lists)
    return voc, sbd


# ----------------------------------------------------------------------------- the lists


def test_shipped_lists_are_the_papers():
    train = pascal_lists.paper_list("train").read_text().splitlines()
    val = pascal_lists.paper_list("val").read_text().splitlines()
    assert (len(train), len(val)) == (5953, 1449) == tuple(pascal_lists.PAPER_LIST_LINES.values())
    line = re.compile(r"JPEGImages/(\d{4}_\d{6})\.jpg SegmentationClassAug/\1\.png")
    ids = {name: [line.fullmatch(x)[1] for x in lines]
           for name, lines in (("train", train), ("val", val))}
    assert len(set(ids["train"])) == 5953 and len(set(ids["val"])) == 1449
    assert not set(ids["train"]) & set(ids["val"])
    assert ids["val"] == sorted(ids["val"])  # VOC2012's val.txt
    # PFENet's rule: SBD's train_noval.txt (5,623 ids, sorted), then the VOC train ids it lacks
    drops = [i for i in range(1, 5953) if ids["train"][i] < ids["train"][i - 1]]
    assert drops == [5623]
    readme = (pascal_lists.paper_list("train").parent / "README.md").read_text()
    assert "MIT License" in readme and "mboudiaf/RePRI-for-Few-Shot-Segmentation" in readme


def test_installed_lists_never_replace_a_different_list_silently(sources, tmp_path):
    root = tmp_path / "root"
    (root / "lists").mkdir(parents=True)
    (root / "lists/train.txt").write_text("JPEGImages/x.jpg SegmentationClassAug/x.png\n")
    with pytest.raises(ConflictError, match=re.escape(str(root / "lists/train.txt"))):
        pascal_lists.install_paper_lists(root)
    written = pascal_lists.install_paper_lists(root, overwrite=True)
    assert [p.read_text() for p in written] == [pascal_lists.paper_list(s).read_text()
                                               for s in ("train", "val")]


# ----------------------------------------------------------------------------- SBD and VOC


def test_sbd_mat_gives_its_segmentation(tmp_path):
    write_sbd_mat(tmp_path / "a.mat", sbd_segmentation(3))
    mask = read_sbd_mat(tmp_path / "a.mat")
    assert mask.dtype == np.uint8 and np.array_equal(mask, sbd_segmentation(3))


@pytest.mark.parametrize("content, words", [
    ({"GTcls": {"Boundaries": np.zeros((2, 2))}}, ["no GTcls.Segmentation", "['Boundaries']"]),
    ({"GTinst": {"Segmentation": np.zeros((2, 2))}}, ["no GTcls.Segmentation", "['GTinst']",
                                                      "dataset/cls/ (not inst/)"]),
    ({"GTcls": {"Segmentation": np.full((2, 2), 40, np.uint8)}}, ["values [40]", "0..20"]),
    (b"MATLAB 5.0 MAT-file, truncated", ["cannot be read as a MATLAB file"]),
])
def test_unusable_sbd_file_is_named_with_the_fix(tmp_path, content, words):
    path = tmp_path / "2008_000008.mat"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        savemat(path, content)
    with pytest.raises(DataError) as err:
        read_sbd_mat(path)
    assert str(path) in str(err.value) and "benchmark.tgz" in str(err.value)
    for word in words:
        assert word in str(err.value)


def test_prepare_merges_sbd_and_voc_masks_voc_first(sources, tmp_path):
    voc, sbd = sources
    done = prepare_pascal(voc.parent, sbd, tmp_path / "pascal", progress=False)
    root = tmp_path / "pascal"
    assert (done.n_voc, done.n_sbd, done.n_written) == (4, 2, 6)
    out, modes = {}, set()
    for path in (root / "SegmentationClassAug").glob("*.png"):
        with Image.open(path) as img:
            out[path.stem], modes = np.array(img), modes | {img.mode}
    assert modes == {"L"}
    assert np.array_equal(out["2007_000039"], voc_mask(1))  # in both: VOC's, boundary kept
    assert (out["2007_000039"] == 255).any()
    assert np.array_equal(out["2008_000015"], sbd_segmentation(1))  # SBD only
    assert np.array_equal(out["2007_000042"], voc_mask(3))  # VOC val
    assert (root / "JPEGImages").resolve() == (voc / "JPEGImages").resolve()
    assert (root / "lists/val.txt").read_text() == pascal_lists.paper_list("val").read_text()
    again = prepare_pascal(voc, sbd / "benchmark_RELEASE", root, progress=False)
    assert again.n_written == 0  # an interrupted run resumes
    assert prepare_pascal(voc, sbd, root, overwrite=True, progress=False).n_written == 6


def test_prepare_names_a_missing_folder(sources, tmp_path):
    voc, sbd = sources
    with pytest.raises(MissingError, match=re.escape(f"SBD folder {tmp_path / 'nope'}")):
        prepare_pascal(voc, tmp_path / "nope", tmp_path / "out")
    with pytest.raises(MissingError, match="holds no cls/.*benchmark_RELEASE/dataset/cls"):
        prepare_pascal(voc, tmp_path / "shipped", tmp_path / "out")
    (voc / "SegmentationClass").rename(voc / "elsewhere")
    with pytest.raises(MissingError, match="has no SegmentationClass/"):
        prepare_pascal(voc, sbd, tmp_path / "out")


def test_a_corrupt_sbd_file_stops_the_command_with_its_name(sources, tmp_path, capsys):
    voc, sbd = sources
    bad = sbd / "benchmark_RELEASE/dataset/cls/2008_000015.mat"
    bad.write_bytes(b"not a MATLAB file at all")
    argv = ["prepare-pascal", "--voc", str(voc), "--sbd", str(sbd), "--out",
            str(tmp_path / "out"), "--no-progress"]
    assert cli.main(argv) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert f"error: SBD file {bad} cannot be read" in err and "Traceback" not in err
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_prepare_then_check_through_the_command_line(sources, tmp_path, capsys):
    voc, sbd = sources
    root = tmp_path / "pascal"
    argv = ["prepare-pascal", "--voc", str(voc), "--sbd", str(sbd), "--out", str(root),
            "--no-progress"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "4 VOC + 2 SBD masks" in out and "no problem found" in out
    check = ["data-check", "--dataset", "pascal", "--data-root", str(root), "--paper-lists",
             "--no-progress"]
    assert cli.main(check) == 0
    assert f"{root}: no problem found" in capsys.readouterr().out
