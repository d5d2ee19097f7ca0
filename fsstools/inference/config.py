"""What a transductive inference method is: its settings, the registry of named methods, and
the one resolver that turns a name, a config or a YAML mapping into a method.

Example:
    >>> resolve_method("repri").loss_weights(shots=5)
    (1.0, 0.2, 0.2)
    >>> resolve_method({"name": "repri_tpi2", "base": "repri", "t_pi": [2]}).t_pi
    (2,)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fsstools.config import ConfigError, from_dict, to_dict
from fsstools.errors import did_you_mean

AUTO = "auto"
"""Loss weight meaning 1 / shots, the paper's choice for the entropy and KL terms."""
CLASSIFIERS = ("cosine", "panet", "pfenet")
"""What predicts the query (see :attr:`MethodConfig.classifier`)."""


@dataclass(frozen=True)
class MethodConfig:
    """One transductive inference method.

    Attributes:
        name: label used in tables.
        iterations: optimisation iterations (0: the initial prototype classifier). The
            reference code takes ``iterations - 1`` gradient steps; the clean default takes
            ``iterations``.
        lr: SGD learning rate on the prototype and the bias.
        tau: temperature of the cosine scores.
        ce_weight: weight of the support cross-entropy.
        ent_weight: weight of the query entropy, a number or "auto" (1 / shots).
        kl_weight: weight of KL(p_hat || pi), a number or "auto" (1 / shots).
        prior: "estimate" (from the classifier, re-estimated at ``t_pi``) or "oracle" (true
            foreground share of the query; needs the query mask).
        prior_delta: relative error put on the oracle prior, ``pi * (1 + delta)`` clipped
            to [0, 1].
        t_pi: iterations (1-based) before whose step the prior is re-estimated from the
            current classifier, i.e. after ``t - 1`` steps (the reference's timing). Only when
            the KL term is on and ``prior == "estimate"``. Each must be >= 2: before
            iteration 1 the current classifier is the initial one, which set the prior
            already, so t = 1 would be the same as no update (``()``).
        bias_init: where the initial bias comes from: "query", the mean query score
            (RePRI's initial classifier: it reads the query), or "support", the threshold
            that best separates the support's own foreground (highest IoU on the labelled
            support pixels): with no loss term on the query, such a method never reads it.
        reference: reproduce the reference code: ``iterations - 1`` steps, 1 added to the KL
            weight at each re-estimation, bias initialised over all query pixels (the caller
            also passes ``query_valid_mask(..., reference=True)``).
        classifier: what predicts the query. "cosine": the per-task cosine classifier
            (prototype ``w``, bias ``b``) fitted by the loop, i.e. every method of RePRI's
            family, the inductive baselines included. The meta-learned peers' own
            inference, one forward pass without fitting or prior (``iterations`` must be 0):
            "panet", PANet's prototype classifier (foreground and background prototypes by
            masked average pooling of the support, shots averaged; ``tau * cos`` with each,
            softmax over the two; ``tau`` is PANet's scale, 20). It has no parameter, so it
            runs on any features: on the PANet-style peer's it is that peer's own inference,
            on a base model's it is PANet's classifier on cross-entropy features. "pfenet",
            the PFENet-style peer's own head, which needs that model (the study loads it
            from its checkpoint; any other checkpoint is refused).
    """

    name: str = "repri"
    iterations: int = 50
    lr: float = 0.025
    tau: float = 20.0
    ce_weight: float = 1.0
    ent_weight: float | str = AUTO
    kl_weight: float | str = AUTO
    prior: Literal["estimate", "oracle"] = "estimate"
    prior_delta: float = 0.0
    t_pi: tuple[int, ...] = (10,)
    bias_init: Literal["query", "support"] = "query"
    reference: bool = False
    classifier: Literal["cosine", "panet", "pfenet"] = "cosine"

    def __post_init__(self) -> None:
        if self.classifier not in CLASSIFIERS:
            raise ConfigError(f"MethodConfig.classifier={self.classifier!r}: use one of "
                             f"{', '.join(CLASSIFIERS)}")
        if self.classifier != "cosine" and (self.iterations != 0 or self.prior != "estimate"):
            raise ConfigError(
                f"MethodConfig {self.name!r}: the {self.classifier} classifier is one forward "
                "pass of the peer (no fitting, no prior): set iterations=0 and no oracle prior"
            )
        for field in ("ent_weight", "kl_weight"):
            value = getattr(self, field)
            if value != AUTO and not (isinstance(value, (int, float)) and value >= 0):
                raise ConfigError(f"MethodConfig.{field}={value!r}: use a number >= 0 or 'auto'")
        if self.iterations < 0 or self.lr <= 0 or self.tau <= 0:
            raise ConfigError(f"MethodConfig {self.name!r}: need iterations >= 0, lr > 0, tau > 0")
        if self.prior not in ("estimate", "oracle"):
            raise ConfigError(f"MethodConfig.prior={self.prior!r}: use 'estimate' or 'oracle'")
        if self.bias_init not in ("query", "support"):
            raise ConfigError(f"MethodConfig.bias_init={self.bias_init!r}: use 'query' or "
                             "'support'")
        if self.prior_delta != 0 and self.prior != "oracle":
            raise ConfigError("MethodConfig.prior_delta perturbs the oracle prior; "
                             "set prior='oracle'")
        if any(t < 2 for t in self.t_pi):
            raise ConfigError(
                f"MethodConfig.t_pi={self.t_pi}: each update must come at iteration 2 or "
                "later (t = 1 re-estimates from the initial classifier, which set the prior "
                "already: write t_pi=[] for no update)"
            )

    @property
    def inductive(self) -> bool:
        """True when nothing the method computes depends on the query: the bias comes from
        the support and no loss term reads the query (its predictions are the output); the
        peers' own inference is one forward pass of the query, so it is inductive."""
        if self.classifier != "cosine":
            return True
        _, ent, kl = self.loss_weights(1)
        return self.bias_init == "support" and ent == 0 and kl == 0

    @property
    def steps(self) -> int:
        """Number of gradient steps actually taken."""
        return max(self.iterations - 1, 0) if self.reference else self.iterations

    def loss_weights(self, shots: int) -> tuple[float, float, float]:
        """(ce, entropy, kl) weights for ``shots``-shot tasks."""

        def resolve(v: float | str) -> float:
            return 1.0 / shots if v == AUTO else float(v)

        return float(self.ce_weight), resolve(self.ent_weight), resolve(self.kl_weight)


