"""DIaM's inference written out straight: one task at a time, whole tensors, autograd, SGD.

It follows the authors' ``Classifier`` (src/classifier.py of github.com/sinahmr/DIaM) step
by step: weights kept as (C, K) as theirs, the folded probabilities built by ``clone`` and
in-place edits, the teacher re-scored every iteration, the loss summed and back-propagated,
then the prior re-estimated after the steps in ``pi_update_at``. The logits are a plain
``matmul``: their ``einsum('bochw,bcC->boChw')`` computes the same numbers but runs 10-20x
slower on CPU in torch 2.x, which would flatter any comparison.

It is what ``tests/test_generalized.py`` holds :func:`fsstools.inference.generalized.run_gfss`
equal to and what ``bench/diam.py`` times it against. Support labels follow the authors'
protocol: background 0 (base-class pixels included), novel classes, 255.
"""

from __future__ import annotations

import torch

from fsstools.inference.generalized import GFSSConfig, GFSSResult

E = 1e-10  # the authors' constant, written where they write it


def _valid_mean(t: torch.Tensor, valid: torch.Tensor, dim) -> torch.Tensor:
    return (valid * t).sum(dim=dim) / (valid.sum(dim=dim) + E)


def _one_hot(labels: torch.Tensor, k: int) -> torch.Tensor:
    """(..., h, w) -> (..., k, h, w) one-hot, 255 counted as class 0 (the losses mask it)."""
    lab = torch.where(labels == 255, 0, labels)
    return torch.nn.functional.one_hot(lab, k).movedim(-1, -3).to(torch.get_default_dtype())


