"""Segmenting your own images: the API, the command, the masks people have, bad inputs.

Images and masks are written by the tests (JPEG and PNG, odd sizes); the checkpoint is a
random tiny PSPNet, so the numbers say nothing about quality, only about shapes, files and
agreement with ``run_method``.
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import fsstools
from fsstools import cli
from fsstools import config as config_lib
from fsstools.data.user_masks import read_support, task_mask
from fsstools.errors import ConfigError, DataError, MissingError
from fsstools.inference import METHODS, run_method
from fsstools.models.backbones import TRUNKS, DilatedResNet
from fsstools.models.checkpoints import CHECKPOINT_FORMAT
from fsstools.models.pspnet import build_model
from fsstools.own_images.segmentation import extract, load_backbone, segment, support_tensors
from tests.tiny import TINY_MODEL, training_record

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = 32  # test size: 173x211 images -> 26x32 -> 4x4 features


def picture(h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image with a bright rectangle, and the rectangle's 0/255 mask."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 80, size=(h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4: h // 2 + seed % 7, w // 5: w // 2] = 255
    img[mask > 0] = (220, 180, 40)
    return img, mask


def write_pair(folder: Path, name: str, h: int, w: int, seed: int, suffix: str = ".jpg"
               ) -> tuple[Path, Path]:
    img, mask = picture(h, w, seed)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(folder / f"{name}{suffix}")
    Image.fromarray(mask).save(folder / f"{name}_mask.png")
    return folder / f"{name}{suffix}", folder / f"{name}_mask.png"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Five supports (JPEG, odd sizes), two queries (a JPEG 173x211 and a PNG 97x64), and
    a random tiny checkpoint."""
    base = tmp_path_factory.mktemp("own")
    supports = [write_pair(base / "support", f"s{i}", 150 + 7 * i, 121 + 5 * i, i)
                for i in range(5)]
    (q1, m1), (q2, m2) = (write_pair(base / "query", "q1", 173, 211, 11),
                          write_pair(base / "query", "q2", 97, 64, 12, suffix=".png"))
    m1.unlink(), m2.unlink()  # the query folder holds queries only
    torch.manual_seed(0)
    ckpt = base / "best.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model": build_model(TINY_MODEL, 16).state_dict(),
                "model_config": config_lib.to_dict(TINY_MODEL), "n_classes": 16,
                **training_record(0)}, ckpt)
    return {"base": base, "supports": supports, "queries": [q1, q2], "checkpoint": ckpt}


@pytest.mark.parametrize("shots", [1, 5])
def test_api_masks_have_the_query_size(world, shots):
    results = fsstools.segment(supports=world["supports"][:shots], queries=world["queries"],
                               checkpoint=world["checkpoint"], method="repri", size=SIZE)
    assert [r.name for r in results] == ["q1", "q2"]
    assert [r.mask.shape for r in results] == [(173, 211), (97, 64)]
    for r in results:
        assert r.probs.shape == r.mask.shape and r.probs.dtype == np.float32
        assert 0 <= r.probs.min() <= r.probs.max() <= 1
        assert np.array_equal(r.mask, r.probs > 0.5)
        assert len(r.prior) == METHODS["repri"].iterations + 1 == r.iterations + 1
        assert {"loss", "ce", "entropy", "kl", "fg_share"} <= set(r.traces)
        assert 0 <= r.pi <= 1 and r.seconds > 0


def test_api_equals_run_method_on_the_same_features(world):
    backbone = load_backbone(world["checkpoint"])
    pairs = [read_support(i, m) for i, m in world["supports"][:2]]
    shots = extract(backbone.model, [p[0] for p in pairs], SIZE, [p[1] for p in pairs])
    sf, sm = support_tensors(shots)
    query = np.array(Image.open(world["queries"][0]).convert("RGB"))
    q = extract(backbone.model, [query], SIZE)
    expected = run_method(METHODS["repri"], sf[None], sm[None], q.feats, q.valid)
    (got,) = segment(world["supports"][:2], [query], backbone, size=SIZE)
    torch.testing.assert_close(got.logits, expected.logits[0])
    assert got.pi == pytest.approx(float(expected.pi[0]))
    assert got.name == "query0"


