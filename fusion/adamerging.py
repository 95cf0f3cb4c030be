"""Layer-wise AdaMerging (Yang et al., ICLR 2024, "AdaMerging: Adaptive Model Merging for
Multi-Task Learning", arXiv:2310.02575).

Task arithmetic with one coefficient per task and per layer,

    theta_l(lambda) = theta_0,l + sum_k lambda_k,l tau_k,l,   tau_k = theta_k - theta_0,

where the coefficients are learned at test time, without labels, by minimising
the entropy of the merged model's predictions on unlabelled images (the paper
finds prediction entropy tracks the supervised loss). A "layer" here is one
float parameter tensor of the state dict (a conv weight and its bias get
separate coefficients), as in the paper's layer-wise variant.

BatchNorm: the statistics are not learned. They are pooled once from the
fine-tuned models by the ``buffers`` rule (theta_0's are ignored, as in task
arithmetic) and used as they are: the model runs in eval mode throughout, so
the entropy objective never sees batch statistics of the test stream and the
returned merge uses exactly the statistics the coefficients were tuned with.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import torch

from .baselines import _check_finetuned, _merge_buffers, _split
from .forward import (Forward, check_state_keys, evaluating, log_probabilities, model_device,
                      on_device, run)
from .state import StateDict, _names

log = logging.getLogger(__name__)

Coefficients = Mapping[str, Sequence[float] | torch.Tensor] | Sequence[float] | torch.Tensor


def _coefficient_table(coefficients: Coefficients, parameters: list[str],
                       count: int) -> dict[str, torch.Tensor]:
    """key -> the K coefficients of that layer, in float64, after the checks.

    A mapping gives each parameter its own K numbers; a plain sequence of K
    numbers applies to every parameter (task-wise AdaMerging).
    """
    if isinstance(coefficients, Mapping):
        missing = [k for k in parameters if k not in coefficients]
        extra = [k for k in coefficients if k not in set(parameters)]
        if missing:
            raise ValueError(f"no coefficients for parameters: {_names(missing)}")
        if extra:
            raise ValueError(f"coefficients for keys that are not float parameters: {_names(extra)}")
        table = {k: torch.as_tensor(coefficients[k], dtype=torch.float64).reshape(-1)
                 for k in parameters}
    else:
        shared = torch.as_tensor(coefficients, dtype=torch.float64).reshape(-1)
        table = {k: shared for k in parameters}
    wrong = [f"{k} ({v.numel()})" for k, v in table.items() if v.numel() != count]
    if wrong:
        raise ValueError(f"expected {count} coefficients (one per model) for: {_names(wrong)}")
    bad = [k for k, v in table.items() if not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"non-finite coefficients for: {_names(bad)}")
    return table


def merge_layerwise(base: StateDict, finetuned: Sequence[StateDict], coefficients: Coefficients,
                    buffers: str = "pooled") -> dict[str, torch.Tensor]:
    """theta_l = theta_0,l + sum_k lambda_k,l (theta_k,l - theta_0,l) for every float parameter l.

    ``coefficients``: ``{key: K numbers}`` for every float parameter, or one
    sequence of K numbers for all. BatchNorm statistics are pooled from the
    fine-tuned models by ``buffers``. With lambda = 1/K everywhere this is the
    midpoint ``fusion.merge_linear(finetuned)``. Float64 arithmetic, base dtypes.
    """
    finetuned = _check_finetuned(finetuned)
    keys, parameters, buffer_keys = _split([base, *finetuned])
    table = _coefficient_table(coefficients, parameters, len(finetuned))
    merged = _merge_buffers(finetuned, buffer_keys, None, buffers)
    for key in parameters:
        theta0 = base[key].to(torch.float64)
        update = torch.zeros_like(theta0)
        for weight, model in zip(table[key].tolist(), finetuned):
            update += weight * (model[key].to(torch.float64) - theta0)
        merged[key] = (theta0 + update).to(base[key].dtype)
    return {k: merged[k] for k in keys}


def prediction_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean over images and pixels of -sum_c p_c log p_c (classes on axis 1)."""
    log_p = log_probabilities(logits)
    return -(log_p.exp() * log_p).sum(1).mean()


