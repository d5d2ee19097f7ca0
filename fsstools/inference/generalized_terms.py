"""DIaM's loss terms with their closed-form gradients wrt the logits, batched over tasks.

Values follow the authors' formulas, ``EPS`` inside every logarithm and ratio included, and
the gradients differentiate exactly those formulas, so the fast loop
(:mod:`~fsstools.inference.generalized`) agrees with autograd to rounding. Each term is a
per-task mean over pixels, written with pixel weights ``v = valid / (valid count + EPS)``
(the authors' ``_valid_mean``), 0 on ignored and padding pixels.

Every query term is a function of the softmax ``p`` over all classes; with ``D_j`` its
derivative wrt ``p_j`` at a pixel, its gradient wrt the logit ``z_j`` is
``p_j (D_j - sum_i p_i D_i)``; :func:`query_grad` adds the ``D`` of the terms and takes
that product once.
"""

from __future__ import annotations

import torch

from fsstools.constants import EPS

KD_DIRECTIONS = ("student_teacher", "teacher_student")
"""KL(student || teacher), the authors' distillation, or KL(teacher || student)."""


def pixel_weights(valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``valid / (valid.sum() + EPS)`` per row: (G, N) bool -> (G, N)."""
    v = valid.to(dtype)
    return v / (v.sum(dim=1, keepdim=True) + EPS)


def log_ratio_slope(x: torch.Tensor, ref_inv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For ``f(x) = x log(EPS + x / (ref + EPS))``: ``log(EPS + r)`` and ``f'(x)``, with
    ``r = x * ref_inv`` and ``ref_inv = 1 / (ref + EPS)`` (broadcastable to ``x``)."""
    r = x * ref_inv
    log_term = torch.log(r + EPS)
    return log_term, log_term + r / (r + EPS)


def support_ce_step(
    z: torch.Tensor,
    cv: torch.Tensor,
    label: torch.Tensor,
    is_bg: torch.Tensor,
    member: torch.Tensor,
    n_bg: int,
    want_value: bool,
) -> torch.Tensor | None:
    """Turn support logits into the gradient of the class-weighted CE, in place.

    The base classes' probabilities are folded into the background (``q_0 = sum of the
    first n_bg probabilities``, ``q_n = p_n`` for a novel class), so a pixel labelled ``y``
    costs ``-c_y v log(q_y + EPS)``, whose gradient wrt ``z_j`` is
    ``a p_j (q_y - [j in y's set])`` with ``a = c_y v / (q_y + EPS)``.

    Args:
        z: (Bs, G, K, n) logits of G tasks on the pixels of Bs support sets; overwritten
            with the gradient of the CE (before the CE weight multiplies it).
        cv: (Bs, 1, 1, n) class weight times pixel weight of each pixel.
        label: (Bs, 1, 1, n) int64 class of each pixel (0 for background and padding).
        is_bg: (Bs, 1, 1, n) bool, pixel labelled background.
        member: (Bs, 1, K, n) 1 where class j is in the pixel's folded set, else 0.
        n_bg: background + base classes.
        want_value: also return the CE.

    Returns:
        (Bs, G) ``sum_x cv_x (-log(q + EPS))`` when ``want_value``, else None.
    """
    z.sub_(z.amax(dim=2, keepdim=True)).exp_()  # unnormalised probabilities e
    den = z.sum(dim=2, keepdim=True)  # (Bs, G, 1, n)
    q = torch.where(is_bg, z[:, :, :n_bg].sum(dim=2, keepdim=True),
                    z.gather(2, label.expand(z.shape[0], z.shape[1], 1, -1)))
    q.div_(den)
    a = cv / (q + EPS)
    value = None
    if want_value:
        value = -(cv * torch.log(q + EPS)).sum(dim=(2, 3))
    den.reciprocal_()
    # p_j a (q - m_j) = e_j (alpha - beta m_j) with alpha = a q / den, beta = a / den
    beta = a.mul_(den)
    alpha = q.mul_(beta)
    z.mul_(torch.addcmul(alpha, beta, member, value=-1))
    return value


def fold_novel(p: torch.Tensor, n_bg: int) -> torch.Tensor:
    """(B, K, N) probabilities -> (B, n_bg, N): the novel classes' mass added to background."""
    folded = p[:, :n_bg].clone()
    folded[:, 0] += p[:, n_bg:].sum(dim=1)
    return folded


def teacher_terms(teacher: torch.Tensor, direction: str) -> torch.Tensor:
    """What the distillation needs of the frozen teacher's (B, n_bg, N) probabilities,
    computed once: ``1 / (t + EPS)`` (student_teacher) or ``t`` itself (teacher_student)."""
    return 1 / (teacher + EPS) if direction == "student_teacher" else teacher


def distillation(s: torch.Tensor, teacher: torch.Tensor, direction: str
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel distillation and its derivative wrt the folded student ``s``.

    Args:
        s: (B, n_bg, N) the student's folded probabilities (:func:`fold_novel`).
        teacher: (B, n_bg, N) :func:`teacher_terms` of the teacher.
        direction: one of :data:`KD_DIRECTIONS`.

    Returns:
        ((B, N) ``sum_k s log(EPS + s / (t + EPS))`` or ``sum_k t log(EPS + t / (s + EPS))``,
        (B, n_bg, N) its derivative wrt ``s``).
    """
    if direction == "student_teacher":
        log_term, slope = log_ratio_slope(s, teacher)
        return (s * log_term).sum(dim=1), slope
    inv_s = 1 / (s + EPS)
    sigma = teacher * inv_s
    value = (teacher * torch.log(sigma + EPS)).sum(dim=1)
    return value, -(teacher * sigma) * inv_s / (sigma + EPS)


def query_probs(z: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over classes of (B, K, N) query logits and the marginal ``sum_x v p`` (B, K),
    ``v`` (B, 1, N) the pixel weights."""
    p = torch.softmax(z, dim=1)
    return p, (p * v).sum(dim=2)


def query_grad(
    p: torch.Tensor,
    marginal: torch.Tensor,
    v: torch.Tensor,
    pi: torch.Tensor,
    teacher: torch.Tensor | None,
    weights: tuple[float, float, float],
    direction: str,
    n_bg: int,
    want_values: bool,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Gradient wrt the query logits of the weighted query terms, and their values.

    Args:
        p: (B, K, N) and marginal: (B, K), from :func:`query_probs`.
        v: (B, 1, N) pixel weights.
        pi: (B, K) class prior of the KL term.
        teacher: (B, n_bg, N) :func:`teacher_terms`; may be None when the distillation is
            off and ``want_values`` is False.
        weights: (kl, entropy, distillation) weights; a zero weight skips its gradient.
        direction: distillation direction.
        n_bg: background + base classes.
        want_values: also return the unweighted values.

    Returns:
        (B, K, N) gradient and, when ``want_values``, (B,) "kl", "entropy", "kd".
    """
    kl_w, ent_w, kd_w = weights
    values: dict[str, torch.Tensor] = {}
    d = None  # (B, K, N) derivative of the weighted terms wrt p, over v
    if ent_w or want_values:
        log_p = torch.log(p + EPS)
        if want_values:
            values["entropy"] = -(v * p * log_p).sum(dim=(1, 2))
        if ent_w:  # d/dp of -p log(p + EPS) is -(log(p + EPS) + p / (p + EPS))
            d = log_p.add_(p / (p + EPS)).mul_(-ent_w)
    if kd_w or want_values:
        kd, slope = distillation(fold_novel(p, n_bg), teacher, direction)
        if want_values:
            values["kd"] = (v.squeeze(1) * kd).sum(dim=1)
        if kd_w:
            slope = slope.mul_(kd_w)
            if d is None:
                d = torch.zeros_like(p)
            d[:, :n_bg] += slope
            d[:, n_bg:] += slope[:, :1]  # a novel class's mass counts as background
    if kl_w or want_values:
        log_term, slope = log_ratio_slope(marginal, 1 / (pi + EPS))
        if want_values:
            values["kl"] = (marginal * log_term).sum(dim=1)
        if kl_w:
            kl = (kl_w * slope).unsqueeze(2)  # (B, K, 1): the same at every pixel
            d = kl.expand_as(p) if d is None else d.add_(kl)
    if d is None:
        return torch.zeros_like(p), values
    centred = d - (p * d).sum(dim=1, keepdim=True)
    return centred.mul_(p).mul_(v), values
