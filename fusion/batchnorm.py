"""Merging BatchNorm running statistics (docs/method.md; paper Sec. 3.3 / Table 4).

A BatchNorm layer's buffers summarise the activations a model saw as a Gaussian
(mean ``mu_k``, biased variance ``var_k``) estimated from ``n_k`` batches. The
merged model should normalise with the statistics of all the data together, so
the K Gaussians are pooled into one:

    pi_k = n_k / N,  N = sum_k n_k
    mu   = sum_k pi_k mu_k
    var  = sum_k pi_k (var_k + (mu_k - mu)^2)
    num_batches_tracked = N

The ``(mu_k - mu)^2`` term is the spread between the models' means; averaging
``running_var`` like a weight drops it and under-estimates the variance.

Rules (``buffers=`` of every merge):
- ``pooled``: the formula above, pi_k from ``num_batches_tracked``; counter = N.
- ``pooled_by_weight``: the same pooling with pi_k = the merge weights (for
  interpolation paths, where the endpoints must be the models themselves);
  counter = sum of the counters of the models with non-zero weight.
- ``average``: mean and variance averaged with the merge weights like
  parameters (the common but biased practice, kept for ablations); counter as
  ``pooled_by_weight``.
- ``first``: model 0's buffers unchanged (the paper's "parameters only" ablation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

BUFFER_RULES = ("pooled", "pooled_by_weight", "average", "first")


def check_rule(rule: str) -> str:
    if rule not in BUFFER_RULES:
        raise ValueError(f"unknown buffers rule {rule!r}; choose one of {BUFFER_RULES}")
    return rule


def merge_counters(counts: Sequence[torch.Tensor], weights: Sequence[float], rule: str,
                   key: str = "num_batches_tracked") -> torch.Tensor:
    """Merged ``num_batches_tracked``: a sum (or model 0's), in the counters' own dtype.

    The sum is taken in int64 and refused when it does not fit the input dtype,
    so a counter is never silently truncated or turned into a float.
    """
    check_rule(rule)
    dtype = counts[0].dtype
    if rule == "first":
        return counts[0].clone()
    chosen = [c for c, w in zip(counts, weights) if rule == "pooled" or w > 0.0]
    if dtype.is_floating_point or dtype == torch.bool:
        raise ValueError(f"{key}: counter of dtype {dtype}, expected an integer dtype")
    info = torch.iinfo(dtype)
    if counts[0].dim() == 0:  # the usual scalar counter: exact Python integers
        total = sum(int(c) for c in chosen)
        if not info.min <= total <= info.max:
            raise ValueError(f"{key}: merged counter {total} overflows {dtype}")
        return torch.tensor(total, dtype=dtype)
    total = torch.stack([c.to(torch.int64) for c in chosen]).sum(0)
    if int(total.max()) > info.max or int(total.min()) < info.min:
        raise ValueError(f"{key}: merged counter {total.tolist()} overflows {dtype}")
    return total.to(dtype)


def pooling_weights(counts: Sequence[torch.Tensor] | None, weights: Sequence[float], rule: str,
                    key: str) -> list[float]:
    """pi_k of one layer: from the counters (``pooled``) or the merge weights."""
    if rule != "pooled":
        return list(weights)
    if counts is None:
        raise ValueError(f"{key}: no num_batches_tracked to pool by; use buffers='pooled_by_weight'")
    numbers = [int(c) if c.dim() == 0 else int(c.sum()) for c in counts]
    if any(n < 0 for n in numbers) or sum(numbers) == 0:
        raise ValueError(f"{key}: num_batches_tracked {numbers} cannot weight a pooling "
                         f"(need non-negative counts, not all zero); use buffers='pooled_by_weight'")
    total = sum(numbers)
    return [n / total for n in numbers]


def merge_batchnorm_statistics(
    means: Sequence[torch.Tensor],
    variances: Sequence[torch.Tensor],
    counts: Sequence[torch.Tensor] | None = None,
    weights: Sequence[float] | None = None,
    rule: str = "pooled",
    key: str = "batchnorm",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Merge one BatchNorm layer's statistics from K models.

    ``means`` / ``variances`` / ``counts`` hold each model's ``running_mean``,
    ``running_var`` and ``num_batches_tracked``; ``weights`` are the merge weights
    (default 1/K); ``key`` names the layer in errors. Returns (mean, var, count)
    in the inputs' dtypes; count is None when ``counts`` is None. Arithmetic is
    in float64.
    """
    check_rule(rule)
    count_models = len(means)
    weights = list(weights) if weights is not None else [1.0 / count_models] * count_models
    if rule == "first":
        return means[0].clone(), variances[0].clone(), None if counts is None else counts[0].clone()
    pi = torch.tensor(pooling_weights(counts, weights, rule, key), dtype=torch.float64)
    mean64, var64 = pool_statistics(pi.view(-1, *([1] * means[0].dim())),
                                    torch.stack(means).to(torch.float64),
                                    torch.stack(variances).to(torch.float64), rule)
    count = None if counts is None else merge_counters(counts, weights, rule, key)
    return mean64.to(means[0].dtype), var64.to(variances[0].dtype), count


def pool_statistics(pi: torch.Tensor, mu_k: torch.Tensor, var_k: torch.Tensor,
                    rule: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The pooling arithmetic in float64, model index first: ``mu_k``/``var_k`` of shape
    (K, ...) and ``pi`` broadcastable to them (per layer, or per channel when many
    layers are merged as one tensor). Elementwise, so batching layers changes nothing."""
    if rule == "first":
        return mu_k[0], var_k[0]
    mean64 = (pi * mu_k).sum(0)
    if rule == "average":
        return mean64, (pi * var_k).sum(0)
    return mean64, (pi * (var_k + (mu_k - mean64).square())).sum(0)
