"""run_method: methods, the reference-compatible mode, chunking, traces, loop == autograd."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fsstools.config import from_dict
from fsstools.inference import (
    METHODS,
    MethodConfig,
    layout,
    loop,
    query_valid_mask,
    resolve_method,
    resolve_methods,
    run_method,
    stacked,
)
from fsstools.inference.layout import default_chunk
from tests.reference_repri import run_reference

DT = torch.float64


@pytest.fixture(params=["one block", "streamed"])
def layouts(request, monkeypatch):
    """Which layout and loop run: tiny tasks as one block each, through the small-task loop,
    by default; a zero cache budget makes every task run alone, streamed block by block
    through the general loop, as large tasks are."""
    if request.param == "streamed":
        monkeypatch.setattr(layout, "CACHE_BYTES", 0)
    calls = {"one block": 0, "streamed": 0}

    def counted(kind, fit):
        def run(cfg, problem, trace):
            calls[kind] += 1
            assert (len(problem.blocks) > 1) == (kind == "streamed")
            return fit(cfg, problem, trace)
        return run

    monkeypatch.setattr(loop, "fit", counted("streamed", loop.fit))
    monkeypatch.setattr(stacked, "fit_one_block", counted("one block", stacked.fit_one_block))
    yield request.param
    other = "one block" if request.param == "streamed" else "streamed"
    assert calls[request.param] > 0 and calls[other] == 0


def test_the_general_loop_equals_the_small_task_loop_on_one_block():
    """Both loops take the same one-block layout and initial state: same fit to rounding."""
    ep = episodes(tasks=4, shots=3)
    for name in ("repri", "ce", "oracle_repri"):
        cfg = METHODS[name]
        problem = layout.lay_out(**ep, device=torch.device("cpu"), dtype=DT, streamed=False)
        a = loop.fit(cfg, problem, trace=True)
        b = stacked.fit_one_block(cfg, problem, trace=True)
        assert torch.allclose(a.logits, b.logits, atol=1e-10), name
        assert torch.allclose(a.pi, b.pi, atol=1e-12), name
        for key in a.traces:
            assert torch.allclose(a.traces[key], b.traces[key], atol=1e-10, equal_nan=True), key


pytestmark = pytest.mark.usefixtures("one_thread")


def episodes(tasks=3, shots=2, channels=16, n=7, seed=0, dtype=DT, pad_rows=1):
    """Tiny learnable episodes: foreground features share a task direction; the last
    ``pad_rows`` rows are padding (255 in every mask, invalid in the query)."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.rand(tasks, 1, channels, 1, 1, generator=g, dtype=dtype)
    masks = (torch.rand(tasks, shots + 1, n, n, generator=g) > 0.6).long()
    masks[:, :, 1, 1] = 1
    masks[:, :, 0, 0] = 0
    masks[:, :, 2, 3] = 255  # an object boundary
    if pad_rows:
        masks[:, :, n - pad_rows:] = 255
    feats = torch.randn(tasks, shots + 1, channels, n, n, generator=g, dtype=dtype)
    feats = (feats + 2 * direction * (masks == 1).unsqueeze(2)).relu()
    qvalid = torch.ones(tasks, n, n, dtype=torch.bool)
    if pad_rows:
        qvalid[:, n - pad_rows:] = False
    return dict(support_feats=feats[:, :shots], support_masks=masks[:, :shots],
                query_feats=feats[:, shots], query_valid=qvalid, query_mask=masks[:, shots])


