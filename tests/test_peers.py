"""The peers' own inference on cached features (fsstools.inference.peers)."""

import pytest
import torch
import torch.nn.functional as F

from fsstools.inference import fg_probs
from fsstools.inference.peers import PANET_SCALE, panet_logits, pfenet_logits
from fsstools.models.panet import PANet, to_grid
from fsstools.models.pfenet import PFENet, PFENetConfig
from tests.tiny import TINY_MODEL


def random_task(b: int, s: int, c: int = 8, grid: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sf = torch.randn(b, s, c, grid, grid, generator=g)
    qf = torch.randn(b, c, grid, grid, generator=g)
    sm = torch.zeros(b, s, grid, grid, dtype=torch.long)
    sm[..., : grid // 2, : grid // 2] = 1
    sm[..., -1, :] = 255
    return sf, sm, qf


@pytest.mark.parametrize("shots", [1, 5])
def test_panet_logits_shapes_and_probabilities(shots):
    sf, sm, qf = random_task(3, shots)
    logits = panet_logits(sf, sm, qf)
    assert logits.shape == (3, 6, 6) and not logits.requires_grad
    probs = fg_probs(logits, (41, 41))
    assert probs.shape == (3, 41, 41) and float(probs.min()) >= 0 and float(probs.max()) <= 1
    assert float(logits.abs().max()) <= 2 * PANET_SCALE + 1e-4  # a difference of two cosines


def test_panet_logits_by_hand():
    # Channel 0 marks foreground support pixels, channel 1 background ones.
    sf = torch.zeros(1, 2, 4, 2, 2)
    sm = torch.tensor([[[[1, 0], [0, 255]], [[1, 1], [0, 0]]]])  # (1, 2, 2, 2)
    sf[0, :, 0][sm[0] == 1] = 1.0
    sf[0, :, 1][sm[0] == 0] = 1.0
    sf[0, 0, 3, 1, 1] = 5.0  # a 255 pixel: must not enter any prototype
    qf = torch.zeros(1, 4, 2, 2)
    qf[0, 0, 0, 0] = 1.0  # like the foreground prototype
    qf[0, 1, 0, 1] = 1.0  # like the background prototype
    qf[0, 2, 1, 0] = 1.0  # like neither
    qf[0, 0, 1, 1] = qf[0, 1, 1, 1] = 1.0  # halfway
    logits = panet_logits(sf, sm, qf)[0]
    assert logits[0, 0] == pytest.approx(PANET_SCALE)
    assert logits[0, 1] == pytest.approx(-PANET_SCALE)
    assert logits[1, 0] == pytest.approx(0.0) and logits[1, 1] == pytest.approx(0.0, abs=1e-5)


def test_panet_averages_per_shot_prototypes():
    """K shots average the per-shot prototypes (a shot with a small object weighs as much as
    one with a large object), not the pooled pixels."""
    c = 3
    sf = torch.zeros(1, 2, c, 2, 2)
    sm = torch.zeros(1, 2, 2, 2, dtype=torch.long)
    sm[0, 0, 0, 0] = 1  # shot 0: one foreground pixel, feature e0
    sf[0, 0, 0, 0, 0] = 1.0
    sm[0, 1] = 1  # shot 1: four foreground pixels, feature e1; no background
    sf[0, 1, 1] = 1.0
    sf[0, 0, 2][sm[0, 0] == 0] = 1.0  # shot 0's background, e2
    qf = torch.zeros(1, c, 1, 2)
    qf[0, 0, 0, 0] = 1.0  # e0
    qf[0, 1, 0, 1] = 1.0  # e1
    logits = panet_logits(sf, sm, qf)[0, 0]
    # Per-shot average: p_fg = (e0 + e1) / 2, so e0 and e1 score alike; pooling the five
    # pixels would favour e1 (four pixels) over e0 (one).
    assert logits[0] == pytest.approx(float(logits[1]), abs=1e-5)


@pytest.mark.parametrize("shots", [1, 3])
def test_panet_logits_match_the_models_own_prediction(shots):
    torch.manual_seed(0)
    model = PANet(TINY_MODEL).eval()
    g = torch.Generator().manual_seed(1)
    s_imgs, q_img = torch.randn(2, shots, 3, 32, 32, generator=g), torch.randn(2, 3, 32, 32, generator=g)
    s_masks = torch.zeros(2, shots, 32, 32, dtype=torch.long)
    s_masks[..., 4:20, 8:24] = 1
    with torch.no_grad():
        own = model(s_imgs, s_masks, q_img)["logits"]  # (2, 2, 4, 4)
        # What the feature cache stores: normalised features, masks on the grid.
        sf = F.normalize(model.extract_features(s_imgs.flatten(0, 1)), dim=1).unflatten(0, (2, shots))
        qf = F.normalize(model.extract_features(q_img), dim=1)
    logits = panet_logits(sf, to_grid(s_masks, (4, 4)), qf, model.cfg.scale)
    assert torch.allclose(logits, own[:, 1] - own[:, 0], atol=1e-4)
    assert torch.allclose(torch.sigmoid(logits), own.softmax(dim=1)[:, 1], atol=1e-5)


@pytest.mark.parametrize("shots", [1, 5])
def test_pfenet_logits_shapes_and_chunks(shots):
    torch.manual_seed(0)
    model = PFENet(TINY_MODEL, PFENetConfig(reduce_dim=8, bins=(4, 2)))
    images = torch.randn(3 * (shots + 1), 3, 32, 32)
    feats = F.normalize(model.extract_features(images), dim=1)  # as the feature cache stores
    sf, qf = feats[: 3 * shots].unflatten(0, (3, shots)), feats[3 * shots:]
    sm = torch.zeros(3, shots, 4, 4, dtype=torch.long)
    sm[..., 1:3, 1:3] = 1
    logits = pfenet_logits(model, sf, sm, qf)
    assert logits.shape == (3, 4, 4) and not logits.requires_grad and not model.training
    with torch.no_grad():
        own = model(sf, sm, qf)["logits"]
    assert torch.allclose(logits, own[:, 1] - own[:, 0], atol=1e-5)
    assert torch.allclose(pfenet_logits(model, sf, sm, qf, chunk_size=1), logits, atol=1e-5)
    assert fg_probs(logits, (32, 32)).shape == (3, 32, 32)


def test_pfenet_features_are_unit_vectors_so_the_cache_keeps_them():
    model = PFENet(TINY_MODEL, PFENetConfig(reduce_dim=8, bins=(4, 2)))
    feats = model.extract_features(torch.randn(2, 3, 32, 32))
    assert torch.allclose(feats.norm(dim=1), torch.ones(2, 4, 4), atol=1e-5)
    assert torch.allclose(F.normalize(feats, dim=1), feats, atol=1e-6)
