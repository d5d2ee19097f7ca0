"""The pieces of RePRI inference: classifier init, loss terms and their gradients, the prior."""

from __future__ import annotations

import math

import pytest
import torch

from fsstools.constants import EPS
from fsstools.inference import classifier as clf
from fsstools.inference import losses
from fsstools.inference.prior import oracle_prior, perturb_prior, query_valid_mask
from fsstools.inference.prototype import masked_average
from tests.reference_repri import reference_cosine_scores, total_loss

DT = torch.float64


def test_prototype_is_masked_mean_of_normalised_features():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 3, 5, generator=g, dtype=DT)  # (B, C, N)
    fg = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 1, 1, 0]], dtype=torch.bool)
    unit = feats / feats.norm(dim=1, keepdim=True)
    expected = torch.stack([(unit[0, :, 0] + unit[0, :, 2]) / 2,
                            (unit[1, :, 1] + unit[1, :, 2] + unit[1, :, 3]) / 3])
    got = masked_average(feats, fg, clf.inverse_norms(feats))
    assert torch.allclose(got, expected)
    assert torch.allclose(masked_average(unit, fg), expected)
    blocks = [feats[:, :, :2], feats[:, :, 2:]]  # e.g. one block per shot
    got = masked_average(blocks, [fg[:, :2], fg[:, 2:]], [clf.inverse_norms(f) for f in blocks])
    assert torch.allclose(got, expected)
    grid = masked_average(unit.reshape(2, 3, 1, 5), fg.reshape(2, 1, 5).float())  # (B, C, h, w)
    assert torch.allclose(grid, expected)


def test_masked_average_of_an_empty_mask_is_zero():
    feats = torch.ones(3, 2, 4, dtype=DT)
    fg = torch.ones(3, 4, dtype=torch.bool)
    fg[1] = False
    out = masked_average(feats, fg)
    assert torch.equal(out[1], torch.zeros(2, dtype=DT)) and torch.equal(out[0], feats[0, :, 0])


def test_cosine_scores_and_bias_init_by_hand():
    feats = torch.tensor([[[3.0, 0.0, 1.0], [4.0, 2.0, 0.0]]], dtype=DT)  # (1, C=2, N=3)
    w = torch.tensor([[0.0, 2.0]], dtype=DT)
    scores = clf.cosine_scores(feats, w, 20.0, clf.inverse_norms(feats))
    # cosines: 4/5, 1, 0
    assert torch.allclose(scores, torch.tensor([[16.0, 20.0, 0.0]], dtype=DT), atol=1e-8)
    ref = reference_cosine_scores(feats, w, 20.0)
    assert torch.allclose(ref, scores, atol=1e-8)
    valid = torch.tensor([[True, True, False]])
    assert clf.init_bias(scores, valid).item() == pytest.approx(18.0)
    assert clf.init_bias(scores).item() == pytest.approx(12.0)


def test_cosine_step_is_a_gradient_step_with_autograd_gradient():
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(2, 6, 9, generator=g, dtype=DT)
    inv = clf.inverse_norms(feats)
    w = torch.randn(2, 6, generator=g, dtype=DT, requires_grad=True)
    upstream = torch.randn(2, 9, generator=g, dtype=DT)
    (clf.cosine_scores(feats, w, 20.0, inv) * upstream).sum().backward()
    h = clf.features_times(feats, upstream, inv)
    scale, norm = clf.scale_and_norm(w.detach(), 20.0)
    got = clf.cosine_step(w.detach(), h, scale, norm, lr=0.1)
    assert torch.allclose(got, w.detach() - 0.1 * w.grad, rtol=1e-10, atol=1e-12)
    zero = clf.cosine_step(torch.zeros(2, 6, dtype=DT), h, scale, torch.zeros(2, 1, dtype=DT), 0.1)
    assert torch.isfinite(zero).all()  # a zero prototype: no 0/0