def test_methods_table_is_complete_and_frozen():
    assert set(METHODS) == {"inductive", "ce_support", "prototype", "ce", "ce_h", "ce_kl",
                            "repri", "repri_reference", "oracle_repri", "oracle_repri_weights",
                            "panet", "pfenet"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        METHODS["repri"].lr = 1.0
    assert METHODS["repri"].loss_weights(5) == (1.0, 0.2, 0.2)
    assert METHODS["ce_h"].loss_weights(1) == (1.0, 1.0, 0.0)
    assert resolve_method("repri", reference=True).steps == 49 and METHODS["repri"].steps == 50
    assert METHODS["repri_reference"] == resolve_method("repri", reference=True).__class__(
        **{**dataclasses.asdict(METHODS["repri"]), "name": "repri_reference", "reference": True})


def test_the_default_oracle_is_the_authors_configuration():
    # scripts/oracle.sh of the reference: 300 iterations, weights CE 1, KL 1, H 0.1
    oracle = METHODS["oracle_repri"]
    assert (oracle.iterations, oracle.prior, oracle.t_pi) == (300, "oracle", ())
    for shots in (1, 5, 10):
        assert oracle.loss_weights(shots) == (1.0, 0.1, 1.0)
    weights = METHODS["oracle_repri_weights"]  # the same prior at RePRI's own settings
    assert (weights.iterations, weights.loss_weights(5)) == (50, (1.0, 0.2, 0.2))


def test_inductive_methods_never_read_the_query():
    ep = episodes(tasks=4)
    g = torch.Generator().manual_seed(5)
    other = {**ep, "query_feats": torch.randn(ep["query_feats"].shape, generator=g, dtype=DT),
             "query_mask": torch.randint(0, 2, ep["query_mask"].shape, generator=g)}
    for name in ("inductive", "ce_support"):
        assert METHODS[name].inductive and not METHODS["prototype"].inductive
        for run in (run_method, run_reference):
            a, b = run(METHODS[name], **ep), run(METHODS[name], **other)
            assert torch.equal(a.prototype, b.prototype) and torch.equal(a.bias, b.bias), name
    # the query-mean bias does read it
    a, b = run_method(METHODS["prototype"], **ep), run_method(METHODS["prototype"], **other)
    assert torch.equal(a.prototype, b.prototype) and not torch.allclose(a.bias, b.bias)


def test_method_config_loads_from_dict_and_validates():
    cfg = from_dict(MethodConfig, {"name": "x", "kl_weight": 0.5, "t_pi": [10, 20]})
    assert cfg.kl_weight == 0.5 and cfg.ent_weight == "auto" and cfg.t_pi == (10, 20)
    with pytest.raises(ValueError, match="kl_weight"):
        MethodConfig(kl_weight="half")
    with pytest.raises(ValueError, match="oracle"):
        MethodConfig(prior_delta=0.1)
    # t = 1 would re-estimate from the initial classifier, i.e. no update: rejected, with why
    with pytest.raises(ValueError, match="initial classifier"):
        MethodConfig(t_pi=(1, 10))
    assert MethodConfig(t_pi=()).t_pi == () and MethodConfig(t_pi=(2,)).t_pi == (2,)


def test_resolver_takes_names_configs_and_yaml_variants():
    assert resolve_method("repri") is METHODS["repri"]
    assert resolve_method(METHODS["ce"], reference=True) == dataclasses.replace(
        METHODS["ce"], reference=True)
    variant = resolve_method({"name": "repri_tpi2", "base": "repri", "t_pi": [2], "lr": 0.05})
    assert variant == dataclasses.replace(METHODS["repri"], name="repri_tpi2", t_pi=(2,), lr=0.05)
    # a mapping named after a registry method starts from it
    assert resolve_method({"name": "ce", "iterations": 5}).ent_weight == 0.0
    with pytest.raises(ValueError, match="known methods: inductive, ce"):
        resolve_method("RePRI")
    with pytest.raises(ValueError, match="unknown base 'repr'"):
        resolve_method({"name": "x", "base": "repr"})
    with pytest.raises(ValueError, match="unknown key"):
        resolve_method({"name": "x", "base": "repri", "t_p": [2]})
    with pytest.raises(ValueError, match="initial classifier"):
        resolve_method({"name": "x", "base": "repri", "t_pi": [1]})
    labelled = resolve_methods({"mine": METHODS["repri"]})
    assert list(labelled) == ["mine"] and labelled["mine"].name == "mine"
    with pytest.raises(ValueError, match="used twice"):
        resolve_methods(["repri", {"name": "repri", "lr": 0.1}])


@pytest.mark.parametrize("name", sorted(n for n, m in METHODS.items() if m.classifier == "cosine"))
@pytest.mark.parametrize("reference", [False, True])
def test_fast_equals_straightforward_autograd(name, reference, layouts):
    ep = episodes()
    cfg = resolve_method(name, reference)
    fast = run_method(cfg, **ep, trace=True)
    auto = run_reference(cfg, **ep, trace=True, chunk_size=3)
    assert torch.allclose(fast.logits, auto.logits, atol=1e-10)
    assert torch.allclose(fast.pi, auto.pi, atol=1e-12)
    for key in auto.traces:
        assert torch.allclose(fast.traces[key], auto.traces[key], atol=1e-10, equal_nan=True), key


@pytest.mark.parametrize("reference", [False, True])
def test_fast_equals_straightforward_with_custom_weights(reference, layouts):
    cfg = MethodConfig(iterations=8, ce_weight=0.3, ent_weight=0.7, kl_weight=2.5,
                       t_pi=(3, 6), lr=0.05, tau=15.0, reference=reference)
    ep = episodes(tasks=4, seed=2)
    fast = run_method(cfg, **ep, trace=True)
    auto = run_reference(cfg, **ep, trace=True)
    assert torch.allclose(fast.logits, auto.logits, rtol=0, atol=1e-10)
    for key in auto.traces:
        assert torch.allclose(fast.traces[key], auto.traces[key], atol=1e-10, equal_nan=True), key


def test_fast_equals_straightforward_in_float32(layouts):
    ep = episodes(dtype=torch.float32, channels=64, n=12, seed=3)
    fast = run_method(METHODS["repri"], **ep)
    auto = run_reference(METHODS["repri"], **ep)
    assert fast.logits.dtype == torch.float32
    assert torch.allclose(fast.logits, auto.logits, atol=1e-3)


@pytest.mark.parametrize("shots", [1, 5])
def test_float32_at_synthetic_benchmark_size(shots):
    """C=128 on a 16x16 grid, as the embedded benchmark: same predictions as autograd."""
    ep = episodes(tasks=4, shots=shots, dtype=torch.float32, channels=128, n=16, seed=shots)
    fast = run_method(METHODS["repri"], **ep)
    auto = run_reference(METHODS["repri"], **ep)
    assert torch.allclose(fast.logits, auto.logits, atol=1e-4)
    assert torch.equal(fast.logits > 0, auto.logits > 0)
    assert torch.allclose(fast.pi, auto.pi, atol=1e-5)


def test_total_loss_decreases():
    ep = episodes()
    for name in ("ce", "ce_h", "repri"):
        loss = run_method(METHODS[name], **ep, trace=True).traces["loss"]  # (T, B)
        assert (loss[-1] < loss[0]).all(), name
    steps = run_method(METHODS["ce"], **ep, trace=True).traces["loss"].diff(dim=0)
    assert (steps <= 1e-12).all()  # plain gradient descent with a small step


def test_adaptation_improves_query_iou_on_learnable_episodes():
    ep = episodes(tasks=4, n=10, seed=5)
    iou = run_method(METHODS["repri"], **ep, trace=True).traces["iou"]
    assert iou[-1].mean() >= iou[0].mean()


def test_prototype_is_repris_initial_classifier():
    ep = episodes()
    out = run_method(METHODS["prototype"], **ep, trace=True)
    first = run_method(METHODS["repri"], **ep, trace=True)
    assert out.traces["loss"].shape[0] == 1
    # row 0 of any method is the initial classifier: same foreground share
    assert torch.allclose(out.traces["fg_share"][0], first.traces["fg_share"][0])
    assert torch.allclose(out.pi, first.traces["pi"][0])


def test_reference_mode_steps_and_kl_bump_from_traces():
    ep = episodes()
    shots = ep["support_feats"].shape[1]
    cfg = MethodConfig(iterations=4, t_pi=(2,))
    clean = run_method(cfg, **ep, trace=True).traces
    ref = run_method(dataclasses.replace(cfg, reference=True), **ep, trace=True).traces
    assert clean["loss"].shape == (5, 3)  # 4 steps, rows after 0..4 steps
    assert ref["loss"].shape == (4, 3)  # the reference takes iterations - 1 steps
    assert torch.allclose(clean["kl_weight"], torch.full((5, 3), 1 / shots, dtype=DT))
    expected = torch.tensor([1 / shots] + [1 / shots + 1] * 3, dtype=DT)
    assert torch.allclose(ref["kl_weight"], expected.unsqueeze(1).expand(4, 3))
    for tr in (clean, ref):
        # pi: initial estimate, re-estimated before step 2 from the classifier after 1 step
        assert torch.allclose(tr["pi"][0], tr["fg_share"][0])
        assert torch.allclose(tr["pi"][1], tr["fg_share"][1])
        assert torch.allclose(tr["pi"][1:], tr["pi"][1].expand_as(tr["pi"][1:]))
        assert not torch.allclose(tr["pi"][0], tr["pi"][1])


def test_prior_is_re_estimated_at_each_listed_iteration():
    tr = run_method(MethodConfig(iterations=6, t_pi=(3, 5)), **episodes(), trace=True).traces
    changes = (tr["pi"].diff(dim=0).abs() > 0).any(dim=1).nonzero().flatten().tolist()
    assert changes == [1, 3]  # rows 2 and 4: after 2 and 4 steps


def test_no_re_estimation_without_kl_term():
    tr = run_method(METHODS["ce_h"], **episodes(), trace=True).traces
    assert torch.equal(tr["pi"], tr["pi"][:1].expand_as(tr["pi"]))


def test_reference_bias_uses_all_query_pixels():
    ep = episodes()
    clean = run_method(METHODS["prototype"], **ep).logits
    ref = run_method(resolve_method("prototype", reference=True), **ep).logits
    shift = clean - ref  # same scores, different bias: a constant per task
    assert torch.allclose(shift, shift[:, :1, :1].expand_as(shift))
    assert not torch.allclose(clean, ref)


def test_oracle_prior_is_true_share_and_delta_moves_it_exactly():
    ep = episodes()
    valid = ep["query_valid"]  # padding-valid pixels; the 255 boundary counts half
    counts = (((ep["query_mask"] == 1) & valid).flatten(1).sum(1)
              + 0.5 * ((ep["query_mask"] == 255) & valid).flatten(1).sum(1))
    share = counts / valid.flatten(1).sum(1)
    out = run_method(METHODS["oracle_repri"], **ep)
    assert torch.allclose(out.pi, share.to(DT))
    perturbed = run_method(dataclasses.replace(METHODS["oracle_repri"], prior_delta=-0.2), **ep)
    assert torch.allclose(perturbed.pi / out.pi - 1, torch.full((3,), -0.2, dtype=DT))
    assert not torch.allclose(perturbed.logits, out.logits)
    with pytest.raises(ValueError, match="query_mask"):
        run_method(METHODS["oracle_repri"], **{**ep, "query_mask": None})


def test_reference_validity_drops_boundary_pixels():
    ep = episodes()
    pad = ep["query_valid"]
    ref_valid = query_valid_mask(ep["query_mask"], pad, reference=True)
    assert (pad & ~ref_valid).any()  # boundary pixels are dropped too
    a = run_method(METHODS["repri"], **ep)
    b = run_method(METHODS["repri"], **{**ep, "query_valid": ref_valid})
    assert not torch.allclose(a.logits, b.logits)


@pytest.mark.parametrize("run", [run_method, run_reference])
def test_chunked_and_unchunked_agree(run):
    ep = episodes(tasks=5)
    whole = run(METHODS["repri"], **ep, chunk_size=5, trace=True)
    for chunk in (1, 2):
        part = run(METHODS["repri"], **ep, chunk_size=chunk, trace=True)
        assert torch.allclose(part.logits, whole.logits, atol=1e-10)
        assert torch.allclose(part.traces["loss"], whole.traces["loss"], atol=1e-10)


def test_same_input_same_output_any_worker_count(layouts):
    a = run_method(METHODS["repri"], **episodes(tasks=4, seed=7), workers=1)
    b = run_method(METHODS["repri"], **episodes(tasks=4, seed=7), workers=2)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.pi, b.pi)


