"""IoUMeter, FB-IoU, bootstrap intervals and paired differences against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from fsstools.metrics import (
    IoUMeter,
    bootstrap_ci,
    bootstrap_draws,
    crossed_draws,
    crossed_point_scores,
    paired_difference,
    seed_picks,
    stratum_seed,
)

# Episode A (class 3), 2x3, pixel (0, 2) ignored:
#   pred    target
#   1 1 0   1 0 255
#   1 0 0   0 1 0
# fg: pred {(0,0), (0,1), (1,0)}, target {(0,0), (1,1)}         -> I 1, U 4
# bg: pred {(1,1), (1,2)},        target {(0,1), (1,0), (1,2)}  -> I 1, U 4
PRED_A = torch.tensor([[1, 1, 0], [1, 0, 0]])
TGT_A = torch.tensor([[1, 0, 255], [0, 1, 0]])


def meter_with(*episodes):
    m = IoUMeter()
    for pred, tgt, cls in episodes:
        m.update(pred.unsqueeze(0), tgt.unsqueeze(0), torch.tensor([cls]))
    return m


def test_hand_computed_iou_with_ignored_pixels():
    r = meter_with((PRED_A, TGT_A, 3)).compute()
    assert r["class_iou"] == {3: pytest.approx(1 / 4)}
    assert r["fg_iou"] == pytest.approx(1 / 4) and r["bg_iou"] == pytest.approx(1 / 4)
    assert r["fbiou"] == pytest.approx(1 / 4)
    # the ignored pixel predicted foreground changes nothing
    pred = PRED_A.clone()
    pred[0, 2] = 1
    assert meter_with((pred, TGT_A, 3)).compute()["class_iou"][3] == pytest.approx(1 / 4)


def test_class_iou_sums_over_episodes_before_dividing():
    perfect = (TGT_A.clamp(max=1) * (TGT_A != 255), TGT_A, 3)  # I = U = 2
    r = meter_with((PRED_A, TGT_A, 3), perfect, (PRED_A, TGT_A, 5)).compute()
    assert r["class_iou"][3] == pytest.approx((1 + 2) / (4 + 2))  # not mean(1/4, 1)
    assert r["miou"] == pytest.approx(((3 / 6) + (1 / 4)) / 2)
    assert r["n_episodes"] == 3


def test_empty_foreground_union_skips_the_class():
    empty = torch.zeros(2, 3, dtype=torch.long)  # nothing predicted, nothing labelled
    r = meter_with((empty, empty, 7), (PRED_A, TGT_A, 3)).compute()
    assert 7 not in r["class_iou"] and r["miou"] == pytest.approx(1 / 4)
    # the empty episode still counts for the background: bg I = U = 6 more pixels
    assert r["bg_iou"] == pytest.approx((1 + 6) / (4 + 6))
    # an empty episode of a class that has others adds nothing to that class
    r2 = meter_with((empty, empty, 3), (PRED_A, TGT_A, 3)).compute()
    assert r2["class_iou"][3] == pytest.approx(1 / 4)


def test_bool_and_batched_updates_agree():
    g = torch.Generator().manual_seed(0)
    tgt = torch.randint(0, 2, (6, 5, 5), generator=g)
    tgt[:, 0] = 255
    pred = torch.rand(6, 5, 5, generator=g) > 0.5
    cls = torch.tensor([1, 2, 1, 3, 2, 1])
    a = IoUMeter()
    a.update(pred, tgt, cls)
    b = IoUMeter()
    for i in range(6):
        b.update(pred[i:i + 1].long(), tgt[i:i + 1], [int(cls[i])])
    assert a.compute() == b.compute()
    assert torch.equal(a.records, b.records) and len(a) == 6


def random_meter(seed, episodes=60, noise=0.3, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    tgt = torch.randint(0, 2, (episodes, 6, 6), generator=g)
    tgt[:, -1] = 255
    flip = torch.rand(episodes, 6, 6, generator=g) < noise
    pred = (tgt == 1) ^ flip
    m = IoUMeter()
    m.update(pred.to(device), tgt.to(device), torch.arange(episodes).to(device) % 5 + 1)
    return m


def test_bootstrap_interval_contains_the_point_estimate_and_is_seeded():
    m = random_meter(0)
    ci = bootstrap_ci(m, n_boot=300, seed=0)
    point = m.compute()
    for key in ("miou", "fbiou"):
        assert ci[key]["mean"] == pytest.approx(point[key])
        assert ci[key]["low"] < point[key] < ci[key]["high"]
    assert bootstrap_ci(m, n_boot=300, seed=0) == ci
    assert bootstrap_ci(m, n_boot=300, seed=1) != ci
    narrow = bootstrap_ci(m, n_boot=300, seed=0, level=0.5)["miou"]
    assert ci["miou"]["low"] <= narrow["low"] and narrow["high"] <= ci["miou"]["high"]


def test_paired_difference_with_itself_is_zero_and_detects_a_better_method():
    a, worse = random_meter(1, noise=0.1), random_meter(1, noise=0.4)
    same = paired_difference(a, a, n_boot=200)
    assert all(v == 0 for d in same.values() for v in d.values())
    diff = paired_difference(a, worse, n_boot=200)
    expected = a.compute()["miou"] - worse.compute()["miou"]
    assert diff["miou"]["mean"] == pytest.approx(expected)
    assert 0 < diff["miou"]["low"] < expected < diff["miou"]["high"]
    with pytest.raises(ValueError, match="same episodes"):
        paired_difference(a, random_meter(1, episodes=30))


@pytest.mark.gpu
def test_meter_on_cuda_matches_cpu():
    cpu, gpu = random_meter(3), random_meter(3, device="cuda")
    assert gpu.records.device.type == "cuda"
    assert gpu.compute() == cpu.compute()
    assert bootstrap_ci(gpu, n_boot=50) == bootstrap_ci(cpu, n_boot=50)
    assert paired_difference(gpu, cpu, n_boot=50)["miou"]["mean"] == 0


def test_from_records_round_trip_and_bootstrap_draws():
    m = IoUMeter()
    pred = torch.tensor([[[1, 1], [0, 0]], [[0, 1], [1, 0]]])
    target = torch.tensor([[[1, 0], [0, 255]], [[0, 1], [1, 1]]])
    m.update(pred, target, torch.tensor([3, 4]))
    copy = IoUMeter.from_records(m.records.clone())
    assert copy.compute() == m.compute()
    (s,) = bootstrap_draws([m], n_boot=50, seed=1)
    assert s["miou"].shape == (50,) and s["fbiou"].shape == (50,)
    assert torch.equal(s["miou"], bootstrap_draws([m], n_boot=50, seed=1)[0]["miou"])
    with pytest.raises(ValueError):
        IoUMeter.from_records(torch.zeros(3, 4, dtype=torch.long))


def test_draws_are_paired_within_a_stratum_and_independent_across_strata():
    a, b = random_meter(5, episodes=40), random_meter(6, episodes=40)
    da, db = bootstrap_draws([a, b], n_boot=100, seed=0, stratum=0)
    # the same resamples for both meters: a meter paired with itself differs by exactly 0
    same_a, same_a2 = bootstrap_draws([a, a], n_boot=100, seed=0, stratum=0)
    assert torch.equal(same_a["miou"], same_a2["miou"]) and torch.equal(same_a["miou"], da["miou"])
    # another stratum (fold) draws other resamples of the same episodes
    (other,) = bootstrap_draws([a], n_boot=100, seed=0, stratum=1)
    assert not torch.equal(other["miou"], da["miou"])
    with pytest.raises(ValueError, match="same episodes"):
        bootstrap_draws([a, random_meter(1, episodes=30)])


def test_seed_picks_are_seeded_per_stratum():
    picks = seed_picks(3, n_boot=200, seed=0, stratum=1)
    assert picks.shape == (200, 3) and set(picks.unique().tolist()) == {0, 1, 2}
    assert torch.equal(picks, seed_picks(3, n_boot=200, seed=0, stratum=1))
    assert not torch.equal(picks, seed_picks(3, n_boot=200, seed=0, stratum=2))
    # not the episode stream of the same (seed, stratum): 3 episodes drawn the same way
    episodes = torch.randint(3, (200, 3), generator=torch.Generator().manual_seed(
        stratum_seed(0, 1)))
    assert not torch.equal(picks, episodes)


def test_crossed_draws_average_the_picked_seeds():
    low, high = random_meter(7, noise=0.4), random_meter(7, noise=0.1)
    (one,) = crossed_draws([[low]], n_boot=100, seed=2, stratum=1)
    assert torch.equal(one["miou"], bootstrap_draws([low], 100, 2, stratum=1)[0]["miou"])
    (d,) = crossed_draws([[low, high]], n_boot=100, seed=2, stratum=1)
    d_low, d_high = bootstrap_draws([low, high], 100, 2, stratum=1)
    picked_high = seed_picks(2, 100, 2, stratum=1).float().mean(1)  # share of "high" picks
    expected = d_low["miou"] * (1 - picked_high) + d_high["miou"] * picked_high
    assert torch.allclose(d["miou"], expected.double())
    point = crossed_point_scores([low, high])["miou"]
    assert point == pytest.approx((low.compute()["miou"] + high.compute()["miou"]) / 2)
    with pytest.raises(ValueError, match="base seeds"):
        crossed_draws([[low, high], [low]])
