"""REPAIR (Jordan et al., ICLR 2023, "REPAIR: REnormalizing Permuted Activations for
Interpolation Repair", arXiv:2211.08403).

Interpolating two aligned networks (``fusion.weight_matching``, then
``fusion.apply_permutation`` on B) shrinks the spread of the hidden units'
activations ("variance collapse"), which is a large part of the loss barrier.
REPAIR makes every channel of the interpolated network have the statistics one
would expect on the path between the endpoints:

    mu_alpha = (1 - alpha) mu_A + alpha mu_B,   sigma_alpha = (1 - alpha) sigma_A + alpha sigma_B,

mu and sigma being the channel's mean and standard deviation over a calibration
set. In a BatchNorm network the correction folds into the BatchNorm layers: in
eval mode a BatchNorm output is y = gamma x_hat + beta with x_hat fixed by the
running statistics, so the affine map y -> (y - mu) sigma_alpha / sigma + mu_alpha
is gamma' = gamma sigma_alpha / sigma, beta' = (beta - mu) sigma_alpha / sigma + mu_alpha,
and the repaired network is a plain state dict again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .forward import Forward, check_state_keys, evaluating, listed_batches, on_device, run
from .linear import interpolate
from .state import StateDict, _names


class _Measured(Exception):
    """Raised by the hook of the layer being measured: the rest of the forward is not needed."""


def _channel_moments(model: nn.Module, state: Mapping[str, torch.Tensor], batches: list,
                     layers: Mapping[str, nn.Module], forward: Forward | None,
                     stop: bool = False) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]],
                                                  list[str], dict[str, int]]:
    """Per-channel mean and (biased) std of each layer's output over all ``batches``.

    Returns the moments (float64, on the CPU), the layers in the order the
    forward first reached them, and how many times each was called. ``stop``:
    end each forward once the (single) layer has produced its output.
    """
    sums: dict[str, torch.Tensor] = {}
    squares: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    order: list[str] = []

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            y = output.detach().to(torch.float64).transpose(0, 1).reshape(output.shape[1], -1)
            if name not in sums:
                order.append(name)
                sums[name], squares[name] = torch.zeros_like(y[:, 0]), torch.zeros_like(y[:, 0])
            sums[name] += y.sum(1)
            squares[name] += y.square().sum(1)
            counts[name] = counts.get(name, 0) + y.shape[1]
            if stop:
                raise _Measured
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in layers.items()]
    calls = {name: 0 for name in layers}

    def count(name: str):
        def counted(module: nn.Module, inputs: tuple) -> None:
            calls[name] += 1
        return counted

    handles += [module.register_forward_pre_hook(count(name)) for name, module in layers.items()]
    try:
        for batch in batches:
            try:
                run(model, state, batch, forward)
            except _Measured:
                pass
    finally:
        for handle in handles:
            handle.remove()
    moments = {}
    for name in order:
        mean = sums[name] / counts[name]
        variance = (squares[name] / counts[name] - mean.square()).clamp(min=0.0)
        moments[name] = (mean.cpu(), variance.sqrt().cpu())
    return moments, order, calls


def repair(model: nn.Module, a: StateDict, b: StateDict, batches: Iterable[Any], alpha: float = 0.5,
           buffers: str = "pooled_by_weight", forward: Forward | None = None) -> dict[str, torch.Tensor]:
    """The interpolation (1 - alpha) a + alpha b with every BatchNorm output repaired.

    ``b`` should already be aligned to ``a`` (weight matching). The BatchNorm
    statistics of the interpolation are pooled by ``buffers`` (default
    ``pooled_by_weight``, so alpha = 0 and 1 give the endpoints) and left as
    they are; only each BatchNorm's weight and bias change. ``batches``: the
    calibration set (read 2 + L times for L BatchNorm layers, so it should be
    small). The model runs in eval mode; its own weights are not used or changed.

    Layers are repaired in the order the forward reaches them, each measured
    with the layers before it already repaired, so on the calibration batches
    every channel of every BatchNorm output of the returned model has exactly
    (to rounding) the mean mu_alpha and std sigma_alpha. A channel that is constant
    in the interpolated model (sigma = 0) cannot be rescaled and is only shifted
    to mu_alpha. Each BatchNorm module must be called once per forward.
    """
    merged = interpolate(a, b, alpha, buffers)
    alpha = float(alpha)
    check_state_keys(model, a, "a")
    batches = listed_batches(batches, "repair")
    layers = {name: module for name, module in model.named_modules() if isinstance(module, _BatchNorm)}
    prefixes = {name: name + "." if name else "" for name in layers}
    plain = [name or "<model>" for name in layers if prefixes[name] + "weight" not in merged
             or prefixes[name] + "bias" not in merged]
    if plain:
        raise ValueError(f"BatchNorm layers without affine weight and bias cannot be repaired: "
                         f"{_names(plain)}")
    with torch.no_grad(), evaluating(model):
        endpoint_a, order, calls = _channel_moments(model, on_device(a, model), batches, layers, forward)
        endpoint_b, _, _ = _channel_moments(model, on_device(b, model), batches, layers, forward)
        shared = [name for name, n in calls.items() if n > len(batches)]
        if shared:
            raise ValueError(f"BatchNorm modules called more than once per forward: {_names(shared)}")
        working = on_device(merged, model)  # what the measurements run on
        for name in order:
            weight_key, bias_key = prefixes[name] + "weight", prefixes[name] + "bias"
            (mean_a, std_a), (mean_b, std_b) = endpoint_a[name], endpoint_b[name]
            mean_goal = (1.0 - alpha) * mean_a + alpha * mean_b
            std_goal = (1.0 - alpha) * std_a + alpha * std_b
            moments, _, _ = _channel_moments(model, working, batches, {name: layers[name]}, forward,
                                             stop=True)
            mean, std = moments[name]
            ratio = torch.where(std > 0, std_goal / torch.where(std > 0, std, 1.0), 1.0)
            gamma = merged[weight_key].to(torch.float64)
            beta = merged[bias_key].to(torch.float64)
            merged[weight_key] = (gamma * ratio).to(merged[weight_key].dtype)
            merged[bias_key] = ((beta - mean) * ratio + mean_goal).to(merged[bias_key].dtype)
            working.update(on_device({k: merged[k] for k in (weight_key, bias_key)}, model))
    return merged