def _stream(batches: Iterable[Any]) -> Iterator[Any]:
    """The batches again and again; ends when a pass yields nothing (a spent stream)."""
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            return


class AdaMergingResult(NamedTuple):
    coefficients: dict[str, torch.Tensor]  # key -> K coefficients (float64, as used)
    state_dict: dict[str, torch.Tensor]    # merge_layerwise(base, finetuned, coefficients)
    entropy: list[float]                   # objective at each step, before its update


def adamerging(model: torch.nn.Module, base: StateDict, finetuned: Sequence[StateDict],
               batches: Iterable[Any], steps: int = 500, lr: float = 1e-3, init: float = 0.3,
               bounds: tuple[float, float] | None = (0.0, 1.0), buffers: str = "pooled",
               forward: Forward | None = None) -> AdaMergingResult:
    """Learn layer-wise coefficients by entropy minimisation, then merge.

    ``model``: the network (its own weights are not used or changed; the merged
    weights go in through ``torch.func.functional_call``). Each of ``steps``
    steps takes the next batch of ``batches`` (re-iterated when it ends; a
    one-shot stream stops the loop early), computes the mean per-pixel entropy
    of the merged model's predictions and takes one Adam step (``lr``, the
    paper's 1e-3) on all coefficients; all start at ``init`` (the paper's 0.3).
    ``bounds``: coefficients are clamped into this interval when used (our
    choice, keeping each task's update between absent and full; None leaves
    them free). During the optimisation the merged weights are formed in the
    model's dtype on its device (the coefficients are float64); the returned
    merge is recomputed from the state dicts in float64.
    """
    finetuned = _check_finetuned(finetuned)
    _, parameters, buffer_keys = _split([base, *finetuned])
    check_state_keys(model, base, "base")
    steps, lr, init = int(steps), float(lr), float(init)
    if steps < 0 or not lr > 0.0 or not math.isfinite(init):
        raise ValueError(f"need steps >= 0, lr > 0 and a finite init; got {steps}, {lr}, {init}")
    if bounds is not None and not float(bounds[0]) < float(bounds[1]):
        raise ValueError(f"bounds {bounds} are not an interval (low < high)")

    def clamp(raw: torch.Tensor) -> torch.Tensor:
        return raw if bounds is None else raw.clamp(float(bounds[0]), float(bounds[1]))

    device = model_device(model)
    theta0 = on_device({k: base[k] for k in parameters}, model)
    taus = {k: torch.stack([m[k].detach().to(device) - theta0[k] for m in finetuned])
            for k in parameters}
    statistics = on_device(_merge_buffers(finetuned, buffer_keys, None, buffers), model)
    # float64 coefficients (K x L numbers), cast to each parameter's dtype where used
    raw = torch.full((len(finetuned), len(parameters)), init, dtype=torch.float64, device=device,
                     requires_grad=True)
    optimiser = torch.optim.Adam([raw], lr=lr)
    entropy: list[float] = []
    stream = _stream(batches)
    with evaluating(model):
        for _ in range(steps):
            batch = next(stream, None)
            if batch is None:
                if not entropy:
                    raise ValueError("no batches given to adamerging")
                log.warning("adamerging: the batch stream ended after %d of %d steps",
                            len(entropy), steps)
                break
            weights = clamp(raw)
            merged = {k: theta0[k] + torch.tensordot(weights[:, i].to(taus[k].dtype), taus[k], dims=1)
                      for i, k in enumerate(parameters)}
            loss = prediction_entropy(run(model, {**statistics, **merged}, batch, forward))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            entropy.append(float(loss.detach()))
    learned = clamp(raw.detach()).to(torch.float64).cpu()
    coefficients = {k: learned[:, i].clone() for i, k in enumerate(parameters)}
    return AdaMergingResult(coefficients, merge_layerwise(base, finetuned, coefficients, buffers),
                            entropy)
