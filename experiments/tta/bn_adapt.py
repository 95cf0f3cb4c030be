"""BatchNorm adaptation: normalise with the statistics of the test batch (Schneider et al.,
"Improving robustness against common corruptions by covariate shift adaptation",
NeurIPS 2020).

With prior strength N (Schneider et al., Eq. 3) the source statistics count as N samples
and the batch's as n = B images (the paper counts images, not feature-map positions):

    mu  = N / (N + n) * mu_source  + n / (N + n) * mu_batch
    var = N / (N + n) * var_source + n / (N + n) * var_batch

N = 0 is plain test-batch normalisation (what Tent and SAR use for BN models); N -> inf
is the source model. No parameter is trained and nothing persists between batches.
Models without BatchNorm pass through unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from experiments.tta.common import Adapter, Forward, plain_forward, use_batch_statistics


def _blended_batch_norm(module: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    prior = float(module.tta_prior)
    if prior == 0:
        return F.batch_norm(x, None, None, module.weight, module.bias, True, 0.0, module.eps)
    dims = [0, *range(2, x.ndim)]
    mu_t = x.mean(dim=dims)
    var_t = x.var(dim=dims, unbiased=False)
    n = x.shape[0]
    a = prior / (prior + n)
    mu = a * module.running_mean + (1 - a) * mu_t
    var = a * module.running_var + (1 - a) * var_t
    shape = (1, -1, *([1] * (x.ndim - 2)))
    out = (x - mu.view(shape)) * torch.rsqrt(var.view(shape) + module.eps)
    if module.weight is not None:
        out = out * module.weight.view(shape) + module.bias.view(shape)
    return out


def adapt_batch_norm(model: nn.Module, prior: float = 0.0) -> nn.Module:
    """Make every BatchNorm of ``model`` normalise with test-batch statistics blended with
    its running (source) statistics at prior strength ``prior`` (in place; buffers and
    state-dict keys are untouched). Returns ``model`` in eval mode otherwise."""
    if prior < 0:
        raise ValueError(f"prior strength must be >= 0, got {prior}")
    model.eval()
    use_batch_statistics(model)
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.tta_prior = prior
            # an instance attribute shadows the class's forward; the state dict is unchanged
            module.forward = _blended_batch_norm.__get__(module)
    return model


def restore_batch_norm(model: nn.Module) -> nn.Module:
    """Undo ``adapt_batch_norm``: running statistics again, eval mode."""
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.__dict__.pop("forward", None)
            module.__dict__.pop("tta_prior", None)
            module.track_running_stats = True
    return model.eval()


class BNAdapt(Adapter):
    """Test-batch (optionally prior-blended) BatchNorm statistics, no training."""

    name = "bn_adapt"

    def __init__(self, model: nn.Module, forward: Forward = plain_forward, prior: float = 0.0) -> None:
        adapt_batch_norm(model, prior)
        super().__init__(model, forward)
        self.prior = prior
