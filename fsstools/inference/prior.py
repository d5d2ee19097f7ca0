"""The foreground-proportion prior ``pi`` of RePRI and the query pixels it is measured on."""

from __future__ import annotations

import torch

from fsstools.constants import IGNORE_INDEX

BOUNDARY_SHARE = 0.5
"""Foreground share counted for a valid query pixel labelled 255 (an object boundary)."""


def query_valid_mask(
    query_mask_small: torch.Tensor | None,
    padding_valid_small: torch.Tensor | None,
    reference: bool = False,
) -> torch.Tensor:
    """Which query pixels the transductive losses and the prior average over.

    The clean default uses only the padding mask, which is known at test time. The reference
    code instead drops every pixel whose ground-truth label is 255, padding and object
    boundaries alike, which leaks ground truth into inference; ``reference=True`` keeps that.

    Args:
        query_mask_small: (B, h, w) {0, 1, 255} query mask at feature resolution (needed when
            ``reference``; ignored otherwise).
        padding_valid_small: (B, h, w) bool, False on padding (needed unless ``reference``).
        reference: reproduce the reference code.

    Returns:
        (B, h, w) bool.
    """
    if reference:
        if query_mask_small is None:
            raise ValueError("reference validity needs the query mask (query_mask_small)")
        return query_mask_small != IGNORE_INDEX
    if padding_valid_small is None:
        raise ValueError("clean validity needs the padding mask (padding_valid_small)")
    return padding_valid_small.bool()


def oracle_prior(query_labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """True foreground share of each query over the pixels its predicted share averages over.

    ``valid`` is the set the transductive terms and the estimated prior average over (see
    :func:`query_valid_mask`), so the oracle prior, the true share and the estimated prior
    speak of the same pixels. Pixels labelled 1 count 1, 0 count 0; a valid pixel labelled
    255 is an object boundary (the reference mode drops those), a band that straddles the
    contour, so it counts 1/2.

    Args:
        query_labels: (B, N) {0, 1, 255} query mask.
        valid: (B, N) bool query validity.

    Returns:
        (B,) float64 shares in [0, 1].
    """
    count = valid.sum(dim=1)
    if bool((count == 0).any()):
        task = int((count == 0).nonzero()[0])
        raise ValueError(f"task {task}: the query has no valid pixel; no foreground share")
    fg = (valid & (query_labels == 1)).sum(dim=1).double()
    boundary = (valid & (query_labels == IGNORE_INDEX)).sum(dim=1).double()
    return (fg + BOUNDARY_SHARE * boundary) / count.double()


def perturb_prior(pi: torch.Tensor, delta: float) -> torch.Tensor:
    """``pi * (1 + delta)`` clipped to [0, 1], as a new tensor.

    The reference code perturbs the oracle through an alias of it, so its recorded relative
    error is always 0; here the input is never modified.
    """
    return (pi * (1 + delta)).clamp(0.0, 1.0)
