"""RePRI on CUDA against the CPU at the reference feature size (marked gpu: skipped without
CUDA; ``bench/gpu_check`` runs them with the other gpu tests on a GPU)."""

from __future__ import annotations

import functools

import pytest
import torch

from fsstools.constants import IGNORE_INDEX
from fsstools.inference import query_valid_mask, resolve_method, run_method

pytestmark = pytest.mark.gpu

DEVICE = "cuda"
CHANNELS, GRID, VALID_ROWS = 512, 53, 40
"""The reference size: C=512 on a 53x53 grid; a 4:3 image padded to a square gives 40 rows."""
TASKS = {1: 32, 5: 12}
"""Tasks compared per shot count (about as many feature values each, ~0.4 GB)."""
EXACT_TASKS = 2
"""Tasks compared in float64."""
FLOAT32_TOL = 1e-3
"""Float32 logits (up to ~8 here) must agree to this: on the CPU float32 and float64 results
of these tasks differ by 1.5e-5, so rounding alone stays far below it (no TF32: torch's
default float32 matmul precision)."""
AGREE_MIN = 0.999
"""Float32 runs must predict alike on this share of valid query pixels: only pixels whose
logit is within rounding of 0 may flip."""
EXACT_TOL = 1e-9
"""Float64 logits (of order tau = 20) must agree to this."""


@functools.cache
def reference_tasks(tasks: int, shots: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Tasks whose foreground features lean toward a task direction, boxes of 8 to 27 cells.

    Returns:
        support_feats (B, S, C, h, w), support_masks (B, S, h, w), query_feats (B, C, h, w),
        query_valid (B, h, w), query_mask (B, h, w); rows from VALID_ROWS on are padding.
    """
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(tasks, shots + 1, GRID, GRID, dtype=torch.long)
    corners = torch.randint(0, VALID_ROWS - 12, (tasks, shots + 1, 2), generator=g)
    sides = torch.randint(8, 28, (tasks, shots + 1, 2), generator=g)
    for b in range(tasks):
        for s in range(shots + 1):
            (y, x), (h, w) = corners[b, s].tolist(), sides[b, s].tolist()
            masks[b, s, y:y + h, x:x + w] = 1
    masks[..., VALID_ROWS:, :] = IGNORE_INDEX
    direction = torch.rand(tasks, 1, CHANNELS, 1, 1, generator=g)  # (B, 1, C, 1, 1)
    feats = torch.randn(tasks, shots + 1, CHANNELS, GRID, GRID, generator=g)
    feats = (feats + 1.5 * direction * (masks == 1).unsqueeze(2)).relu_()  # (B, S+1, C, h, w)
    valid = torch.ones(tasks, GRID, GRID, dtype=torch.bool)
    valid[:, VALID_ROWS:] = False
    return feats[:, :shots], masks[:, :shots], feats[:, shots], valid, masks[:, shots]


def cpu_and_device(shots: int, reference: bool, tasks: int, dtype: torch.dtype
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RePRI's query logits (B, h, w) on the CPU and on :data:`DEVICE` for the same tasks,
    and the valid query pixels (B, h, w)."""
    sf, sm, qf, qv, qm = (t[:tasks] for t in reference_tasks(TASKS[shots], shots, shots))
    sf, qf = sf.to(dtype), qf.to(dtype)
    cfg = resolve_method("repri", reference=reference)
    valid = query_valid_mask(qm, qv, reference)
    cpu = run_method(cfg, sf, sm, qf, valid)
    other = run_method(cfg, sf, sm, qf, valid, device=DEVICE)
    assert other.logits.device.type == "cpu"  # results follow the inputs
    return cpu.logits, other.logits, valid


@pytest.mark.parametrize("reference", [False, True], ids=["clean", "reference"])
@pytest.mark.parametrize("shots", [1, 5])
def test_float32_predictions_agree_with_the_cpu(shots, reference):
    cpu, other, valid = cpu_and_device(shots, reference, TASKS[shots], torch.float32)
    assert other.dtype == torch.float32 and torch.isfinite(other).all()
    flipped = ((cpu > 0) != (other > 0)) & valid
    share = 1 - flipped.sum().item() / valid.sum().item()
    gap = (cpu - other).abs().max().item()
    assert gap <= FLOAT32_TOL, f"max |logit difference| {gap:.2e} in float32"
    assert share >= AGREE_MIN, f"same prediction on {share:.5f} of valid pixels"


@pytest.mark.parametrize("reference", [False, True], ids=["clean", "reference"])
@pytest.mark.parametrize("shots", [1, 5])
def test_float64_logits_equal_the_cpus(shots, reference):
    cpu, other, _ = cpu_and_device(shots, reference, EXACT_TASKS, torch.float64)
    assert other.dtype == torch.float64
    gap = (cpu - other).abs().max().item()
    assert gap <= EXACT_TOL, f"max |logit difference| {gap:.2e} in float64"
