import hashlib
import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsstools import cli
from fsstools.cache import file_hash
from fsstools.constants import min_fg_pixels
from fsstools.data import voc
from fsstools.data.splits import PASCAL_CLASSES
from fsstools.data.synth import generate as synthetic
from fsstools.data.synth import manifest as synth_manifest
from fsstools.data.synth import pascal as synth_pascal
from fsstools.data.synth import sheet as synth_sheet
from fsstools.data.synth import stats as synth_stats
from fsstools.data.synth.benchmark import ensure_synth
from fsstools.data.synth.classes import N_CLASSES, SHAPES, TEXTURES, class_parts
from fsstools.data.synth.generate import SynthConfig, SynthError, plan_classes
from fsstools.data.synth.render import STYLES, boundary_band, render_scene, render_scene_v2
from fsstools.data.synth.shapes import place_cut, polygon_area, shape_polygon
from fsstools.errors import ConflictError

# Tiny sets are too small for 10-shot episodes by design; that warning has its own test.
pytestmark = pytest.mark.filterwarnings("ignore:.*fewer than 11 images:UserWarning")

TINY = SynthConfig(n_train=6, n_val=6, size=64, seed=0)
V1_SET = SynthConfig(n_train=10, n_val=10, size=64, seed=0, preset="v1")
V1_DIGEST = "39f3245abe82981208848d0af45801d67253917fe59451f50a8d40606afcb0b3"
"""sha256 of the sorted {file: file_hash} of V1_SET, recorded from the v1 generator (commit
5392329) before v2 was written."""


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


def test_readers_refuse_a_benchmark_of_another_generator(tiny_root, tmp_path):
    """A set made by older generator code is not today's benchmark: every reader (they all
    list images through voc.read_pairs) stops with the command that regenerates it."""
    assert voc.read_pairs(tiny_root / "A", "lists/train.txt")  # current: read as usual
    stale = tmp_path / "synth"
    shutil.copytree(tiny_root, stale)
    manifest = json.loads((stale / synth_manifest.MANIFEST).read_text())
    manifest["version"] = "0123456789abcdef"
    (stale / synth_manifest.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ConflictError) as err:
        voc.read_pairs(stale / "A", "lists/train.txt")  # a style folder; the manifest above
    assert f"fsstools synth --out {stale} --n-train 6 --n-val 6 --size 64" in str(err.value)
    assert "0123456789abcdef" in str(err.value)
    (stale / synth_manifest.MANIFEST).unlink()  # no manifest: somebody's own data, read as usual
    assert voc.read_pairs(stale / "A", "lists/train.txt")
    (stale / synth_manifest.MANIFEST).write_text(json.dumps(manifest))
    code = cli.main(["episodes", "--root", str(stale / "A"), "--list", "lists/val.txt",
                     "--dataset", "synth", "--fold", "0", "--n", "2", "--out",
                     str(tmp_path / "e.json")])
    assert code == 2 and not (tmp_path / "e.json").exists()


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


@pytest.mark.parametrize("preset", synthetic.PRESETS)
def test_class_plan_is_balanced(preset):
    cfg = SynthConfig(n_train=400, n_val=50, preset=preset)
    counts = Counter(c for classes in plan_classes(cfg, "A", "train") for c in set(classes))
    assert sorted(counts) == list(range(1, N_CLASSES + 1))
    assert max(counts.values()) - min(counts.values()) <= 0.25 * np.mean(list(counts.values()))
    assert plan_classes(cfg, "A", "train") != plan_classes(cfg, "B", "train")


def test_v2_plan_has_pascal_classes_and_objects_per_image():
    plan = plan_classes(SynthConfig(n_train=4000), "A", "train")
    classes = [len(set(p)) for p in plan]
    # PASCAL VOC 2012 trainval: 1.48 classes and 2.38 objects per image, 36% with 2+ classes.
    assert np.mean(classes) == pytest.approx(1.48, abs=0.05)
    assert np.mean([c >= 2 for c in classes]) == pytest.approx(0.36, abs=0.03)
    assert 2.1 < np.mean([len(p) for p in plan]) < 2.5
    for p in plan:  # objects of one class come together; no class is dealt twice
        assert list(p) == sorted(p, key=p.index)
        assert max(Counter(p).values()) <= synth_pascal.MAX_INSTANCES