METHODS: dict[str, MethodConfig] = {
    # Inductive: the query is never read (prototype and bias from the support alone).
    "inductive": MethodConfig(name="inductive", iterations=0, ent_weight=0.0, kl_weight=0.0,
                              bias_init="support"),
    "ce_support": MethodConfig(name="ce_support", ent_weight=0.0, kl_weight=0.0,
                               bias_init="support"),
    # RePRI's initial classifier and its ablations: the bias is the mean query score.
    "prototype": MethodConfig(name="prototype", iterations=0, ent_weight=0.0, kl_weight=0.0),
    "ce": MethodConfig(name="ce", ent_weight=0.0, kl_weight=0.0),
    "ce_h": MethodConfig(name="ce_h", kl_weight=0.0),
    "ce_kl": MethodConfig(name="ce_kl", ent_weight=0.0),
    # RePRI as the paper's text describes it: 50 steps, no bump of the KL weight, the losses
    # and the prior over the query's padding-valid pixels (no ground truth at inference).
    "repri": MethodConfig(name="repri"),
    # RePRI as the authors' code runs it: 49 steps, KL weight + 1 at the prior update, the
    # query's 255 pixels (ground truth) dropped from the losses and the prior.
    "repri_reference": MethodConfig(name="repri_reference", reference=True),
    # The authors' oracle (scripts/oracle.sh): the true foreground share as prior, 300
    # iterations, weights CE 1, KL 1, H 0.1 whatever the shots.
    "oracle_repri": MethodConfig(name="oracle_repri", iterations=300, ent_weight=0.1,
                                 kl_weight=1.0, prior="oracle", t_pi=()),
    # The same oracle prior at RePRI's own settings (50 iterations, weights 1/K).
    "oracle_repri_weights": MethodConfig(name="oracle_repri_weights", prior="oracle", t_pi=()),
    # The meta-learned peers' own inference (fsstools.inference.peers): one forward pass,
    # no fitting and no foreground prior (their rows report pi as NaN).
    "panet": MethodConfig(name="panet", classifier="panet", iterations=0, ent_weight=0.0,
                          kl_weight=0.0, t_pi=()),
    "pfenet": MethodConfig(name="pfenet", classifier="pfenet", iterations=0, ent_weight=0.0,
                           kl_weight=0.0, t_pi=()),
}
"""The methods of the study; :func:`resolve_method` gives the reference-compatible variant of
any of them and variants with other settings."""


