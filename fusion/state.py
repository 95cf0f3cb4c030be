"""What each state-dict entry is, and the checks every merge runs first.

A state dict mixes things that must not be merged alike (docs/method.md):
float parameters are averaged, BatchNorm running statistics are pooled as
Gaussians, integer counters are summed and never averaged or truncated, and any
other non-float buffer (an index table, a mask) must agree across the models.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

StateDict = Mapping[str, torch.Tensor]

PARAMETER = "parameter"
RUNNING_MEAN = "running_mean"
RUNNING_VAR = "running_var"
COUNTER = "counter"
OTHER_BUFFER = "other_buffer"

_MAX_NAMED = 8  # keys shown in one error message before "... and N more"


def classify(key: str, tensor: torch.Tensor | torch.dtype) -> str:
    """The kind of entry ``key`` holds (a tensor or its dtype): one of the kind constants.

    BatchNorm statistics are recognised by their torch names; every other
    floating tensor is merged as a parameter (float buffers such as positional
    tables included).
    """
    leaf = key.rsplit(".", 1)[-1]
    floating = (tensor if isinstance(tensor, torch.dtype) else tensor.dtype).is_floating_point
    if leaf == "num_batches_tracked":
        return COUNTER
    if leaf == "running_mean" and floating:
        return RUNNING_MEAN
    if leaf == "running_var" and floating:
        return RUNNING_VAR
    if floating:
        return PARAMETER
    return OTHER_BUFFER


@dataclass(frozen=True)
class BatchNormKeys:
    """The buffers of one BatchNorm layer; ``count`` is None when it has no counter."""

    prefix: str
    mean: str
    var: str
    count: str | None


def batchnorm_layers(keys: Iterable[str]) -> dict[str, BatchNormKeys]:
    """BatchNorm layers among ``keys``, keyed by module prefix (``backbone.bn1.``).

    Raises ValueError naming the keys when a layer has a mean without a
    variance or the other way round: such a pair cannot be pooled.
    """
    keys = set(keys)
    layers: dict[str, BatchNormKeys] = {}
    unpaired = []
    for key in sorted(keys):
        prefix, _, leaf = key.rpartition(".")
        prefix = prefix + "." if prefix else ""
        if leaf not in ("running_mean", "running_var"):
            continue
        mean, var, count = prefix + "running_mean", prefix + "running_var", prefix + "num_batches_tracked"
        if mean not in keys or var not in keys:
            unpaired.append(key)
            continue
        layers[prefix] = BatchNormKeys(prefix, mean, var, count if count in keys else None)
    if unpaired:
        raise ValueError(f"BatchNorm statistics without their pair: {_names(unpaired)}")
    return layers


def _names(keys: Sequence[str]) -> str:
    keys = list(keys)
    shown = ", ".join(repr(k) for k in keys[:_MAX_NAMED])
    more = len(keys) - _MAX_NAMED
    return shown + (f" ... and {more} more" if more > 0 else "")


def check_compatible(state_dicts: Sequence[StateDict]) -> list[str]:
    """Refuse state dicts that cannot be merged entry by entry; return the key order.

    Every model must hold exactly the keys of the first, with equal shapes and
    dtypes. The error names the model index and the offending keys.
    """
    if len(state_dicts) == 0:
        raise ValueError("nothing to merge: no state dicts given")
    reference = state_dicts[0]
    keys = list(reference.keys())
    for index, other in enumerate(state_dicts[1:], start=1):
        missing = [k for k in keys if k not in other]
        extra = [k for k in other.keys() if k not in reference]
        if missing:
            raise ValueError(f"model {index} is missing keys of model 0: {_names(missing)}")
        if extra:
            raise ValueError(f"model {index} has keys that model 0 lacks: {_names(extra)}")
        shapes = [f"{k} {tuple(reference[k].shape)} vs {tuple(other[k].shape)}"
                  for k in keys if reference[k].shape != other[k].shape]
        if shapes:
            raise ValueError(f"model {index} shape mismatch: {_names(shapes)}")
        dtypes = [f"{k} {reference[k].dtype} vs {other[k].dtype}"
                  for k in keys if reference[k].dtype != other[k].dtype]
        if dtypes:
            raise ValueError(f"model {index} dtype mismatch: {_names(dtypes)}")
    return keys


def nonfinite_keys(state_dict: StateDict) -> list[str]:
    """Keys of floating entries holding NaN or Inf."""
    return [k for k, t in state_dict.items()
            if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def check_finite(state_dicts: Sequence[StateDict]) -> None:
    """Refuse NaN or Inf in any floating entry, naming the model and keys."""
    for index, state_dict in enumerate(state_dicts):
        bad = nonfinite_keys(state_dict)
        if bad:
            raise ValueError(f"model {index} holds NaN or Inf in: {_names(bad)}")


def check_weights(weights: Sequence[float] | None, count: int, tolerance: float = 1e-6) -> list[float]:
    """Merge weights: ``count`` finite non-negative numbers summing to 1 (default 1/K)."""
    if weights is None:
        return [1.0 / count] * count
    weights = [float(w) for w in weights]
    if len(weights) != count:
        raise ValueError(f"weights {weights} has {len(weights)} entries for {count} models")
    if any(not (w >= 0.0 and w != float("inf")) for w in weights):
        raise ValueError(f"weights {weights} must be finite and non-negative")
    if abs(sum(weights) - 1.0) > tolerance:
        raise ValueError(f"weights {weights} sum to {sum(weights)!r}, not 1")
    return weights
