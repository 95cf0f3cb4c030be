"""Merging baselines from the model-fusion literature, on the same state dicts.

All three act on float parameters only. BatchNorm statistics are not points of
a vector space (a "task vector" of ``running_var`` can drive a variance
negative), so every baseline merges them with ``fusion.batchnorm`` instead:
task arithmetic and TIES pool the fine-tuned models' statistics (``buffers``,
default ``pooled`` by ``num_batches_tracked``; the base model's buffers are
ignored), SLERP pools them with the interpolation weights (1 - t, t). Counters
and other buffers follow the same rules as ``fusion.merge_linear``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .linear import merge_linear, plan_merge
from .state import PARAMETER, StateDict, check_compatible, check_finite


def _split(state_dicts: Sequence[StateDict]) -> tuple[list[str], list[str], list[str]]:
    """All keys, float-parameter keys and buffer keys, after the compatibility checks."""
    keys = check_compatible(state_dicts)
    check_finite(state_dicts)
    units = plan_merge(keys, {k: state_dicts[0][k].dtype for k in keys})
    parameters = [u.keys[0] for u in units if u.kind == PARAMETER]
    buffers = [k for u in units if u.kind != PARAMETER for k in u.keys]
    return keys, parameters, buffers


def _merge_buffers(state_dicts: Sequence[StateDict], keys: list[str], weights: Sequence[float] | None,
                   rule: str) -> dict[str, torch.Tensor]:
    if not keys:
        return {}
    return merge_linear([{k: sd[k] for k in keys} for sd in state_dicts], weights, rule)


def _check_finetuned(finetuned: Sequence[StateDict]) -> list[StateDict]:
    finetuned = list(finetuned)
    if not finetuned:
        raise ValueError("no fine-tuned models given")
    return finetuned


def task_arithmetic(base: StateDict, finetuned: Sequence[StateDict], scale: float = 1.0,
                    buffers: str = "pooled") -> dict[str, torch.Tensor]:
    """Task arithmetic (Ilharco et al., 2023): theta = theta_0 + scale * sum_k (theta_k - theta_0).

    ``base`` is the shared pretrained model theta_0; with K models and
    ``scale = 1/K`` this is the midpoint merge of the parameters.
    """
    finetuned = _check_finetuned(finetuned)
    keys, parameters, buffer_keys = _split([base, *finetuned])
    merged = _merge_buffers(finetuned, buffer_keys, None, buffers)
    for key in parameters:
        theta0 = base[key].to(torch.float64)
        tau = torch.zeros_like(theta0)
        for model in finetuned:
            tau += model[key].to(torch.float64) - theta0
        merged[key] = (theta0 + float(scale) * tau).to(base[key].dtype)
    return {k: merged[k] for k in keys}


def ties_merging(base: StateDict, finetuned: Sequence[StateDict], density: float = 0.2,
                 scale: float = 1.0, buffers: str = "pooled") -> dict[str, torch.Tensor]:
    """TIES merging (Yadav et al., NeurIPS 2023, Sec. 3): trim, elect sign, disjoint merge.

    1. Trim: of each task vector tau_k = theta_k - theta_0 (all its float
       parameters together) keep the ``ceil(density * n)`` entries of largest
       magnitude (ties at the threshold are all kept), zero the rest.
    2. Elect: gamma = sign(sum_k trimmed tau_k), per entry.
    3. Disjoint mean: average the trimmed tau_k whose sign equals gamma
       (zero where none does); theta = theta_0 + scale * that mean.
    """
    finetuned = _check_finetuned(finetuned)
    density = float(density)
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density {density} outside (0, 1]")
    keys, parameters, buffer_keys = _split([base, *finetuned])
    merged = _merge_buffers(finetuned, buffer_keys, None, buffers)
    if not parameters:
        return {k: merged[k] for k in keys}
    trimmed = []  # per model: key -> trimmed task vector (float64)
    for model in finetuned:
        tau = {k: model[k].to(torch.float64) - base[k].to(torch.float64) for k in parameters}
        magnitudes = torch.cat([t.reshape(-1).abs() for t in tau.values()])
        keep = math.ceil(density * magnitudes.numel())
        threshold = torch.topk(magnitudes, keep, sorted=False).values.min()
        trimmed.append({k: torch.where(t.abs() >= threshold, t, torch.zeros_like(t))
                        for k, t in tau.items()})
    for key in parameters:
        stacked = torch.stack([t[key] for t in trimmed])
        elected = torch.sign(stacked.sum(0))
        agree = (torch.sign(stacked) == elected) & (stacked != 0)
        total = torch.where(agree, stacked, torch.zeros_like(stacked)).sum(0)
        mean = total / agree.sum(0).clamp(min=1)
        merged[key] = (base[key].to(torch.float64) + float(scale) * mean).to(base[key].dtype)
    return {k: merged[k] for k in keys}


def _slerp_tensor(a: torch.Tensor, b: torch.Tensor, t: float, colinear: float) -> torch.Tensor:
    va, vb = a.to(torch.float64), b.to(torch.float64)
    norm_a, norm_b = float(va.norm()), float(vb.norm())
    if norm_a == 0.0 or norm_b == 0.0:
        return ((1.0 - t) * va + t * vb).to(a.dtype)
    cosine = max(-1.0, min(1.0, float((va * vb).sum()) / (norm_a * norm_b)))
    if abs(cosine) > colinear:  # the great circle is ill-defined: the chord is as good
        return ((1.0 - t) * va + t * vb).to(a.dtype)
    omega = math.acos(cosine)
    sin_omega = math.sin(omega)
    mixed = (math.sin((1.0 - t) * omega) / sin_omega) * va + (math.sin(t * omega) / sin_omega) * vb
    return mixed.to(a.dtype)


def slerp(a: StateDict, b: StateDict, t: float, buffers: str = "pooled_by_weight",
          colinear: float = 0.9995) -> dict[str, torch.Tensor]:
    """Spherical interpolation of two models, tensor by tensor (Shoemake, 1985).

    slerp(a, b; t) = sin((1-t) W)/sin W a + sin(t W)/sin W b, with W the angle
    between a and b flattened. Tensors of equal norm keep that norm along the
    path. Where |cos W| > ``colinear`` (or a tensor is zero) it falls back to
    the straight line (1-t) a + t b. ``t`` in [0, 1]; t = 0 gives a, t = 1 gives b.
    """
    t = float(t)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t {t} outside [0, 1]")
    keys, parameters, buffer_keys = _split([a, b])
    merged = _merge_buffers([a, b], buffer_keys, [1.0 - t, t], buffers)
    for key in parameters:
        merged[key] = _slerp_tensor(a[key], b[key], t, colinear)
    return {k: merged[k] for k in keys}
