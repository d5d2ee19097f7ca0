"""Transductive few-shot inference (RePRI), pure tensors in and out.

``run_method(METHODS["repri"], support_feats, support_masks, query_feats, query_valid)``
fits one cosine classifier per task and returns its query logits; ``fg_probs`` upsamples
them to image size. :mod:`~fsstools.inference.config` holds the methods and their options,
:func:`resolve_method` turns a name or a YAML mapping into one.

Generalized few-shot segmentation (DIaM: background + base + novel classes at once):
``run_gfss(GFSS_METHODS["diam"], base_weight, base_bias, support_feats, support_labels,
query_feats, query_valid, n_novel)`` in :mod:`~fsstools.inference.generalized`.
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
from fsstools.inference.generalized import (
    GFSS_METHODS,
    GFSSConfig,
    GFSSResult,
    resolve_gfss_method,
    run_gfss,
)
from fsstools.inference.prior import oracle_prior, perturb_prior, query_valid_mask
from fsstools.inference.prototype import masked_average

__all__ = [
    "AUTO",
    "GFSS_METHODS",
    "METHODS",
    "GFSSConfig",
    "GFSSResult",
    "InferenceResult",
    "MethodConfig",
    "fg_probs",
    "masked_average",
    "oracle_prior",
    "perturb_prior",
    "query_valid_mask",
    "resolve_gfss_method",
    "resolve_method",
    "resolve_methods",
    "run_gfss",
    "run_method",
]
