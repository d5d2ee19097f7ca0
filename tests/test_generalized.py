"""DIaM's generalized few-shot inference: the fast path against the straight autograd
transcription of the authors' loop (tests/reference_diam.py), and its parts by hand."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from fsstools.constants import EPS
from fsstools.inference import generalized
from fsstools.inference.generalized import (
    GFSS_METHODS,
    GFSSConfig,
    resolve_gfss_method,
    run_gfss,
)
from tests.reference_diam import run_reference

pytestmark = pytest.mark.usefixtures("one_thread")
DT = torch.float64
N_BG, N_NOVEL, C, H = 4, 2, 6, 5
K = N_BG + N_NOVEL
TOL = 1e-12  # measured: max |probability difference| <= 4e-16 in float64
FAST = GFSSConfig(iterations=12, lr=0.01)  # crosses the pi update after step 10


def tiny(queries=3, shots=1, support_sets=1, seed=0, dtype=DT):
    """Base classifier, support sets (one novel class per image, as the authors' protocol),
    queries with a padded bottom row and labels of every class."""
    g = torch.Generator().manual_seed(seed)
    wb = torch.randn(N_BG, C, generator=g, dtype=dtype)
    bb = torch.randn(N_BG, generator=g, dtype=dtype)
    S = N_NOVEL * shots
    sf = torch.randn(support_sets, S, C, H, H, generator=g, dtype=dtype).relu()
    sl = torch.zeros(support_sets, S, H, H, dtype=torch.long)
    for i in range(S):
        sl[:, i, : 2 + i % 2, :3] = N_BG + i // shots
    sl[:, 0, -1] = 255
    qf = torch.randn(queries, C, H, H, generator=g, dtype=dtype).relu()
    qv = torch.ones(queries, H, H, dtype=torch.bool)
    qv[:, -1] = False
    present = torch.tensor([0, 2, 3, 4, 5])  # base class 1 absent: imglvl masks it out
    ql = present[torch.randint(0, len(present), (queries, H, H), generator=g)]
    ql[:, 0, 0], ql[:, 1, 1] = 0, K - 1
    ql[~qv] = 255
    return wb, bb, sf, sl, qf, qv, ql


def both(cfg, data, trace=True):
    wb, bb, sf, sl, qf, qv, ql = data
    fast = run_gfss(cfg, wb, bb, sf, sl, qf, qv, N_NOVEL, ql, trace=trace)
    ref = run_reference(cfg, wb, bb, sf, sl, qf, qv, N_NOVEL, ql, trace=trace)
    return fast, ref


def assert_same(fast, ref, tol=TOL):
    assert (fast.probs - ref.probs).abs().max() < tol
    assert (fast.pi - ref.pi).abs().max() < tol
    assert torch.allclose(fast.weight, ref.weight, atol=tol)
    assert torch.allclose(fast.bias, ref.bias, atol=tol)
    if ref.traces is not None:
        assert fast.traces.keys() == ref.traces.keys()
        for k in ref.traces:
            assert torch.allclose(fast.traces[k], ref.traces[k], rtol=1e-10, atol=1e-12), k


def moved(cfg, data):
    """How far the fit moved the probabilities from the initial classifier."""
    wb, bb, sf, sl, qf, qv, ql = data
    start = run_gfss(GFSS_METHODS["gfss_prototypes"], wb, bb, sf, sl, qf, qv, N_NOVEL, ql)
    end = run_gfss(cfg, wb, bb, sf, sl, qf, qv, N_NOVEL, ql)
    return (end.probs - start.probs).abs().max()


def test_defaults_are_the_authors():
    cfg = GFSS_METHODS["diam"]
    assert (cfg.ce_weight, cfg.kl_weight, cfg.ent_weight, cfg.kd_weight) == (100, 1, 1, 100)
    assert (cfg.lr, cfg.iterations, cfg.pi, cfg.pi_update_at) == (0.00125, 100, "self", (10,))
    assert cfg.tune_base and cfg.kd_direction == "student_teacher"
    assert GFSS_METHODS["diam_no_kd"].kd_weight == 0
    assert GFSS_METHODS["diam_upperbound"].pi == "upperbound"
    assert GFSS_METHODS["gfss_prototypes"].iterations == 0
    assert resolve_gfss_method("diam_no_kd") is GFSS_METHODS["diam_no_kd"]
    with pytest.raises(ValueError, match="did you mean 'diam'"):
        resolve_gfss_method("DIaM")
    with pytest.raises(ValueError, match="pi="):
        GFSSConfig(pi="oracle")


def test_authors_defaults_match_the_reference():
    data = tiny(queries=2)
    fast, ref = both(GFSS_METHODS["diam"], data)
    assert_same(fast, ref)
    assert fast.traces["loss"].shape == (101, 2)
    assert moved(GFSS_METHODS["diam"], data) > 0.05  # the test compares a real fit


@pytest.mark.parametrize("change", [
    {}, {"pi": "uniform"}, {"pi": "imglvl"}, {"pi": "upperbound"},
    {"kd_direction": "teacher_student"}, {"tune_base": False}, {"pi_update_at": (3, 7)},
])
def test_variants_match_the_reference(change):
    cfg = dataclasses.replace(FAST, **change)
    data = tiny(shots=2 if change.get("tune_base") is False else 1)
    fast, ref = both(cfg, data)
    assert_same(fast, ref)
    assert moved(cfg, data) > 0.05


@pytest.mark.parametrize("term", ["ce_weight", "kl_weight", "ent_weight", "kd_weight"])
def test_each_term_switched_off_is_the_reduced_loss(term):
    cfg = dataclasses.replace(FAST, **{term: 0.0})
    data = tiny(seed=1)
    fast, ref = both(cfg, data)
    assert_same(fast, ref)
    tr = fast.traces
    reduced = sum(getattr(cfg, w) * tr[name] for w, name in (
        ("ce_weight", "ce"), ("kl_weight", "kl"), ("ent_weight", "entropy"),
        ("kd_weight", "kd")) if w != term)
    assert torch.allclose(tr["loss"], reduced, rtol=1e-12)
    full = run_gfss(FAST, *data[:6], N_NOVEL, data[6])
    assert (full.probs - fast.probs).abs().max() > 1e-4  # the switch changes the fit


def test_pi_strategies_by_hand():
    wb, bb, sf, sl, qf, qv, ql = data = tiny()
    args = (wb, bb, sf, sl, qf, qv, N_NOVEL, ql)
    uniform = run_gfss(dataclasses.replace(FAST, pi="uniform"), *args)
    assert torch.equal(uniform.pi, torch.full((3, K), 1 / K, dtype=DT))
    upper = run_gfss(GFSS_METHODS["diam_upperbound"], *args)
    onehot = torch.nn.functional.one_hot(torch.where(qv, ql, 0), K).to(DT) * qv[..., None]
    share = onehot.sum(dim=(1, 2)) / qv.sum(dim=(1, 2))[:, None]
    assert torch.allclose(upper.pi, share)
    img = run_gfss(dataclasses.replace(FAST, pi="imglvl"), *args)
    assert torch.all(img.pi[:, 1] == 0) and torch.all(img.pi[:, 0] > 0)
    assert torch.allclose(img.pi.sum(dim=1), torch.ones(3, dtype=DT))
    # self: the initial marginal, then re-estimated from the classifier after step 10
    start = run_gfss(GFSS_METHODS["gfss_prototypes"], *args)
    after10 = run_gfss(dataclasses.replace(FAST, iterations=10), *args)

    def marginal(res):
        v = qv.to(DT) / (qv.sum(dim=(1, 2), keepdim=True) + EPS)
        return (res.probs * v[:, None]).sum(dim=(2, 3))

    assert torch.allclose(start.pi, marginal(start), atol=1e-15)
    assert torch.allclose(after10.pi, marginal(after10), atol=1e-15)
    assert not torch.allclose(after10.pi, start.pi, atol=1e-3)
    no_kl = run_gfss(dataclasses.replace(FAST, kl_weight=0.0), *data[:6], N_NOVEL)
    assert torch.allclose(no_kl.pi, start.pi, atol=1e-15)  # no KL: never re-estimated


def test_distillation_directions_by_hand():
    wb, bb, sf, sl, qf, qv, ql = tiny()
    start = run_gfss(GFSS_METHODS["gfss_prototypes"], wb, bb, sf, sl, qf, qv, N_NOVEL,
                     trace=True)
    p = start.probs
    student = torch.cat([p[:, :1] + p[:, N_BG:].sum(dim=1, keepdim=True), p[:, 1:N_BG]], 1)
    teacher = torch.softmax(torch.einsum("kc,bchw->bkhw", wb, qf) + bb[:, None, None], dim=1)
    v = qv.to(DT) / (qv.sum(dim=(1, 2), keepdim=True) + EPS)
    st = (student * torch.log(EPS + student / (EPS + teacher))).sum(dim=1)
    assert torch.allclose(start.traces["kd"][0], (st * v).sum(dim=(1, 2)))
    other = run_gfss(dataclasses.replace(GFSS_METHODS["gfss_prototypes"],
                                         kd_direction="teacher_student"),
                     wb, bb, sf, sl, qf, qv, N_NOVEL, trace=True)
    ts = (teacher * torch.log(EPS + teacher / (EPS + student))).sum(dim=1)
    assert torch.allclose(other.traces["kd"][0], (ts * v).sum(dim=(1, 2)))
    assert not torch.allclose(st, ts)


def test_prototypes_are_the_initial_classifier_by_hand():
    wb, bb, sf, sl, qf, qv, _ = tiny(shots=2)
    out = run_gfss(GFSS_METHODS["gfss_prototypes"], wb, bb, sf, sl, qf, qv, N_NOVEL)
    protos = []
    for cls in range(N_BG, K):
        mask = (sl[0] == cls)  # (S, h, w)
        mean = sf[0].permute(1, 0, 2, 3)[:, mask].mean(dim=1)  # (C,)
        protos.append(mean / mean.norm())
    weight = torch.cat([wb, torch.stack(protos)])
    bias = torch.cat([bb, torch.zeros(N_NOVEL, dtype=DT)])
    logits = torch.einsum("kc,bchw->bkhw", weight, qf) + bias[:, None, None]
    assert torch.allclose(out.logits, logits, atol=1e-12)
    assert out.weight.shape == (3, K, C) and torch.allclose(out.weight[1], weight)


def test_batching_and_blocks_give_the_same_numbers(monkeypatch):
    wb, bb, sf, sl, qf, qv, ql = tiny(queries=4)
    cfg = FAST
    shared = run_gfss(cfg, wb, bb, sf, sl, qf, qv, N_NOVEL, trace=True)
    each = run_gfss(cfg, wb, bb, sf.expand(4, -1, -1, -1, -1), sl.expand(4, -1, -1, -1), qf, qv,
                    N_NOVEL, trace=True)
    single = run_gfss(cfg, wb, bb, sf, sl, qf[2:3], qv[2:3], N_NOVEL)
    monkeypatch.setattr(generalized, "BLOCK_ELEMENTS", 1)  # 64-pixel blocks
    blocked = run_gfss(cfg, wb, bb, sf, sl, qf, qv, N_NOVEL, trace=True)
    for other in (each, blocked):
        assert_same(other, shared, tol=1e-13)
    assert (single.probs[0] - shared.probs[2]).abs().max() < 1e-13


def test_a_support_set_per_query_matches_the_reference():
    data = tiny(queries=3, support_sets=3, shots=2, seed=2)
    fast, ref = both(FAST, data)
    assert_same(fast, ref)
    wb, bb, sf, sl, qf, qv, _ = data
    shared = run_gfss(FAST, wb, bb, sf[:1], sl[:1], qf, qv, N_NOVEL)
    assert (shared.probs[1:] - fast.probs[1:]).abs().max() > 1e-4  # the sets differ


def test_shapes_dtypes_and_ignored_pixels():
    wb, bb, sf, sl, qf, qv, _ = tiny(dtype=torch.float32)
    out = run_gfss(FAST, wb, bb, sf, sl, qf, qv, N_NOVEL, trace=True)
    assert out.logits.shape == (3, K, H, H) and out.logits.dtype == torch.float32
    assert out.pi.shape == (3, K) and out.bias.shape == (3, K)
    assert set(out.traces) == {"loss", "ce", "kl", "entropy", "kd"}
    assert all(t.shape == (FAST.iterations + 1, 3) for t in out.traces.values())
    # invalid query pixels and ignored support pixels are never read (but for the output),
    # also where queries and support sets have different numbers of them
    sf3, sl3 = sf.expand(3, -1, -1, -1, -1).clone(), sl.expand(3, -1, -1, -1).clone()
    sl3[1, 1, -1] = 255
    qv3 = qv.clone()
    qv3[0, -2] = False
    clean = run_gfss(FAST, wb, bb, sf3, sl3, qf, qv3, N_NOVEL)
    sf3.permute(0, 1, 3, 4, 2)[sl3 == 255] = float("nan")
    qf3 = qf.clone()
    qf3.permute(0, 2, 3, 1)[~qv3] = float("nan")
    other = run_gfss(FAST, wb, bb, sf3, sl3, qf3, qv3, N_NOVEL)
    assert torch.equal(other.weight, clean.weight) and torch.equal(other.pi, clean.pi)
    assert torch.isnan(other.logits[0, :, -2]).all() and not torch.isnan(other.weight).any()
    # base-class pixels in a support set count as background
    sl_base = sl.clone()
    sl_base[0, 1, -1, :2] = 2
    base = run_gfss(FAST, wb, bb, sf, sl_base, qf, qv, N_NOVEL)
    zero = run_gfss(FAST, wb, bb, sf, torch.where(sl_base == 2, 0, sl_base), qf, qv, N_NOVEL)
    assert torch.equal(base.weight, zero.weight)


def test_base_classifier_frozen_when_not_tuned():
    wb, bb, sf, sl, qf, qv, _ = tiny()
    out = run_gfss(dataclasses.replace(FAST, tune_base=False), wb, bb, sf, sl, qf, qv, N_NOVEL)
    assert torch.equal(out.weight[:, :N_BG], wb.expand(3, -1, -1))
    assert not torch.allclose(out.weight[:, N_BG:], run_gfss(
        GFSS_METHODS["gfss_prototypes"], wb, bb, sf, sl, qf, qv, N_NOVEL).weight[:, N_BG:])


@pytest.mark.parametrize("bad, match", [
    ({"sf": "two sets"}, "support sets for 3 queries"),
    ({"sl": 9}, "support label 9"),
    ({"ql": None}, "reads the query labels"),
    ({"qv": "empty"}, "no valid pixel"),
])
def test_errors_name_the_input(bad, match):
    wb, bb, sf, sl, qf, qv, ql = tiny()
    if "sf" in bad:
        sf, sl = sf.expand(2, -1, -1, -1, -1), sl.expand(2, -1, -1, -1)
    if "sl" in bad:
        sl = sl.clone()
        sl[0, 0, 0, 0] = bad["sl"]
    if "ql" in bad:
        ql = None
    if "qv" in bad:
        qv = qv.clone()
        qv[1] = False
    with pytest.raises(ValueError, match=match):
        run_gfss(GFSS_METHODS["diam_upperbound"], wb, bb, sf, sl, qf, qv, N_NOVEL, ql)


def test_bench_compares_both_paths_at_a_tiny_size(capsys):
    from bench import diam

    argv = ["--channels", "4", "--grid", "6", "--queries", "2", "--shots", "1", "2",
            "--base", "3", "--novel", "2", "--iterations", "3", "--repeats", "1"]
    assert diam.main(argv) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\s+(\d) .*x\s+[\d.]+\s+([\d.e+-]+)\s+([\d.]+)%", out, re.M)
    assert [r[0] for r in rows] == ["1", "2"]
    assert all(float(r[1]) < 1e-5 and float(r[2]) == 100.0 for r in rows)
    assert re.search(r"^speedup=\d+\.\d\d$", out, re.M)
