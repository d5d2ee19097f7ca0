"""Scoring one method on one episode list: inference on cached features, then the metrics.

This module computes the per-episode rows :mod:`fsstools.evaluation.pipeline` caches; their key
(:func:`scores_key`) holds this module's code version, which covers inference, the metrics
and the feature store it reads, and nothing of the pipeline around it (configs, the fold
guard, training, reports, plots).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import torch
from torch import nn

from fsstools import cache, metrics
from fsstools import config as config_lib
from fsstools.constants import IGNORE_INDEX
from fsstools.data.episodes import EpisodeList
from fsstools.features import FeatureStore, task_batch
from fsstools.inference import MethodConfig, fg_probs, oracle_prior, query_valid_mask, run_method


def scores_key(features: str, episodes: str, method: MethodConfig, device: str | torch.device,
               **model: str) -> str:
    """Key of the rows of ``method`` on one episode list (by its hash) over the features
    stored under ``features``; ``model`` adds the checkpoint hash of a method that runs the
    checkpoint's own network."""
    return cache.cache_key(
        stage="scores",
        features=features,
        episodes=episodes,
        method=config_lib.to_dict(dataclasses.replace(method, name="")),
        device=torch.device(device).type,
        code=cache.code_version(__name__),
        **model,
    )


def score_episodes(
    store: FeatureStore,
    episodes: EpisodeList,
    method: MethodConfig,
    device: str | torch.device = "cpu",
    batch_tasks: int | None = None,
    trace: bool = False,
    model: nn.Module | None = None,
) -> tuple[pd.DataFrame, dict[str, torch.Tensor] | None]:
    """Run ``method`` on every episode and score it at the padded image size (no cache).

    Args:
        model: the PFENet-style peer whose features ``store`` holds, for ``pfenet``
            (:func:`fsstools.evaluation.pipeline.peer_model`); unused by every other method.

    Returns:
        One row per episode (episode, class_id, fg/bg intersection and union, pi, true_share,
        pred_share) and, with ``trace``, name -> (T, E) traces over all episodes.

    Raises:
        ValueError: a task's logits are not finite (named by its episode index).
    """
    n = len(episodes.episodes)
    batch = batch_tasks or 256
    meter = metrics.IoUMeter()
    extra: dict[str, list[torch.Tensor]] = {"pi": [], "true_share": [], "pred_share": []}
    traces: dict[str, list[torch.Tensor]] = {}
    for start in range(0, n, batch):
        tb = task_batch(store, episodes, range(start, min(start + batch, n)), device)
        valid = query_valid_mask(tb.query_mask_small, tb.query_valid_small, method.reference)
        out = run_method(
            method,
            tb.support_feats,
            tb.support_masks,
            tb.query_feats,
            valid,
            query_mask=tb.query_mask_small,
            trace=trace,
            model=model,
        )
        finite = torch.isfinite(out.logits).flatten(1).all(dim=1)
        if not bool(finite.all()):
            bad = start + int((~finite).nonzero()[0])
            raise ValueError(
                f"method {method.name!r} gave non-finite logits (NaN or inf) on episode {bad} "
                f"of {episodes.dataset} fold {episodes.fold} ({episodes.shots}-shot): check "
                "the features of its images and the method's settings (lr, tau)"
            )
        pred = fg_probs(out.logits, tuple(tb.query_mask.shape[-2:])) > 0.5  # (B, H, W)
        meter.update(pred, tb.query_mask, tb.class_id)
        scored = tb.query_mask != IGNORE_INDEX
        extra["pi"].append(out.pi.float().cpu())
        # on the pixels pi averages over (the method's validity), so pi / true compares alike
        extra["true_share"].append(
            oracle_prior(tb.query_mask_small.flatten(1), valid.flatten(1)).cpu()
        )
        share = (pred & scored).sum((1, 2)) / scored.sum((1, 2)).clamp_min(1)
        extra["pred_share"].append(share.float().cpu())
        for k, v in (out.traces or {}).items():
            traces.setdefault(k, []).append(v.float().cpu())
    rows = pd.DataFrame(meter.records.cpu().numpy(), columns=list(metrics.RECORD_COLUMNS))
    rows.insert(0, "episode", np.arange(n))
    for k, v in extra.items():
        rows[k] = torch.cat(v).numpy()
    return rows, ({k: torch.cat(v, dim=1) for k, v in traces.items()} if trace else None)