@pytest.mark.parametrize("class_id", [5, 8, 19])  # bottle, cat, train
def test_drawn_shares_follow_the_pascal_quantiles(class_id):
    rng = np.random.default_rng(0)
    draws = np.array([synth_pascal.draw_share(rng, class_id) for _ in range(20000)])
    q05, med, q95, _ = synth_pascal.class_stats(class_id)
    assert np.quantile(draws, [0.05, 0.5, 0.95]) == pytest.approx([q05, med, q95], rel=0.06)


def test_class_sizes_follow_their_pascal_classes():
    assert tuple(synth_pascal.PASCAL_CLASS_STATS) == PASCAL_CLASSES  # same ids, VOC order
    medians = [synth_pascal.class_stats(c)[1] for c in range(1, N_CLASSES + 1)]
    bottle, plant, cat, bus, train = (medians[c - 1] for c in (5, 16, 8, 6, 19))
    assert max(bottle, plant) < 0.05 and min(cat, bus, train) > 0.2
    assert min(medians) <= 0.03 and max(medians) >= 0.3  # typical sizes spread over 10x
    spreads = [max(medians[5 * f : 5 * f + 5]) / min(medians[5 * f : 5 * f + 5]) for f in range(4)]
    assert min(spreads) > 1.5 and max(spreads) > 5  # as PASCAL-5i: fold 2 1.7x, fold 1 6.9x


def test_objects_can_be_cut_by_the_border_and_keep_their_labelled_size():
    size, cut, ratios = 128, 0, []
    for i in range(40):
        rng = np.random.default_rng(i)
        pts = shape_polygon(SHAPES[i % len(SHAPES)], rng)
        target = 0.3 * size * size
        mask = place_cut(rng, pts * math.sqrt(target / polygon_area(pts)), size, [], target, 1)
        cut += bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
        labelled = mask & ~boundary_band(mask.view(np.uint8), 1)
        ratios.append(labelled.sum() / target)
    assert cut >= 20  # most large objects reach beyond the frame
    assert 0.9 < np.median(ratios) < 1.1  # grown back to the asked labelled size


def test_v1_preset_is_the_first_version_byte_for_byte(tmp_path):
    root = ensure_synth(tmp_path, V1_SET, progress=False, workers=1)
    files = _hashes(root)
    assert len(files) == 2 * (2 * 20 + 2)
    assert hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest() == V1_DIGEST
    assert json.loads((root / "synth.json").read_text())["config"]["preset"] == "v1"


def test_v2_is_the_default():
    assert SynthConfig().preset == "v2"
    assert plan_classes(SynthConfig(n_train=50), "A", "train") != plan_classes(
        SynthConfig(n_train=50, preset="v1"), "A", "train"
    )


def test_only_shape_and_texture_together_name_a_class():
    parts = [class_parts(c) for c in range(1, N_CLASSES + 1)]
    assert len(set(parts)) == N_CLASSES == len(SHAPES) * len(TEXTURES)
    for fold in range(4):
        assert {parts[5 * fold + j][0] for j in range(5)} == set(range(len(SHAPES)))


def _object_colour(render, class_id: int, seeds: range) -> np.ndarray:
    """Mean RGB (0-255) of the pixels labelled ``class_id`` over single-class scenes."""
    pixels = []
    for seed in seeds:
        image, label = render(np.random.default_rng(seed), (class_id,), 64, STYLES["A"], 255)
        pixels.append(image[label == class_id].reshape(-1, 3).astype(float))
    return np.concatenate(pixels).mean(axis=0)


def test_v2_colours_follow_the_shape_so_any_patch_names_the_class():
    """v2 turns a texture family's palette by the class's shape: the five classes of one
    texture differ in colour (v1 paints them alike and only the outline tells them apart)."""
    for texture in range(len(TEXTURES)):
        ids = [c for c in range(1, N_CLASSES + 1) if class_parts(c)[1] == texture]
        for render, far in ((render_scene_v2, True), (render_scene, False)):
            colours = np.stack([_object_colour(render, c, range(6)) for c in ids])
            gaps = np.linalg.norm(colours[:, None] - colours[None], axis=-1)
            closest = gaps[~np.eye(len(ids), dtype=bool)].min()
            assert (closest > 25) if far else (closest < 25), (render.__name__, ids, closest)