def test_api_takes_pil_images_arrays_and_class_id_masks(world):
    img, mask = picture(60, 45, 3)
    ids = Image.fromarray(np.where(mask > 0, 7, np.where(np.arange(45) < 5, 2, 0)).astype(
        np.uint8), mode="L").convert("P")  # a palette PNG of class ids
    results = segment([(Image.fromarray(img), ids)], [img, Image.fromarray(img)],
                      world["checkpoint"], size=SIZE, class_id=7)
    assert [r.mask.shape for r in results] == [(60, 45)] * 2
    np.testing.assert_array_equal(results[0].probs, results[1].probs)
    with pytest.raises(DataError, match="no class 3 pixel"):
        segment([(img, ids)], [img], world["checkpoint"], size=SIZE, class_id=3)


def test_imagenet_weights_without_base_training(tmp_path, world):
    """A torchvision-layout ResNet state dict (its classifier included) is a backbone."""
    trunk = DilatedResNet(TRUNKS["small"])
    state = {**trunk.state_dict(), "fc.weight": torch.zeros(10, 128), "fc.bias": torch.zeros(10)}
    torch.save({k: v for k, v in state.items() if "num_batches" not in k}, tmp_path / "in.pth")
    backbone = load_backbone(tmp_path / "in.pth")
    assert backbone.kind == "imagenet" and backbone.model.feature_dim == 128
    (r,) = segment(world["supports"][:1], world["queries"][:1], backbone, size=SIZE)
    assert r.mask.shape == (173, 211)


@pytest.mark.parametrize("values, class_id, expected", [
    ([[0, 1], [1, 0]], None, [[0, 1], [1, 0]]),  # 0/1
    ([[0, 255], [255, 0]], None, [[0, 1], [1, 0]]),  # 0/255: 255 is the object
    ([[0, 1], [255, 0]], None, [[0, 1], [255, 0]]),  # 0/1/255: 255 is ignore
    ([[0, 4], [255, 9]], 4, [[0, 1], [255, 0]]),  # class ids
])
def test_task_masks_from_the_masks_people_have(values, class_id, expected):
    out = task_mask(np.array(values, np.uint8), (2, 2), "m.png", class_id)
    assert out.tolist() == expected and out.dtype == np.uint8


