"""Test-time adaptation: BN-adapt, Tent, EATA and SAR over wild test streams.

``build_adapter(method, model, ...)`` constructs any method by name; ``runner.run_stream``
evaluates it online; ``streams`` builds the wild settings and ``corruptions`` the 15
ImageNet-C corruption types.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from experiments.tta.bn_adapt import BNAdapt, adapt_batch_norm, restore_batch_norm
from experiments.tta.common import (Adapter, NoAdaptation, collect_norm_params, configure_model,
                                    entropy, entropy_margin, plain_forward, sar_lr)
from experiments.tta.eata import EATA, fisher_information
from experiments.tta.sar import SAR
from experiments.tta.tent import Tent

METHODS = ("source", "bn_adapt", "tent", "eata", "sar")


def build_adapter(method: str, model: nn.Module, num_classes: int, forward=plain_forward,
                  batch_size: int = 64, fisher_batches: Iterable[torch.Tensor] | None = None,
                  **options: Any) -> Adapter:
    """Wrap ``model`` (in place) in TTA method ``method`` (one of ``METHODS``).

    ``options`` go to the method (e.g. ``prior`` for bn_adapt, ``lr``, ``reset_threshold``).
    """
    if method == "source":
        return NoAdaptation(model, forward, **options)
    if method == "bn_adapt":
        return BNAdapt(model, forward, **options)
    if method == "tent":
        return Tent(model, forward, batch_size=batch_size, **options)
    if method == "eata":
        return EATA(model, num_classes, forward, batch_size=batch_size, fisher_batches=fisher_batches,
                    **options)
    if method == "sar":
        return SAR(model, num_classes, forward, batch_size=batch_size, **options)
    raise ValueError(f"unknown TTA method {method!r}; known: {', '.join(METHODS)}")


__all__ = ["METHODS", "Adapter", "BNAdapt", "EATA", "NoAdaptation", "SAR", "Tent", "adapt_batch_norm",
           "build_adapter", "collect_norm_params", "configure_model", "entropy", "entropy_margin",
           "fisher_information", "restore_batch_norm", "sar_lr"]