@pytest.mark.parametrize("name", ["repri", "ce_kl", "oracle_repri"])
def test_chunks_workers_and_layouts_agree(name, monkeypatch):
    ep = episodes(tasks=9, seed=11)
    cfg = METHODS[name]
    whole = run_method(cfg, **ep, chunk_size=9, workers=1)
    runs = [run_method(cfg, **ep, chunk_size=c, workers=k) for c in (1, 7) for k in (1, 2)]
    monkeypatch.setattr(layout, "CACHE_BYTES", 0)  # one task per chunk, streamed
    runs.append(run_method(cfg, **ep, workers=2))
    for out in runs:
        assert torch.allclose(out.logits, whole.logits, rtol=0, atol=1e-12)
        assert torch.allclose(out.pi, whole.pi, rtol=0, atol=1e-12)
        assert torch.equal(out.logits > 0, whole.logits > 0)


def test_inputs_are_not_modified(layouts):
    ep = episodes(tasks=2, dtype=torch.float32)
    before = {k: v.clone() for k, v in ep.items()}
    run_method(METHODS["repri"], **ep, trace=True)
    assert all(torch.equal(ep[k], before[k]) for k in ep)


def test_empty_support_foreground_is_a_clear_error():
    ep = episodes()
    ep["support_masks"][1] = torch.where(ep["support_masks"][1] == 1, 0, ep["support_masks"][1])
    with pytest.raises(ValueError, match="task 1: the support masks have no foreground"):
        run_method(METHODS["repri"], **ep)