def test_grey_rgb_masks_read_and_colour_masks_refused(tmp_path):
    img, mask = picture(20, 30, 0)
    Image.fromarray(np.stack([mask] * 3, axis=2)).save(tmp_path / "grey.png")
    _, out = read_support(img, tmp_path / "grey.png")
    assert out.tolist() == (mask > 0).astype(np.uint8).tolist()
    colour = np.stack([mask, mask // 2, mask], axis=2)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(DataError, match="colour.png is a colour image"):
        read_support(img, tmp_path / "colour.png")
    with pytest.raises(MissingError, match="nothing.png does not exist"):
        read_support(img, tmp_path / "nothing.png")


# ----------------------------------------------------------------------------- the command


def test_command_writes_masks_overlays_probabilities_and_rows(world, tmp_path, capsys):
    out = tmp_path / "out"
    s = world["supports"]
    argv = ["segment", "--checkpoint", str(world["checkpoint"]), "--size", str(SIZE),
            "--support", f"{s[0][0]}:{s[0][1]}", "--support", f"{s[1][0]}:{s[1][1]}",
            "--query", str(world["queries"][0]), "--query-dir", str(world["queries"][0].parent),
            "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["query"] for r in rows] == ["q1", "q1_2", "q2"]  # a repeated stem gets a suffix
    assert json.loads((out / "results.json").read_text())[2]["query"] == "q2"
    for row, size in zip(rows, [(211, 173), (211, 173), (64, 97)], strict=True):
        assert Image.open(out / row["mask"]).size == size  # (W, H) of the query
        assert set(np.unique(np.array(Image.open(out / row["mask"])))) <= {0, 255}
        assert Image.open(out / row["overlay"]).size == size
        assert np.load(out / row["probs"]).shape == size[::-1]
        assert 0 <= float(row["pi"]) <= 1 and int(row["iterations"]) == 50
        assert 0 <= float(row["predicted_share"]) <= 1 and float(row["seconds"]) > 0
    assert "3 queries segmented" in capsys.readouterr().out


def _spoil(world: Path, case: str, tmp: Path) -> tuple[list[str], str]:
    """Arguments of a command with one bad input, and the file its error must name."""
    (img, mask), query = world["supports"][0], world["queries"][0]
    if case == "missing file":
        return [f"{img}:{tmp / 'gone.png'}", str(query)], "gone.png"
    if case == "size mismatch":
        Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp / "small.png")
        return [f"{img}:{tmp / 'small.png'}", str(query)], "small.png"
    if case == "empty support":
        Image.fromarray(np.zeros((150, 121), np.uint8)).save(tmp / "empty.png")
        return [f"{img}:{tmp / 'empty.png'}", str(query)], "empty.png"
    if case == "not an image":
        (tmp / "notes.jpg").write_text("not a picture")
        return [f"{img}:{mask}", str(tmp / "notes.jpg")], "notes.jpg"
    values = np.array(Image.open(mask)) // 255 * 3  # class ids 0/3 without --class-id
    Image.fromarray(values).save(tmp / "ids.png")
    return [f"{img}:{tmp / 'ids.png'}", str(query)], "ids.png"


@pytest.mark.parametrize("case", ["missing file", "size mismatch", "empty support",
                                  "not an image", "class ids without --class-id"])
def test_command_refuses_bad_inputs_naming_the_file(world, tmp_path, capsys, case):
    (support, query), named = _spoil(world, case, tmp_path)
    out = tmp_path / "out"
    argv = ["segment", "--checkpoint", str(world["checkpoint"]), "--size", str(SIZE),
            "--support", support, "--query", query, "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fsstools segment: error: ") and named in err[-1], err
    assert not out.exists()  # nothing half-written


def test_command_refuses_a_support_without_mask(world, tmp_path, capsys):
    argv = ["segment", "--checkpoint", str(world["checkpoint"]), "--support",
            str(world["supports"][0][0]), "--query", str(world["queries"][0]),
            "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    assert "expected IMAGE:MASK" in capsys.readouterr().err


# ----------------------------------------------------------------------------- notebook 07


@pytest.mark.notebooks
@pytest.mark.slow
def test_notebook_07_segments_injected_paths(world, tmp_path):
    """07 under papermill with your own files: supports, queries and checkpoint injected
    (paths relative to the folder papermill runs in)."""
    import papermill as pm

    (tmp_path / "mine").symlink_to(world["base"])
    rel = {p: Path("mine") / p.relative_to(world["base"]) for pair in world["supports"]
           for p in pair}
    supports = [f"{rel[i]}:{rel[m]}" for i, m in world["supports"][:2]]
    queries = [str(Path("mine") / q.relative_to(world["base"])) for q in world["queries"]]
    pm.execute_notebook(
        str(Path(__file__).resolve().parent.parent / "notebooks" / "07_your_images.ipynb"),
        str(tmp_path / "07.ipynb"), cwd=str(tmp_path), kernel_name="python3",
        progress_bar=False,
        parameters={"supports": supports, "queries": queries, "size": SIZE,
                    "checkpoint": str(world["checkpoint"]), "output_dir": "results"})
    out = tmp_path / "results"
    rows = pd.read_csv(out / "segmented" / "results.csv")
    assert list(rows["query"]) == ["q1", "q2"]
    assert Image.open(out / "segmented" / "q1_mask.png").size == (211, 173)
    assert (out / "segmentation.png").stat().st_size > 0
    recorded = json.loads((out / "parameters.json").read_text())["parameters"]
    assert recorded["queries"] == queries and recorded["size"] == SIZE
    assert "2 queries segmented from 2 supports with repri (your images)" in (
        out / "summary.md").read_text()


def uploaded(*paths: Path) -> tuple[dict, ...]:
    """What a FileUpload box holds after ``paths`` are uploaded."""
    return tuple({"name": p.name, "type": "image", "size": p.stat().st_size,
                  "content": memoryview(p.read_bytes()), "last_modified": datetime.now(UTC)}
                 for p in paths)


def test_upload_panel_segments_uploaded_files(world, capsys):
    from fsstools.studies.uploads import UploadPanel

    panel = UploadPanel(load_backbone(world["checkpoint"]), size=SIZE)
    (img, mask), query = world["supports"][0], world["queries"][1]
    panel.images.value, panel.masks.value = uploaded(img), uploaded(mask)
    panel.run()  # no query yet: said in one line, nothing run
    assert panel.results == [] and "at least one query" in capsys.readouterr().out
    panel.queries.value = uploaded(query)
    panel.run()
    assert [r.name for r in panel.results] == ["q2.png"]
    assert panel.results[0].mask.shape == (97, 64)


# ----------------------------------------------------------------------------- phone photos


def test_turned_photos_are_segmented_and_written_as_shown(world, tmp_path, capsys):
    """A photo stored turned with an EXIF orientation tag (as phones write them): its mask
    drawn on the photo as shown is accepted and lands on the object, and the outputs have
    the size viewers show."""
    from fsstools.studies.uploads import UploadPanel
    from tests.fixtures import write_turned

    img, mask = picture(61, 90, 2)  # shown 61 high, 90 wide; stored 90 high, 61 wide
    write_turned(tmp_path / "s.jpg", img, 6)
    Image.fromarray(mask).save(tmp_path / "s.png")  # drawn on the photo as shown
    write_turned(tmp_path / "q.jpg", img, 8)
    shown, task = read_support(tmp_path / "s.jpg", tmp_path / "s.png")
    assert shown[task == 1].mean() > 2 * shown[task == 0].mean()  # the mask covers the object
    out = tmp_path / "out"
    argv = ["segment", "--checkpoint", str(world["checkpoint"]), "--size", str(SIZE),
            "--support", f"{tmp_path / 's.jpg'}:{tmp_path / 's.png'}",
            "--query", str(tmp_path / "q.jpg"), "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert Image.open(out / "q_mask.png").size == Image.open(out / "q_overlay.png").size == (90, 61)
    panel = UploadPanel(load_backbone(world["checkpoint"]), size=SIZE)
    panel.images.value, panel.masks.value, panel.queries.value = (
        uploaded(tmp_path / name) for name in ("s.jpg", "s.png", "q.jpg"))
    panel.run()
    assert panel.results[0].mask.shape == (61, 90), capsys.readouterr().out


# ----------------------------------------------------------------------------- keep_base


def test_keep_base_labels_the_base_classes_and_the_novel_one(world):
    from fsstools.data import splits
    from fsstools.inference import GFSS_METHODS, run_gfss
    from fsstools.own_images.keep_base import base_classifier

    results = segment(world["supports"][:2], world["queries"], world["checkpoint"], size=SIZE,
                      keep_base=True)
    classes = results[0].classes
    base = splits.base_classes("synth", 0)
    assert [c.kind for c in classes] == ["background"] + ["base"] * 15 + ["novel"]
    assert [c.class_id for c in classes[1:-1]] == base  # the checkpoint's classes, its order
    assert [c.name for c in classes[1:-1]] == [splits.class_name("synth", c) for c in base]
    assert len({c.colour for c in classes}) == len(classes)
    found = set()
    for r, shape in zip(results, [(173, 211), (97, 64)], strict=True):
        assert r.labels.shape == r.mask.shape == r.probs.shape == shape
        np.testing.assert_array_equal(r.mask, r.labels == 16)
        assert r.logits.shape[0] == 17 and "kd" in r.traces and r.iterations == 100
        found |= set(np.unique(r.labels).tolist())
    assert 16 in found and found & set(range(1, 16)), found  # novel and base classes
    # the same numbers as DIaM run on the same (unnormalised) features
    backbone = load_backbone(world["checkpoint"])
    pairs = [read_support(i, m) for i, m in world["supports"][:2]]
    shots = extract(backbone.model, [p[0] for p in pairs], SIZE, [p[1] for p in pairs],
                    normalize=False)
    sf, sm = support_tensors(shots)
    q = extract(backbone.model, [np.array(Image.open(world["queries"][0]).convert("RGB"))],
                SIZE, normalize=False)
    clf = base_classifier(backbone.model, backbone.kind, backbone.path)
    labels = torch.where(sm == 1, 16, sm)
    expected = run_gfss(GFSS_METHODS["diam"], clf.weight, clf.bias, sf[None], labels[None],
                        q.feats, q.valid, 1)
    torch.testing.assert_close(results[0].logits, expected.logits[0])
    # the binary default is untouched by the option
    (binary,) = segment(world["supports"][:2], world["queries"][:1], backbone, size=SIZE)
    assert binary.labels is None and binary.classes == () and binary.logits.ndim == 2


def test_keep_base_in_the_upload_panel_and_its_figure(world, capsys):
    from fsstools.plots import segment_panel
    from fsstools.studies.uploads import UploadPanel

    panel = UploadPanel(load_backbone(world["checkpoint"]), size=SIZE, keep_base=True)
    (img, mask), query = world["supports"][0], world["queries"][1]
    panel.images.value, panel.masks.value, panel.queries.value = (
        uploaded(img), uploaded(mask), uploaded(query))
    panel.run()
    (r,) = panel.results
    assert r.labels.shape == (97, 64) and r.classes[-1].kind == "novel", capsys.readouterr().out
    fig = segment_panel(panel.results)
    assert "distillation to the base model" in [ax.get_title() for ax in fig.axes]


def test_keep_base_command_writes_label_maps_and_the_classes(world, tmp_path, capsys):
    out = tmp_path / "out"
    s = world["supports"]
    argv = ["segment", "--checkpoint", str(world["checkpoint"]), "--size", str(SIZE),
            "--support", f"{s[0][0]}:{s[0][1]}", "--query-dir", str(world["queries"][0].parent),
            "--keep-base", "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    classes = pd.read_csv(out / "classes.csv")
    assert list(classes["index"]) == list(range(17))
    assert list(classes["kind"].iloc[[0, 1, -1]]) == ["background", "base", "novel"]
    rows = list(csv.DictReader((out / "results.csv").open()))
    for row, size in zip(rows, [(211, 173), (64, 97)], strict=True):
        labels = Image.open(out / row["labels"])
        assert labels.mode == "P" and labels.size == Image.open(out / row["overlay"]).size == size
        values = np.unique(np.array(labels)).tolist()
        assert set(values) <= set(range(17))
        assert row["classes"] == "; ".join(classes["name"].iloc[values])


def test_keep_base_refuses_a_model_without_base_classifier(world, tmp_path, capsys):
    trunk = DilatedResNet(TRUNKS["small"])
    torch.save({k: v for k, v in trunk.state_dict().items() if "num_batches" not in k},
               tmp_path / "in.pth")
    s, q = world["supports"][0], world["queries"][0]
    with pytest.raises(ConfigError, match="ImageNet trunk, with no classifier of base classes"):
        segment([s], [q], tmp_path / "in.pth", size=SIZE, keep_base=True)
    argv = ["segment", "--checkpoint", str(tmp_path / "in.pth"), "--size", str(SIZE),
            "--support", f"{s[0]}:{s[1]}", "--query", str(q), "--keep-base",
            "--out", str(tmp_path / "out"), "--no-progress"]
    assert cli.main(argv) == 2
    assert "keep_base" in capsys.readouterr().err and not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="labels the base classes too"):
        segment([s], [q], world["checkpoint"], method="diam", size=SIZE)
    with pytest.raises(ConfigError, match="method 'repri' with keep_base: use a generalized"):
        segment([s], [q], world["checkpoint"], method=METHODS["repri"], keep_base=True)
    with pytest.raises(ConfigError, match="reads the query's labels"):
        segment([s], [q], world["checkpoint"], method="diam_upperbound", keep_base=True)