def resolve_method(
    spec: str | MethodConfig | Mapping[str, Any], reference: bool = False
) -> MethodConfig:
    """The method a name, a config or a mapping describes.

    Args:
        spec: a key of :data:`METHODS`; a :class:`MethodConfig`; or a mapping with ``name``
            (its label), optionally ``base`` (a key of :data:`METHODS`, default ``name``
            when that is one, else the defaults) and any other fields, e.g.
            ``{"name": "repri_tpi2", "base": "repri", "t_pi": [2]}``.
        reference: return the reference-compatible variant.

    Raises:
        ValueError: an unknown name or field, or a value the method rejects; the message
            lists the valid names.
    """
    if isinstance(spec, MethodConfig):
        m = spec
    elif isinstance(spec, str):
        if spec not in METHODS:
            raise ConfigError(f"unknown method {spec!r}{did_you_mean(spec, METHODS)}; known "
                              f"methods: {', '.join(METHODS)}, or a variant such as "
                              "{name: repri_tpi2, base: repri, t_pi: [2]}")
        m = METHODS[spec]
    elif isinstance(spec, Mapping):
        fields = dict(spec)
        name = fields.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"method variant {fields} needs a 'name' (its label)")
        base = fields.pop("base", name if name in METHODS else None)
        if base is not None and base not in METHODS:
            raise ConfigError(
                f"method variant {name!r}: unknown base {base!r}{did_you_mean(base, METHODS)}; "
                "known methods: "
                f"{', '.join(METHODS)}"
            )
        data = {**to_dict(METHODS[base] if base else MethodConfig()), **fields}
        try:
            m = from_dict(MethodConfig, data, where=f"method {name}")
        except ConfigError as err:
            raise ConfigError(str(err)) from None
    else:
        raise ConfigError(f"a method is a name, a MethodConfig or a mapping, got {spec!r}")
    return dataclasses.replace(m, reference=True) if reference else m


def resolve_methods(
    specs: Sequence[str | MethodConfig | Mapping[str, Any]] | Mapping[str, MethodConfig],
    reference: bool = False,
) -> dict[str, MethodConfig]:
    """Label -> method for a list of specs (labelled by their names) or a mapping of labels
    to configs; labels must be unique."""
    if isinstance(specs, Mapping):
        items = [dataclasses.replace(resolve_method(m, reference), name=label)
                 for label, m in specs.items()]
    else:
        items = [resolve_method(m, reference) for m in specs]
    out: dict[str, MethodConfig] = {}
    for m in items:
        if m.name in out:
            raise ConfigError(f"method label {m.name!r} is used twice; give each a unique name")
        out[m.name] = m
    return out
