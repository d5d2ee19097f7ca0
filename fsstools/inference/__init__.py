"""Transductive few-shot inference (RePRI), pure tensors in and out.

``run_method(METHODS["repri"], support_feats, support_masks, query_feats, query_valid)``
fits one cosine classifier per task and returns its query logits; ``fg_probs`` upsamples
them to image size. :mod:`~fsstools.inference.config` holds the methods and their options,
:func:`resolve_method` turns a name or a YAML mapping into one.
"""

from fsstools.inference.classifier import fg_probs
from fsstools.inference.config import (
    AUTO,
    METHODS,
    MethodConfig,
    resolve_method,
    resolve_methods,
)
from fsstools.inference.dispatch import InferenceResult, run_method
from fsstools.inference.prior import oracle_prior, perturb_prior, query_valid_mask
from fsstools.inference.prototype import masked_average

__all__ = [
    "AUTO",
    "METHODS",
    "InferenceResult",
    "MethodConfig",
    "fg_probs",
    "masked_average",
    "oracle_prior",
    "perturb_prior",
    "query_valid_mask",
    "resolve_method",
    "resolve_methods",
    "run_method",
]