def reference_task(cfg: GFSSConfig, base_weight, base_bias, fs, ls, fq, valid_q, n_novel,
                   lq=None, trace=False):
    """One task. fs (S, C, h, w), ls (S, h, w), fq (C, h, w), valid_q (h, w), lq (h, w).

    Returns (logits (K, h, w), pi (K,), weight (K, C), bias (K,), traces name -> (T,)).
    """
    dt = fs.dtype
    n_bg = base_weight.shape[0]
    K = n_bg + n_novel
    S, C, h, w = fs.shape
    # init_prototypes: masked mean over every support pixel of the class, then L2-normalised
    novel_w = torch.zeros(C, n_novel, dtype=dt)
    for cls in range(n_bg, K):
        mask = (ls == cls).unsqueeze(1).to(dt)  # (S, 1, h, w)
        novel_w[:, cls - n_bg] = _valid_mean(fs, mask, (0, 2, 3)).squeeze()
    novel_w = novel_w / (novel_w.norm(dim=0, keepdim=True) + E)
    novel_b = torch.zeros(n_novel, dtype=dt)
    snap_w, snap_b = base_weight.T.clone().to(dt), base_bias.clone().to(dt)  # (C, n_bg)
    base_w, base_b = snap_w.clone(), snap_b.clone()

    fs_flat, fq_flat = fs.reshape(S, C, h * w), fq.reshape(1, C, h * w)
    valid_q = valid_q.reshape(1, h * w).to(dt)
    valid_s = (ls != 255).reshape(S, h * w).to(dt)
    one_hot_s = _one_hot(ls, K).reshape(S, K, h * w).to(dt)
    wce = torch.ones(1, K, 1, dtype=dt)
    wce[:, 0] = cfg.bg_ce_weight_one_shot if S // n_novel == 1 else cfg.bg_ce_weight

    def logits(f):  # (o, C, N) -> (o, K, N)
        weight = torch.cat([base_w, novel_w], dim=1)
        bias = torch.cat([base_b, novel_b])
        return torch.matmul(weight.T, f) + bias.view(1, -1, 1)

    def marginal_of(z):
        return _valid_mean(torch.softmax(z, dim=1).detach(), valid_q.unsqueeze(1), (0, 2))

    true_pi = None
    if lq is not None:
        true_pi = _valid_mean(_one_hot(lq, K).reshape(1, K, h * w).to(dt),
                              valid_q.unsqueeze(1), (0, 2))
    with torch.no_grad():
        z0 = logits(fq_flat)
    if cfg.pi == "upperbound":
        pi = true_pi
    elif cfg.pi == "self":
        pi = marginal_of(z0)
    elif cfg.pi == "imglvl":
        pi = marginal_of(z0.masked_fill((true_pi == 0).view(1, K, 1), float("-inf")))
    else:
        pi = torch.full((K,), 1 / K, dtype=dt)

    params = [novel_w, novel_b] + ([base_w, base_b] if cfg.tune_base else [])
    for prm in params:
        prm.requires_grad_(True)
    rows = {k: [] for k in ("loss", "ce", "kl", "entropy", "kd")}

    def loss_terms():
        proba_s = torch.softmax(logits(fs_flat), dim=1)  # (S, K, N)
        proba_q = torch.softmax(logits(fq_flat), dim=1)  # (1, K, N)
        snapshot = torch.softmax(torch.matmul(snap_w.T, fq_flat) + snap_b.view(1, -1, 1), dim=1)
        # distillation: the student's novel mass folded into background
        student = proba_q.clone()[:, :n_bg]
        student[:, 0] += proba_q[:, n_bg:].sum(dim=1)
        if cfg.kd_direction == "student_teacher":
            kd = (student * torch.log(E + student / (E + snapshot))).sum(dim=1)
        else:
            kd = (snapshot * torch.log(E + snapshot / (E + student))).sum(dim=1)
        kd = _valid_mean(kd, valid_q, (0, 1))
        # entropies
        entropy = -(proba_q * torch.log(proba_q + E)).sum(dim=1)
        entropy = _valid_mean(entropy, valid_q, (0, 1))
        marginal = _valid_mean(proba_q, valid_q.unsqueeze(1), (0, 2))  # (K,)
        kl = (marginal * torch.log(E + marginal / (pi + E))).sum()
        # CE: base probabilities folded into background, class-weighted
        folded = proba_s.clone()
        folded[:, 0] += folded[:, 1:n_bg].sum(dim=1)
        folded[:, 1:n_bg] = 0.0
        ce = -(one_hot_s * torch.log(folded + E))
        ce = _valid_mean((ce * wce).sum(dim=1), valid_s, (0, 1))
        loss = (cfg.ce_weight * ce + cfg.kl_weight * kl + cfg.ent_weight * entropy
                + cfg.kd_weight * kd)
        return loss, {"loss": loss, "ce": ce, "kl": kl, "entropy": entropy, "kd": kd}

    for iteration in range(cfg.iterations):
        loss, values = loss_terms()
        for k, v in values.items():
            rows[k].append(v.detach())
        loss.backward()
        with torch.no_grad():  # torch.optim.SGD's step without momentum or weight decay
            for prm in params:
                if prm.grad is not None:
                    prm.add_(prm.grad, alpha=-cfg.lr)
                    prm.grad = None
        if iteration + 1 in cfg.pi_update_at and cfg.pi == "self" and cfg.kl_weight != 0:
            with torch.no_grad():
                pi = marginal_of(logits(fq_flat))
    with torch.no_grad():
        if trace:
            _, values = loss_terms()
            for k, v in values.items():
                rows[k].append(v)
        out = logits(fq_flat).reshape(K, h, w)
        weight = torch.cat([base_w, novel_w], dim=1).T
        bias = torch.cat([base_b, novel_b])
    traces = {k: torch.stack(v) for k, v in rows.items()} if trace else None
    return out, pi, weight.detach(), bias.detach(), traces


def run_reference(cfg: GFSSConfig, base_weight, base_bias, support_feats, support_labels,
                  query_feats, query_valid, n_novel, query_labels=None, trace=False
                  ) -> GFSSResult:
    """:func:`fsstools.inference.generalized.run_gfss`'s signature, one query at a time."""
    outs = []
    for b in range(query_feats.shape[0]):
        s = 0 if support_feats.shape[0] == 1 else b
        outs.append(reference_task(
            cfg, base_weight, base_bias, support_feats[s], support_labels[s], query_feats[b],
            query_valid[b], n_novel, None if query_labels is None else query_labels[b], trace))
    traces = None
    if trace:
        traces = {k: torch.stack([o[4][k] for o in outs], dim=1) for k in outs[0][4]}
    return GFSSResult(*(torch.stack([o[i] for o in outs]) for i in range(4)), traces=traces)