def test_v1_objects_cover_about_the_same_share_whatever_the_class():
    shares = []
    for i in range(30):
        rng = np.random.default_rng(i)
        classes = tuple(int(c) for c in rng.choice(np.arange(1, 21), 1 + i % 3, replace=False))
        _, label = render_scene(rng, classes, 64, STYLES["A"], 255)
        shares += [np.mean(label == c) for c in set(classes)]
    assert 0.12 < np.median(shares) < 0.25
    assert np.quantile(shares, 0.1) > 0.05


def test_v2_size_targets_measured_from_the_masks(tmp_path):
    cfg = SynthConfig(n_train=1, n_val=300, size=64, styles=("A",))
    root = ensure_synth(tmp_path, cfg, progress=False, workers=2)
    recorded = json.loads((root / "synth.json").read_text())["stats"]["A/val"]
    measured = synth_stats.measure(root)["A/val"]
    assert measured == {k: v for k, v in recorded.items() if k != "objects_per_image"}
    # Class medians of the held (image, class) shares differ >= 5x, their 5-95% range >= 8x
    # (v1: 1.2x and 3.5x); PASCAL VOC 2012: 6.2x and 29x.
    assert measured["median_ratio"] >= 5 and measured["range_ratio"] >= 8
    small, large = measured["class_share"]["0.5"][4], measured["class_share"]["0.5"][5]
    assert large > 3 * small  # bus objects cover far more of the image than bottles
    assert 0.3 < measured["border_cut_share"] < 0.9
    assert min(measured["images_per_class"]) >= 11
    assert 1.2 < measured["classes_per_image"] < 1.5 and measured["multi_class_share"] > 0.2


def test_summarise_counts_only_classes_held_by_an_image():
    size = 128
    held_px, tiny_px = min_fg_pixels(size * size), min_fg_pixels(size * size) - 1
    counts = np.zeros((3, 2, N_CLASSES + 1), dtype=np.int64)
    counts[0, 0, 1], counts[0, 1, 1] = 4 * held_px, 3  # class 1, cut by the border
    counts[1, 0, 1], counts[1, 0, 2] = held_px, tiny_px  # class 2 too small to count
    counts[2, 0, 2] = 2 * held_px
    counts[:, 0, 0] = size * size - counts[:, 0, 1:].sum(axis=1)
    s = synth_stats.summarise(counts, size, objects=[1, 2, 1])
    assert s["images_per_class"][:3] == [2, 1, 0]
    assert s["class_share"]["0.5"][0] == round(2.5 * held_px / size**2, 4)
    assert s["class_share"]["0.5"][2] is None
    assert s["median_ratio"] == pytest.approx(2.5 / 2, abs=1e-3)
    assert s["range_ratio"] == pytest.approx(3.8 / 1.1, rel=1e-3)  # shares h, 2h, 4h
    assert s["border_cut_share"] == pytest.approx(1 / 3, abs=1e-3)
    assert s["classes_per_image"] == 1 and s["objects_per_image"] == pytest.approx(4 / 3, 1e-3)
    assert s["fg_share_quantiles"]["0.05"] < s["held_share_quantiles"]["0.05"]


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
    out = synth_sheet.contact_sheet(tiny_root, tmp_path / "sheet.png", n=4)
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
    "kwargs",
    [{"size": 16}, {"styles": ("C",)}, {"n_val": 0}, {"styles": ("A", "A")}, {"preset": "v3"}],
)
def test_bad_config_is_rejected(kwargs):
    with pytest.raises(ValueError):
        SynthConfig(**kwargs)


def test_cli_generates_and_reports_errors(tmp_path, capsys):
    args = ["--out", str(tmp_path / "s"), "--n-train", "2", "--n-val", "2", "--size", "64"]
    assert cli.main(["synth", *args, "--styles", "B", "--workers", "1", "--no-progress"]) == 0
    assert (tmp_path / "s" / "B" / "lists" / "val.txt").is_file()
    assert json.loads((tmp_path / "s" / "synth.json").read_text())["config"]["preset"] == "v2"
    assert cli.main(["synth", *args, "--preset", "v1", "--workers", "1", "--no-progress"]) == 0
    assert json.loads((tmp_path / "s" / "synth.json").read_text())["config"]["preset"] == "v1"
    assert cli.main(["synth", *args, "--size", "8"]) == 2
    assert "size" in capsys.readouterr().err
    assert cli.main(["synth", *args, "--preset", "v3"]) == 2