def test_fg_probs_upsamples_then_sigmoid():
    logits = torch.tensor([[[0.0, 2.0], [-2.0, 0.0]]])
    probs = clf.fg_probs(logits, (3, 3))
    assert probs.shape == (1, 3, 3)
    assert probs[0, 0, 2].item() == pytest.approx(1 / (1 + math.exp(-2)))  # corner kept
    assert probs[0, 1, 1].item() == pytest.approx(0.5)  # centre: mean of the 4 logits = 0


# hand-worked loss values on two pixels, p = (0.8, 0.4)
P = torch.tensor([[0.8, 0.4]], dtype=DT)
V = losses.pixel_weights(torch.tensor([[True, True]]), DT)


def test_support_ce_by_hand():
    labels = torch.tensor([[1, 0]])
    expected = -(math.log(0.8 + EPS) + math.log(0.6 + EPS)) / 2
    assert losses.support_ce(P, labels, V).item() == pytest.approx(expected)


def test_support_ce_ignores_zero_weight_pixels():
    p = torch.tensor([[0.8, 0.4, 0.01]], dtype=DT)
    w = losses.pixel_weights(torch.tensor([[True, True, False]]), DT)
    labels = torch.tensor([[1, 0, 1]])
    assert losses.support_ce(p, labels, w).item() == pytest.approx(
        losses.support_ce(P, labels[:, :2], V).item())


def test_entropy_by_hand():
    def h(p):
        return -(p * math.log(p + EPS) + (1 - p) * math.log(1 - p + EPS))

    assert losses.query_entropy(P, V).item() == pytest.approx((h(0.8) + h(0.4)) / 2)


def test_kl_by_hand():
    pi = torch.tensor([0.3], dtype=DT)
    m = 0.6  # mean of 0.8 and 0.4
    expected = m * math.log(m / (0.3 + EPS)) + (1 - m) * math.log((1 - m) / (0.7 + EPS))
    assert losses.prior_kl(P, V, pi).item() == pytest.approx(expected)
    assert losses.fg_share(P, V).item() == pytest.approx(m)
    assert losses.prior_kl(P, V, torch.tensor([0.6], dtype=DT)).item() == pytest.approx(0, abs=1e-9)


def test_total_loss_weights_the_terms():
    labels = torch.tensor([[1, 0]])
    pi = torch.tensor([0.3], dtype=DT)
    total = total_loss(P, labels, V, P, V, pi, 1.0, 0.5, 2.0)
    expected = (losses.support_ce(P, labels, V) + 0.5 * losses.query_entropy(P, V)
                + 2.0 * losses.prior_kl(P, V, pi))
    assert torch.allclose(total, expected)


@pytest.mark.parametrize("z_scale", [1.0, 30.0])  # 30: probabilities saturate
@pytest.mark.parametrize("nq", [7, 0, 3])  # a query block, a support block, both
def test_closed_form_gradient_matches_autograd(z_scale, nq):
    """LogitGrad on a block of nq query pixels then support pixels, every weighting of the
    query terms, against autograd of the summed terms."""
    g = torch.Generator().manual_seed(2)
    z = (torch.randn(2, 7, generator=g, dtype=DT) * z_scale).requires_grad_(True)
    valid = torch.rand(2, 7, generator=g) > 0.3
    valid[:, 0] = valid[:, -1] = True
    def weights(v):
        return losses.pixel_weights(v, DT) if v.shape[1] else v.to(DT)

    w_q, w_s = weights(valid[:, :nq]), weights(valid[:, nq:])
    labels = torch.rand(2, 7 - nq, generator=g) > 0.5
    pi = torch.tensor([0.2, 0.7], dtype=DT)
    p = torch.sigmoid(z)
    pq, ps = p[:, :nq], p[:, nq:]
    kernel = losses.LogitGrad(nq, w_q if nq else None, labels, w_s, 0.3)
    probs = kernel.probabilities(z.detach())  # (B, 2, N)
    assert torch.equal(probs[:, 0], p.detach()) and torch.equal(probs[:, 1], 1 - p.detach())
    shares = kernel.shares() if nq else None
    if nq:
        assert torch.allclose(shares[:, 0], losses.fg_share(pq, w_q))
        assert torch.allclose(shares.sum(1), torch.ones(2, dtype=DT))
    for ent_w, kl_w in [(0.5, 0.0), (0.0, 1.5), (0.5, 1.5), (0.0, 0.0)]:
        total = 0.3 * losses.support_ce(ps, labels, w_s) if nq < 7 else 0 * z.sum()
        if nq:
            total = total + ent_w * losses.query_entropy(pq, w_q) + kl_w * losses.prior_kl(pq, w_q, pi)
        (auto,) = torch.autograd.grad(total.sum(), z, retain_graph=True)
        got = kernel.grad(shares, losses.prior_slope(pi, kl_w), ent_w, kl_w)
        assert torch.allclose(got, auto, rtol=1e-9, atol=1e-12), (ent_w, kl_w)


