"""Running a network on given weights without rewriting it (the data-driven merges).

RegMean and Fisher merging measure each domain model on its own images,
AdaMerging optimises coefficients through the merged model and REPAIR measures
activations of three models. All of them take the network as a ``torch.nn.Module``
built once by the caller, and swap weights in with ``torch.func.functional_call``:
the module's own parameters are never modified, so the caller's model is the
same after the call as before.

``forward(model, batch)`` says how a batch is fed (default ``model(batch)``);
it must return logits with the classes on axis 1 (B x C x H x W for
segmentation, B x C for classification).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from .state import check_compatible

Forward = Callable[[nn.Module, Any], torch.Tensor]


def call_model(model: nn.Module, batch: Any) -> torch.Tensor:
    """The default ``forward``: ``model(batch)``."""
    return model(batch)


class _Bound(nn.Module):
    """``forward(model, batch)`` as a module, so functional_call can swap the weights
    of ``model`` under any calling convention (the keys gain a ``model.`` prefix)."""

    def __init__(self, model: nn.Module, forward: Forward):
        super().__init__()
        self.model = model
        self.call = forward

    def forward(self, batch: Any) -> torch.Tensor:
        return self.call(self.model, batch)


def run(model: nn.Module, state: Mapping[str, torch.Tensor], batch: Any,
        forward: Forward | None = None) -> torch.Tensor:
    """Logits of ``model`` on ``batch`` with every entry of its state dict taken from ``state``.

    ``state`` must hold exactly the keys of ``model.state_dict()`` (see
    :func:`check_state_keys`); forward hooks on submodules fire as usual.
    """
    bound = _Bound(model, forward or call_model)
    weights = {"model." + k: v for k, v in state.items()}
    # Buffers registered with persistent=False (e.g. a backbone's fixed input normalisation)
    # are not part of any state dict: they keep the module's own values. Every persistent
    # entry must still come from ``state`` (strict).
    for name in _non_persistent_buffers(model):
        weights.setdefault("model." + name, model.get_buffer(name))
    logits = functional_call(bound, weights, (batch,), strict=True)
    if not isinstance(logits, torch.Tensor) or logits.dim() < 2:
        raise ValueError("forward must return logits with the classes on axis 1 "
                         f"(B x C x ...), got {type(logits).__name__} "
                         f"{tuple(getattr(logits, 'shape', ()))}")
    return logits


def _non_persistent_buffers(model: nn.Module) -> list[str]:
    return [f"{prefix}.{name}" if prefix else name for prefix, module in model.named_modules()
            for name in module._non_persistent_buffers_set if getattr(module, name, None) is not None]


def log_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """log softmax over the classes (axis 1), in float32 at least (half-precision
    logits would lose the small probabilities), else in the logits' own dtype."""
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    return torch.log_softmax(logits, dim=1)


def check_state_keys(model: nn.Module, state: Mapping[str, torch.Tensor], label: str) -> None:
    """Refuse a state dict that does not fit the module entry by entry, naming the keys."""
    try:
        check_compatible([model.state_dict(), state])
    except ValueError as error:
        raise ValueError(f"{label} does not fit the network (model 0: the network's own state "
                         f"dict, model 1: {label}): {error}") from None


def model_device(model: nn.Module) -> torch.device:
    """Where the model's tensors live (the CPU for a module without any)."""
    tensor = next(iter([*model.parameters(), *model.buffers()]), None)
    return torch.device("cpu") if tensor is None else tensor.device


def on_device(state: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """``state`` moved to the device of the model's tensors (detached)."""
    device = model_device(model)
    return {k: v.detach().to(device) for k, v in state.items()}


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration (BatchNorm uses its running statistics, dropout is off,
    images of a batch do not interact), then every submodule's own mode back."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.train(training)


def listed_batches(batches: Any, what: str) -> list:
    """The batches as a list, refusing an empty iterable (they are read more than once)."""
    batches = list(batches)
    if not batches:
        raise ValueError(f"no batches given to {what}")
    return batches
