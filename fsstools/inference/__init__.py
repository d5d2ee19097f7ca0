"""Transductive few-shot inference (RePRI), pure tensors in and out.

``run_method(METHODS["repri"], support_feats, support_masks, query_feats, query_valid)``
fits one cosine classifier per task and returns its query logits; ``fg_probs`` upsamples
them to image size. See :mod:`fsstools.inference.methods` for the methods and options.
"""

from fsstools.inference.classifier import fg_probs
from fsstools.inference.methods import (
    AUTO,
    METHODS,
    InferenceResult,
    MethodConfig,
    method,
    run_method,
)
from fsstools.inference.prior import oracle_prior, perturb_prior, query_valid_mask

__all__ = [
    "AUTO",
    "METHODS",
    "InferenceResult",
    "MethodConfig",
    "fg_probs",
    "method",
    "oracle_prior",
    "perturb_prior",
    "query_valid_mask",
    "run_method",
]
