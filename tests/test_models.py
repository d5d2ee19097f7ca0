import re

import pytest
import torch
import torchvision

from fsstools.models import (
    DilatedResNet,
    ModelConfig,
    PSPNet,
    build_model,
    checkpoint_meta,
    feature_size,
    load_model,
)
from fsstools.models.backbones import TRUNKS
from fsstools.models.checkpoints import CHECKPOINT_FORMAT, convert_reference_state_dict

TINY = ModelConfig(arch="small", widths=(8, 8, 16, 16), stem_width=8, bottleneck_dim=16)


def test_logits_and_features_shapes():
    net = PSPNet(TINY, n_classes=16).eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        logits, feats = net(x), net.extract_features(x)
    assert logits.shape == (2, 16, 64, 48)
    assert feats.shape == (2, 16, 8, 6)


def test_feature_grid_is_53_for_417():
    assert feature_size(417) == 53 and feature_size(128) == 16
    net = PSPNet(TINY, n_classes=3).eval()
    with torch.no_grad():
        feats = net.extract_features(torch.zeros(1, 3, 417, 417))
    assert feats.shape[-2:] == (53, 53)


@pytest.mark.parametrize("arch", ["resnet50", "resnet101"])
def test_resnet_feature_map_is_53x53_at_417(arch):
    # Meta tensors run the real module code for shapes only: no weights, no arithmetic.
    with torch.device("meta"):
        net = PSPNet(ModelConfig(arch=arch, deep_stem=True), n_classes=16).eval()
        x = torch.zeros(1, 3, 417, 417)
        assert net.extract_features(x).shape == (1, 512, 53, 53)
        assert net(x).shape == (1, 16, 417, 417)


def test_deep_stem_and_dilation_follow_the_reference():
    with torch.device("meta"):
        trunk = DilatedResNet(TRUNKS["resnet50"], deep_stem=True)
    assert [tuple(trunk.conv1.weight.shape), tuple(trunk.conv3.weight.shape)] == [
        (64, 3, 3, 3), (128, 64, 3, 3)]  # fmt: skip
    assert trunk.layer1[0].conv1.in_channels == 128
    # Every block of a dilated stage is dilated (not only the later ones, as torchvision does).
    assert {b.conv2.dilation for b in trunk.layer3} == {(2, 2)}
    assert {b.conv2.dilation for b in trunk.layer4} == {(4, 4)}
    strides = {m.stride for n, m in trunk.named_modules()
               if isinstance(m, torch.nn.Conv2d) and re.match(r"layer[34]", n)}
    assert strides == {(1, 1)}
    assert trunk.out_channels == 2048


@pytest.mark.slow
def test_resnet50_forward_at_small_input():
    net = build_model(ModelConfig(arch="resnet50"), n_classes=16).eval()
    with torch.no_grad():
        feats = net.extract_features(torch.randn(1, 3, 65, 65))
    assert feats.shape == (1, 512, 9, 9) and torch.isfinite(feats).all()


def test_torchvision_imagenet_weights_load(tmp_path):
    tv = torchvision.models.resnet18()
    state = {f"module.{k}": v for k, v in tv.state_dict().items()}
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    net = build_model(ModelConfig(arch="resnet18", pretrained=str(path), bottleneck_dim=8), 4)
    ours = net.backbone.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in tv.state_dict().items() if k in ours)
    assert set(ours) == {k for k in tv.state_dict() if not k.startswith("fc.")}


def test_imagenet_weights_report_shape_mismatch(tmp_path, caplog):
    from fsstools.models.backbones import load_imagenet_weights

    trunk = DilatedResNet(TRUNKS["small"])
    state = trunk.state_dict()
    state["conv1.weight"] = torch.zeros(5, 3, 7, 7)  # wrong width: must be skipped, not loaded
    path = tmp_path / "w.pth"
    torch.save({"state_dict": state}, path)
    fresh = DilatedResNet(TRUNKS["small"])
    before = fresh.conv1.weight.clone()
    report = load_imagenet_weights(fresh, path)
    assert report.mismatched == ("conv1.weight",)
    assert torch.equal(fresh.conv1.weight, before)
    assert torch.equal(fresh.layer4[0].conv1.weight, trunk.layer4[0].conv1.weight)
    assert "shape mismatches" in caplog.text


