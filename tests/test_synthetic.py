import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsstools import cli
from fsstools.artifacts import file_hash
from fsstools.data import synthetic
from fsstools.data.synth_render import (
    N_CLASSES,
    SHAPES,
    STYLES,
    TEXTURES,
    boundary_band,
    class_parts,
    render_scene,
)
from fsstools.data.synthetic import SynthConfig, SynthError, ensure_synth, plan_classes

# Tiny sets are too small for 10-shot episodes by design; that warning has its own test.
pytestmark = pytest.mark.filterwarnings("ignore:.*fewer than 11 images:UserWarning")

TINY = SynthConfig(n_train=6, n_val=6, size=64, seed=0)


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): file_hash(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix in (".jpg", ".png", ".txt") and p.name != "contact_sheet.png"
    }


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return ensure_synth(tmp_path_factory.mktemp("synth"), TINY, progress=False, workers=1)


def test_same_seed_same_bytes_with_any_worker_count(tiny_root, tmp_path):
    other = ensure_synth(tmp_path / "synth", TINY, progress=False, workers=2)
    first, second = _hashes(tiny_root), _hashes(other)
    assert len(first) == 2 * (2 * 6 * 2 + 2)  # styles x (images + masks) + list files
    assert first == second


def test_second_call_reuses_without_rewriting(tiny_root, capsys):
    before = {p: p.stat().st_mtime_ns for p in tiny_root.rglob("*") if p.is_file()}
    ensure_synth(tiny_root, TINY, progress=True, workers=1)
    assert "reusing synthetic data" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in tiny_root.rglob("*") if p.is_file()} == before


def test_changed_config_regenerates_without_stale_files(tmp_path):
    root = ensure_synth(
        tmp_path, SynthConfig(n_train=4, n_val=4, size=64), progress=False, workers=1
    )
    old = _hashes(root)
    ensure_synth(root, SynthConfig(n_train=3, n_val=4, size=64, seed=1), progress=False, workers=1)
    new = _hashes(root)
    assert len(list((root / "A" / "JPEGImages").glob("*.jpg"))) == 7
    shared = set(old) & set(new) - {p for p in old if p.endswith(".txt")}
    assert shared and all(old[p] != new[p] for p in shared)
    assert json.loads((root / "synth.json").read_text())["config"]["seed"] == 1


def test_masks_hold_only_class_ids_and_borders(tiny_root):
    for mask_path in tiny_root.glob("*/SegmentationClass/*.png"):
        mask = Image.open(mask_path)
        image = Image.open(
            tiny_root / mask_path.parent.parent / "JPEGImages" / f"{mask_path.stem}.jpg"
        )
        assert mask.mode == "L" and mask.size == image.size == (64, 64)
        values = set(np.unique(np.asarray(mask)).tolist())
        assert values <= set(range(N_CLASSES + 1)) | {255}, mask_path
        assert 255 in values and len(values - {0, 255}) >= 1, mask_path


def test_border_band_is_thin_and_on_both_sides():
    instances = np.zeros((12, 12), dtype=np.uint8)
    instances[3:9, 3:9] = 1
    band = boundary_band(instances, half_width=1)
    assert band[2, 5] and band[3, 5] and not band[4, 5] and not band[1, 5]
    assert band.sum() == 20 + 24  # inner ring of the 6x6 square + outer sides (no corners)


def test_lists_match_files(tiny_root):
    for style in TINY.styles:
        listed = []
        for split, n in (("train", TINY.n_train), ("val", TINY.n_val)):
            lines = (tiny_root / style / "lists" / f"{split}.txt").read_text().splitlines()
            assert len(lines) == n
            listed += [rel for line in lines for rel in line.split()]
        assert all((tiny_root / style / rel).is_file() for rel in listed)
        on_disk = {str(p.relative_to(tiny_root / style)) for p in (tiny_root / style).glob("*/*.*")}
        assert on_disk - {f"lists/{s}.txt" for s in ("train", "val")} == set(listed)