def test_support_foreground_with_zero_features_stays_finite(layouts):
    """A zero prototype (every foreground support pixel has all-zero features, e.g. a dead
    ReLU at that pixel) scores 0 everywhere at first; fitting must not turn that into NaN."""
    ep = episodes()
    fg = (ep["support_masks"][1] == 1).unsqueeze(1)  # (shots, 1, n, n)
    ep["support_feats"][1] = ep["support_feats"][1].masked_fill(fg, 0.0)
    for name, method in METHODS.items():
        if method.classifier != "cosine":
            continue
        for run in (run_method, run_reference):
            out = run(method, **ep)
            assert torch.isfinite(out.logits).all(), (name, run.__name__)


def test_outputs_finite_shapes_and_dtype_follow_inputs():
    ep = episodes(dtype=torch.float32)
    out = run_method(METHODS["repri"], **ep, trace=True)
    assert out.logits.shape == (3, 7, 7) and out.pi.shape == (3,)
    assert out.logits.dtype == torch.float32 and out.logits.device == ep["query_feats"].device
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.pi).all()
    assert set(out.traces) == {"loss", "ce", "entropy", "kl", "kl_weight", "pi", "fg_share", "iou"}
    half = run_method(METHODS["repri"], **{**ep, "support_feats": ep["support_feats"].bfloat16()})
    assert half.logits.dtype == torch.float32