def test_missing_imagenet_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "resnet50.pth"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        build_model(ModelConfig(arch="small", pretrained=str(missing)), 3)


def _reference_layout(net: PSPNet) -> dict[str, torch.Tensor]:
    """Our weights under the reference repository's names, spelled out independently."""
    stem = {"conv1": "0", "bn1": "1", "conv2": "3", "bn2": "4", "conv3": "6", "bn3": "7"}
    out = {}
    for key, value in net.state_dict().items():
        parts = key.split(".")
        if parts[0] == "backbone" and parts[1] in stem:
            ref = f"layer0.{stem[parts[1]]}.{'.'.join(parts[2:])}"
        elif parts[0] == "backbone":
            ref = ".".join(parts[1:])
        elif parts[0] == "ppm":
            idx = {"conv": "1", "bn": "2"}[parts[3]]
            ref = f"ppm.features.{parts[2]}.{idx}.{'.'.join(parts[4:])}"
        else:
            ref = key
        out[f"module.{ref}"] = value.clone()
    return out


def test_reference_checkpoint_loads_with_its_layout(tmp_path):
    cfg = ModelConfig(arch="small", deep_stem=True, bottleneck_dim=24, widths=(8, 16, 16, 32))
    net = PSPNet(cfg, n_classes=16)
    for p in net.parameters():
        torch.nn.init.normal_(p)
    state = _reference_layout(net)
    assert "module.layer0.6.weight" in state and "module.ppm.features.3.1.weight" in state
    assert "module.bottleneck.0.weight" in state and "module.classifier.bias" in state
    path = tmp_path / "best.pth"
    torch.save({"epoch": 3, "state_dict": state, "optimizer": {}}, path)
    loaded = load_model(path)
    assert not loaded.training
    assert loaded.n_classes == 16 and loaded.feature_dim == 24
    assert loaded.backbone.deep_stem
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_reference_resnet50_keys_map_onto_ours():
    from fsstools.models.checkpoints import infer_reference_config

    with torch.device("meta"):
        net = PSPNet(ModelConfig(arch="resnet50", deep_stem=True), n_classes=16)
    ref = _reference_layout(net)
    assert ref["module.layer0.0.weight"].shape == (64, 3, 3, 3)
    assert ref["module.ppm.features.0.1.weight"].shape == (512, 2048, 1, 1)
    assert ref["module.bottleneck.0.weight"].shape == (512, 4096, 3, 3)
    converted = convert_reference_state_dict(ref)
    assert set(converted) == set(net.state_dict())
    cfg, n_classes = infer_reference_config(ref)
    assert (cfg.arch, cfg.deep_stem, cfg.bottleneck_dim, n_classes) == ("resnet50", True, 512, 16)


def test_unknown_reference_keys_are_rejected():
    with pytest.raises(ValueError, match="down_query"):
        convert_reference_state_dict({"module.down_query.0.weight": torch.zeros(1)})


def test_own_checkpoint_round_trip(tmp_path):
    net = PSPNet(TINY, n_classes=5).eval()
    path = tmp_path / "best.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model": net.state_dict(),
                "model_config": {"arch": "small", "widths": [8, 8, 16, 16], "stem_width": 8,
                                 "bottleneck_dim": 16, "pretrained": "/not/needed.pth"},
                "n_classes": 5, "epoch": 2, "metrics": {"val_miou": 0.5}}, path)
    loaded = load_model(path)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    assert checkpoint_meta(path)["metrics"] == {"val_miou": 0.5}