def test_class_plan_is_balanced():
    cfg = SynthConfig(n_train=400, n_val=50)
    counts = Counter(c for classes in plan_classes(cfg, "A", "train") for c in classes)
    assert sorted(counts) == list(range(1, N_CLASSES + 1))
    assert max(counts.values()) - min(counts.values()) <= 0.25 * np.mean(list(counts.values()))
    assert plan_classes(cfg, "A", "train") != plan_classes(cfg, "B", "train")


def test_only_shape_and_texture_together_name_a_class():
    parts = [class_parts(c) for c in range(1, N_CLASSES + 1)]
    assert len(set(parts)) == N_CLASSES == len(SHAPES) * len(TEXTURES)
    for fold in range(4):
        assert {parts[5 * fold + j][0] for j in range(5)} == set(range(len(SHAPES)))


def test_foreground_share_is_pascal_like():
    shares = []
    for i in range(30):
        rng = np.random.default_rng(i)
        classes = tuple(int(c) for c in rng.choice(np.arange(1, 21), 1 + i % 3, replace=False))
        _, label = render_scene(rng, classes, 64, STYLES["A"], 255)
        shares += [np.mean(label == c) for c in set(classes)]
    assert 0.12 < np.median(shares) < 0.25
    assert np.quantile(shares, 0.1) > 0.05


def test_styles_differ_in_colour_statistics(tiny_root):
    def stats(style):
        imgs = [
            np.asarray(Image.open(p).convert("HSV"), dtype=float)
            for p in tiny_root.glob(f"{style}/JPEGImages/*.jpg")
        ]
        return np.mean([im[..., 1].mean() for im in imgs]), np.mean(
            [im[..., 2].mean() for im in imgs]
        )

    (sat_a, val_a), (sat_b, val_b) = stats("A"), stats("B")
    assert sat_a - sat_b > 10 and val_a - val_b > 10


def test_contact_sheet_written(tiny_root, tmp_path):
    out = synthetic.contact_sheet(tiny_root, tmp_path / "sheet.png", n=4)
    sheet = Image.open(out)
    assert sheet.format == "PNG" and sheet.width >= 4 * 64 and sheet.height >= 2 * 2 * 64
    assert (tiny_root / "contact_sheet.png").is_file()


def test_unwritable_root_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    with pytest.raises(SynthError, match="writable"):
        ensure_synth(blocker / "synth", TINY, progress=False, workers=1)


def test_foreign_folder_is_not_deleted(tmp_path):
    (tmp_path / "A").mkdir()
    (tmp_path / "A" / "keep.txt").write_text("user data")
    with pytest.raises(SynthError, match="not written by"):
        ensure_synth(tmp_path, TINY, progress=False, workers=1)
    assert (tmp_path / "A" / "keep.txt").is_file()


@pytest.mark.filterwarnings("default")
def test_too_few_val_images_warns(tmp_path):
    with pytest.warns(UserWarning, match="fewer than 11 images"):
        ensure_synth(
            tmp_path,
            SynthConfig(n_train=2, n_val=2, size=64, styles=("A",)),
            progress=False,
            workers=1,
        )


@pytest.mark.parametrize(
    "kwargs", [{"size": 16}, {"styles": ("C",)}, {"n_val": 0}, {"styles": ("A", "A")}]
)
def test_bad_config_is_rejected(kwargs):
    with pytest.raises(ValueError):
        SynthConfig(**kwargs)


def test_cli_generates_and_reports_errors(tmp_path, capsys):
    args = ["--out", str(tmp_path / "s"), "--n-train", "2", "--n-val", "2", "--size", "64"]
    assert cli.main(["synth", *args, "--styles", "B", "--workers", "1", "--no-progress"]) == 0
    assert (tmp_path / "s" / "B" / "lists" / "val.txt").is_file()
    assert cli.main(["synth", *args, "--size", "8"]) == 2
    assert "size" in capsys.readouterr().err