def test_pixel_weights_rejects_empty_task():
    with pytest.raises(ValueError, match="task 1"):
        losses.pixel_weights(torch.tensor([[True], [False]]))


def test_oracle_prior_is_the_true_share_of_the_valid_pixels():
    labels = torch.tensor([[1, 1, 0, 0, 255, 1], [0, 0, 0, 1, 1, 1]])
    valid = torch.tensor([[True] * 5 + [False], [True] * 6])
    # the valid boundary pixel (255) straddles the contour: it counts half
    assert oracle_prior(labels, valid).tolist() == [pytest.approx(2.5 / 5), pytest.approx(0.5)]
    # reference validity drops 255 pixels: the share of the labelled ones
    labelled = valid & (labels != 255)
    assert oracle_prior(labels, labelled).tolist() == [pytest.approx(0.5), pytest.approx(0.5)]
    with pytest.raises(ValueError, match="no valid pixel"):
        oracle_prior(labels, torch.zeros_like(valid))


def test_support_threshold_separates_the_supports_own_foreground():
    scores = torch.tensor([[5.0, 4.0, 3.0, 1.0, 0.0, 9.0], [2.0, 1.0, 0.5, 0.2, 0.1, 0.0]])
    fg = torch.tensor([[1, 1, 0, 0, 0, 1], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    valid = torch.tensor([[True] * 5 + [False], [True] * 6])  # the 9.0 pixel is ignored
    b = clf.support_threshold(scores, fg, valid)
    assert b[0].item() == pytest.approx(3.5)  # between the last foreground (4) and 3
    assert b[1].item() == pytest.approx(-1.0)  # all foreground: one unit below the lowest
    assert bool(((scores[0, :5] > b[0]) == fg[0, :5]).all())


def test_delta_changes_the_prior_by_exactly_delta_and_not_its_input():
    pi = torch.tensor([0.2, 0.5, 0.9], dtype=DT)
    before = pi.clone()
    out = perturb_prior(pi, 0.1)
    assert torch.equal(pi, before)  # the reference's aliasing bug would change pi itself
    assert torch.allclose(out[:2] / pi[:2] - 1, torch.tensor([0.1, 0.1], dtype=DT))
    assert out[2].item() == pytest.approx(0.99)
    assert perturb_prior(pi, 0.5)[2].item() == 1.0  # clipped
    assert torch.allclose(perturb_prior(pi, -0.5), pi / 2)


def test_query_valid_mask_clean_and_reference():
    qmask = torch.tensor([[[0, 255], [1, 255]]])
    padding = torch.tensor([[[True, True], [True, False]]])
    assert query_valid_mask(qmask, padding).tolist() == [[[True, True], [True, False]]]
    assert query_valid_mask(qmask, padding, reference=True).tolist() == [[[True, False],
                                                                         [True, False]]]
    with pytest.raises(ValueError):
        query_valid_mask(None, padding, reference=True)