def test_bad_shapes_and_empty_query_are_rejected():
    ep = episodes()
    with pytest.raises(ValueError, match="query_feats"):
        run_method(METHODS["repri"], **{**ep, "query_feats": ep["query_feats"][:, :3]})
    ep["query_valid"][2] = False
    with pytest.raises(ValueError, match="task 2"):
        run_method(METHODS["repri"], **ep)


def test_default_chunk_from_memory_budget():
    feats = torch.empty(0, 10, 512, 53, 53, device="meta")
    assert default_chunk(feats, torch.device("cpu"), None) == 1
    per_task = 11 * 512 * 53 * 53 * 4 * 3
    assert default_chunk(feats, torch.device("meta"), 10 * per_task) == 10


def test_spans_cover_all_tasks_in_even_chunks():
    for tasks, chunk in [(1000, 32), (5, 2), (7, 7), (3, 10), (1, 1)]:
        spans = layout.spans(tasks, chunk)
        sizes = [e - a for a, e in spans]
        assert spans[0][0] == 0 and spans[-1][1] == tasks
        assert all(s[1] == t[0] for s, t in zip(spans[:-1], spans[1:], strict=True))
        assert max(sizes) <= chunk and max(sizes) - min(sizes) <= 1
        assert len(spans) == -(-tasks // chunk)


def test_default_chunk_on_cpu_fills_the_cache():
    cpu = torch.device("cpu")
    large = torch.empty(100, 1, 512, 53, 53, device="meta")  # ~11 MB per task
    assert default_chunk(large, cpu, None) == 1 and layout.streams(large, 1)
    small = torch.empty(1000, 1, 128, 16, 16, device="meta")  # 256 KB per task
    chunk = default_chunk(small, cpu, None)
    assert 1 < chunk and chunk * layout.task_bytes(small) <= layout.chunk_bytes()
    assert (chunk + 1) * layout.task_bytes(small) > layout.chunk_bytes()
    assert not layout.streams(small, chunk) and not layout.streams(small, 1)
    double = torch.empty(1000, 1, 128, 16, 16, device="meta", dtype=torch.float64)
    assert default_chunk(double, cpu, None) < chunk


@pytest.mark.gpu
def test_cuda_matches_cpu():
    ep = episodes(dtype=torch.float32, channels=64, n=12)
    cpu = run_method(METHODS["repri"], **ep)
    gpu = run_method(METHODS["repri"], **ep, device="cuda")
    assert gpu.logits.device.type == "cpu"  # results follow the inputs
    assert torch.allclose(cpu.logits, gpu.logits, atol=1e-3)
    on_gpu = run_method(METHODS["repri"], **{k: v.cuda() for k, v in ep.items()})
    assert torch.allclose(on_gpu.logits.cpu(), cpu.logits, atol=1e-3)


def fake_caches(root, *caches):
    """A folder laid out as Linux's /sys/devices/system/cpu/cpu0/cache: (level, type, size,
    shared_cpu_list or None)."""
    for i, (level, kind, size, shared) in enumerate(caches):
        index = root / f"index{i}"
        index.mkdir(parents=True)
        (index / "level").write_text(f"{level}\n")
        (index / "type").write_text(f"{kind}\n")
        (index / "size").write_text(f"{size}\n")
        if shared is not None:
            (index / "shared_cpu_list").write_text(f"{shared}\n")
    return root


def test_last_level_cache_reads_the_highest_data_cache(tmp_path, monkeypatch):
    intel = fake_caches(tmp_path / "intel", (1, "Data", "48K", "0"),
                        (1, "Instruction", "64K", "0"), (2, "Unified", "2048K", "0"),
                        (3, "Unified", "491520K", "0-1"))
    assert layout.last_level_cache(intel) == (480 * 1024**2, 2)
    server = fake_caches(tmp_path / "server", (2, "Unified", "1M", "0"),
                         (3, "Unified", "32M", "0-7,64-71"))
    assert layout.last_level_cache(server) == (32 * 1024**2, 16)
    monkeypatch.setattr(layout.os, "cpu_count", lambda: 4)
    broken = fake_caches(tmp_path / "broken", (2, "Unified", "1024K", "0"),
                         (3, "Unified", "lots", "0-3"))
    assert layout.last_level_cache(broken) == (1024**2, 1)  # the unreadable L3 is skipped
    unshared = fake_caches(tmp_path / "unshared", (3, "Unified", "8M", None))
    assert layout.last_level_cache(unshared) == (8 * 1024**2, 4)  # every CPU shares it
    assert layout.last_level_cache(tmp_path / "absent") is None


@pytest.mark.parametrize("cache, budget_mib", [
    ((32, 2), 8),     # the 2-core AMD EPYC: half of each core's 16 MiB share
    ((480, 2), 32),   # the 2-core Intel Xeon: capped
    ((32, 16), 6),    # a small share: never below the fixed budget
    (None, 6),        # no cache described
])
def test_chunk_bytes_follows_each_cores_share_of_the_cache(monkeypatch, cache, budget_mib):
    described = None if cache is None else (cache[0] * 1024**2, cache[1])
    monkeypatch.setattr(layout, "last_level_cache", lambda: described)
    layout.chunk_bytes.cache_clear()
    try:
        assert layout.chunk_bytes() == budget_mib * 1024**2
    finally:
        layout.chunk_bytes.cache_clear()


@pytest.mark.parametrize("name", ["repri", "oracle_repri"])
def test_float32_logits_are_the_same_bits_in_any_chunk_of_three_tasks_or_more(name):
    """The chunk budget follows the CPU's cache; on the benchmark's features every budget makes
    chunks of many tasks, which must give a task the same bits whatever their size. A chunk
    of one or two tasks takes another BLAS path: the same to rounding."""
    ep = episodes(tasks=9, shots=2, seed=5, dtype=torch.float32)
    cfg = METHODS[name]
    whole = run_method(cfg, **ep, chunk_size=9, workers=1, trace=True)
    for chunk, workers in [(3, 1), (3, 2), (4, 2), (5, 1), (8, 2)]:
        out = run_method(cfg, **ep, chunk_size=chunk, workers=workers, trace=True)
        assert torch.equal(out.logits, whole.logits), (chunk, workers)
        assert torch.equal(out.pi, whole.pi) and torch.equal(out.prototype, whole.prototype)
        assert torch.equal(out.traces["loss"], whole.traces["loss"]), (chunk, workers)
    for chunk in (1, 2):
        out = run_method(cfg, **ep, chunk_size=chunk, workers=2)
        assert torch.allclose(out.logits, whole.logits, rtol=0, atol=1e-4), chunk
