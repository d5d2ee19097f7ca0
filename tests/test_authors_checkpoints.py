"""The RePRI authors' checkpoint archive (one best.pth per fold where their test script reads
it) and ImageNet weights whose stem disagrees with ``model.deep_stem``.

The fake archive (``tests.fixtures.write_authors_file``) holds PSPNets of the project's
builder with ResNet-50/101 depths and tiny widths, under the key names of the authors' code,
in their file layout.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from fsstools.errors import ConfigError, DataError, MissingError
from fsstools.models import ModelConfig, build_model
from fsstools.models.backbones import TRUNKS, DilatedResNet, load_imagenet_weights
from fsstools.models.checkpoints import authors_checkpoints, load_model
from tests.fixtures import write_authors_file


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("repri")
    for fold in range(4):
        write_authors_file(root, "pascal", fold)
    write_authors_file(root, "pascal", 0, n_classes=21, smoothing=False)  # not what they test
    write_authors_file(root, "coco", 2, n_classes=61)
    return root


def test_the_archive_gives_one_checked_file_per_fold(archive):
    folds = authors_checkpoints(archive)
    assert sorted(folds) == [0, 1, 2, 3]
    assert all(f"pascal/split={f}/model/pspnet_resnet50/smoothing=True" in str(p)
               for f, p in folds.items())
    assert authors_checkpoints(archive / "model_ckpt") == folds
    assert authors_checkpoints(archive / "model_ckpt" / "pascal") == folds
    assert list(authors_checkpoints(archive, "coco")) == [2]


def test_an_authors_file_loads_as_a_pspnet(archive):
    model = load_model(authors_checkpoints(archive)[1])
    assert model.n_classes == 16 and model.backbone.deep_stem
    assert len(model.backbone.layer3) == 6  # ResNet-50 depths


def test_a_classifier_of_another_benchmark_is_refused(tmp_path):
    write_authors_file(tmp_path, "pascal", 0)
    bad = write_authors_file(tmp_path, "pascal", 3, n_classes=21)
    with pytest.raises(DataError, match=re.escape(f"{bad} has a classifier with 21 outputs")):
        authors_checkpoints(tmp_path)
    coco = write_authors_file(tmp_path, "coco", 0, n_classes=16)
    with pytest.raises(DataError, match=r"16 outputs, but this benchmark's base models have 61"):
        authors_checkpoints(tmp_path, "coco")
    assert coco.is_file()


def test_a_trunk_under_the_wrong_name_is_refused(tmp_path):
    moved = write_authors_file(tmp_path, "pascal", 1, arch="resnet101", folder_arch="resnet50")
    with pytest.raises(DataError, match=re.escape(f"{moved} holds a resnet101 trunk")):
        authors_checkpoints(tmp_path)


def test_a_missing_archive_says_what_is_there(archive, tmp_path):
    with pytest.raises(MissingError, match="models there: coco/pspnet_resnet50, "
                                           "pascal/pspnet_resnet50"):
        authors_checkpoints(archive, "pascal", "resnet101")
    with pytest.raises(MissingError, match="models there: none"):
        authors_checkpoints(tmp_path)


def test_a_truncated_authors_file_is_a_user_error(tmp_path):
    path = write_authors_file(tmp_path, "pascal", 0)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match=re.escape(f"checkpoint {path}")):
        authors_checkpoints(tmp_path)


# ----------------------------------------------------------------------------- deep stem


def imagenet_file(tmp_path: Path, deep_stem: bool) -> Path:
    """An ImageNet state dict in the key layout of its stem (with an fc layer)."""
    state = dict(DilatedResNet(TRUNKS["small"], deep_stem=deep_stem).state_dict())
    state["fc.weight"] = torch.zeros(10, 128)
    path = tmp_path / ("resnet_v2.pth" if deep_stem else "resnet-tv.pth")
    torch.save(state, path)
    return path


@pytest.mark.parametrize("file_deep", [True, False])
def test_weights_and_deep_stem_setting_must_agree(tmp_path, file_deep):
    path = imagenet_file(tmp_path, file_deep)
    cfg = ModelConfig(arch="small", deep_stem=not file_deep, pretrained=str(path))
    with pytest.raises(ConfigError) as err:
        build_model(cfg, 16)
    message = str(err.value)
    assert str(path) in message and err.value.key == "model.deep_stem"
    assert f"model.deep_stem is {str(not file_deep).lower()}" in message
    assert f"set model.deep_stem: {str(file_deep).lower()}" in message
    assert ("deep stem" if file_deep else "7x7 stem") in message


def test_deep_stem_weights_load_into_a_deep_stem_trunk(tmp_path):
    path = imagenet_file(tmp_path, deep_stem=True)
    trunk = DilatedResNet(TRUNKS["small"], deep_stem=True)
    report = load_imagenet_weights(trunk, path)
    assert report.missing == report.unexpected == report.mismatched == ()
    assert torch.equal(trunk.conv3.weight, torch.load(path)["conv3.weight"])


def test_an_unreadable_weights_file_is_a_user_error(tmp_path):
    path = tmp_path / "resnet50_v2.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match=re.escape(f"ImageNet weights file {path} cannot be read")):
        load_imagenet_weights(DilatedResNet(TRUNKS["small"]), path)
