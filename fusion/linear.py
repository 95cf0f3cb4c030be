"""Weighted averaging of K models, matched by name (REFERENCE.md §1).

    theta = sum_k w_k theta_k            (midpoint: w_k = 1/K)

Float parameters are averaged, BatchNorm statistics pooled (``fusion.batchnorm``),
counters summed and other buffers required to agree. The same entry-by-entry
engine serves in-memory merges and the streaming merge of safetensors files, so
both give bit-identical results.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .batchnorm import check_rule, merge_batchnorm_statistics, merge_counters
from .state import (COUNTER, OTHER_BUFFER, PARAMETER, BatchNormKeys, StateDict, _names,
                    batchnorm_layers, check_compatible, check_weights, classify)

# Elements per float64 block: the accumulator and one converted input (1 MiB)
# stay in a core's L2 cache, so float64 costs no memory traffic and the merge
# reads each input once and writes the output once, as a plain copy would.
_BLOCK = 1 << 16
_SMALL = 1 << 12  # parameters below this many elements are merged in batches

Getter = Callable[[int, str], torch.Tensor]  # (model index, key) -> tensor
Emitter = Callable[[str, torch.Tensor], None]


@dataclass(frozen=True)
class Unit:
    """One step of a merge: a single entry, or the three buffers of a BatchNorm layer."""

    kind: str
    keys: tuple[str, ...]
    layer: BatchNormKeys | None = None


def plan_merge(keys: Sequence[str], dtypes: dict[str, torch.dtype]) -> list[Unit]:
    """Group ``keys`` into merge units, in the order of their first key.

    Every output key keeps its input's shape and dtype, so the output is known
    before any tensor is read: a streaming writer lays out its file in advance.
    """
    layers = batchnorm_layers(keys)
    units, seen = [], set()
    for key in keys:
        if key in seen:
            continue
        prefix, _, _ = key.rpartition(".")
        layer = layers.get(prefix + "." if prefix else "")
        kind = classify(key, dtypes[key])
        if layer is not None and key in (layer.mean, layer.var, layer.count):
            members = tuple(k for k in (layer.mean, layer.var, layer.count) if k is not None)
            units.append(Unit("batchnorm", members, layer))
            seen.update(members)
        else:
            units.append(Unit(kind, (key,)))
            seen.add(key)
    return units


def _refuse_nonfinite(key: str, tensors: Sequence[torch.Tensor]) -> None:
    bad = [i for i, t in enumerate(tensors) if not bool(torch.isfinite(t).all())]
    if bad:
        raise ValueError(f"model(s) {bad} hold NaN or Inf in: {_names([key])}")


def weighted_sum(tensors: Sequence[torch.Tensor], weights: Sequence[float], key: str,
                 scratch: torch.Tensor | None = None) -> torch.Tensor:
    """sum_k w_k t_k accumulated in float64 block by block, stored in the inputs' dtype.

    ``scratch``: optional float64 buffer of at least 2 x ``_BLOCK`` elements.
    Refuses NaN/Inf (naming ``key``): any of them makes the sum non-finite, so a
    cheap sum of each output block replaces a separate pass over the inputs.
    """
    out = torch.empty(tensors[0].shape, dtype=tensors[0].dtype)
    flat_out = out.view(-1)
    flats = [t.reshape(-1) for t in tensors]
    total = flat_out.numel()
    if scratch is None:
        scratch = torch.empty(2 * min(_BLOCK, total), dtype=torch.float64)
    half = scratch.numel() // 2
    for start in range(0, total, _BLOCK):
        stop = min(start + _BLOCK, total)
        acc, converted = scratch[: stop - start], scratch[half: half + stop - start]
        # Converting first and adding float64 to float64 keeps every kernel on
        # torch's vectorised same-dtype path (mixed-dtype adds are ~3x slower).
        converted.copy_(flats[0][start:stop])
        torch.mul(converted, weights[0], out=acc)
        for flat, weight in zip(flats[1:], weights[1:]):
            converted.copy_(flat[start:stop])
            acc.add_(converted, alpha=weight)
        block = flat_out[start:stop]
        block.copy_(acc)
        if not math.isfinite(float(block.sum())):  # rare: overflow of the sum, or NaN/Inf
            _refuse_nonfinite(key, tensors)
    return out


class _SmallParameters:
    """Small float parameters gathered per dtype and merged as one tensor.

    BatchNorm weights and biases are hundreds of tiny tensors; merging them
    one by one would cost more in per-call overhead than in arithmetic.
    Elementwise, the result is exactly that of merging each on its own.
    """

    def __init__(self, count: int, weights: Sequence[float], emit: Emitter, scratch: torch.Tensor):
        self.count, self.weights, self.emit, self.scratch = count, weights, emit, scratch
        self.pending: dict[torch.dtype, list[tuple[str, list[torch.Tensor]]]] = {}

    def add(self, key: str, tensors: list[torch.Tensor]) -> None:
        batch = self.pending.setdefault(tensors[0].dtype, [])
        batch.append((key, tensors))
        if sum(t[0].numel() for _, t in batch) >= _BLOCK:
            self.flush(tensors[0].dtype)

    def flush(self, dtype: torch.dtype | None = None) -> None:
        for kind in [dtype] if dtype is not None else list(self.pending):
            batch = self.pending.pop(kind, [])
            if not batch:
                continue
            joined = [torch.cat([t[i].reshape(-1) for _, t in batch]) for i in range(self.count)]
            try:
                merged = weighted_sum(joined, self.weights, "", self.scratch)
            except ValueError:  # name the entry that holds the NaN/Inf
                for key, tensors in batch:
                    _refuse_nonfinite(key, tensors)
                raise
            offset = 0
            for key, tensors in batch:
                size = tensors[0].numel()
                self.emit(key, merged[offset: offset + size].view(tensors[0].shape).clone())
                offset += size


def _check_statistics(key: str, means: list[torch.Tensor], variances: list[torch.Tensor]) -> None:
    if not math.isfinite(float(torch.stack(means + variances).sum())):  # one pass for all
        _refuse_nonfinite(key + "running_mean", means)
        _refuse_nonfinite(key + "running_var", variances)


def merge_entries(units: Sequence[Unit], get: Getter, count: int, weights: Sequence[float],
                  buffers: str, emit: Emitter) -> None:
    """Run a merge plan: read each unit's tensors from all models, emit the merged ones.

    Only one unit's tensors (and a block of small parameters) are held at a
    time, which keeps the streaming merge at about one tensor per model.
    Emission order may differ from the plan's.
    """
    scratch = torch.empty(2 * _BLOCK, dtype=torch.float64)
    small = _SmallParameters(count, weights, emit, scratch)
    for unit in units:
        if unit.kind == "batchnorm":
            layer = unit.layer
            means = [get(i, layer.mean) for i in range(count)]
            variances = [get(i, layer.var) for i in range(count)]
            counts = None if layer.count is None else [get(i, layer.count) for i in range(count)]
            _check_statistics(layer.prefix, means, variances)
            mean, var, counter = merge_batchnorm_statistics(
                means, variances, counts, weights, buffers, key=layer.prefix)
            for key, value in ((layer.mean, mean), (layer.var, var), (layer.count, counter)):
                if key is not None:
                    emit(key, value)
            continue
        key = unit.keys[0]
        tensors = [get(i, key) for i in range(count)]
        if unit.kind == PARAMETER and tensors[0].numel() < _SMALL:
            small.add(key, tensors)
        elif unit.kind == PARAMETER:
            emit(key, weighted_sum(tensors, weights, key, scratch))
        elif unit.kind == COUNTER:
            emit(key, merge_counters(tensors, weights, buffers, key))
        elif unit.kind == OTHER_BUFFER:
            differing = [i for i, t in enumerate(tensors[1:], 1) if not torch.equal(tensors[0], t)]
            if differing:
                raise ValueError(f"non-float buffer {key!r} differs in model(s) {differing} "
                                 f"and cannot be averaged")
            emit(key, tensors[0].clone())
        else:  # pragma: no cover - plan_merge makes only the kinds above
            raise AssertionError(unit.kind)
    small.flush()


def merge_linear(state_dicts: Sequence[StateDict], weights: Sequence[float] | None = None,
                 buffers: str = "pooled") -> dict[str, torch.Tensor]:
    """Weighted average of K state dicts, matched by name; midpoint by default.

    ``weights``: K non-negative numbers summing to 1. ``buffers``: how BatchNorm
    statistics merge, one of ``fusion.batchnorm.BUFFER_RULES``. Raises ValueError
    naming the keys on missing/extra keys, shape or dtype mismatch, NaN/Inf,
    or disagreeing non-float buffers.
    """
    keys = check_compatible(state_dicts)
    weights = check_weights(weights, len(state_dicts))
    check_rule(buffers)
    units = plan_merge(keys, {k: state_dicts[0][k].dtype for k in keys})
    merged: dict[str, torch.Tensor] = {}
    merge_entries(units, lambda i, k: state_dicts[i][k], len(state_dicts), weights, buffers,
                  merged.__setitem__)
    return {k: merged[k] for k in keys}


def interpolate(a: StateDict, b: StateDict, alpha: float,
                buffers: str = "pooled_by_weight") -> dict[str, torch.Tensor]:
    """The point ``(1 - alpha) a + alpha b`` of the linear path from a to b (paper Sec. 4.3).

    ``alpha`` in [0, 1]; alpha = 0 gives a and alpha = 1 gives b exactly, BatchNorm
    statistics included with the default ``pooled_by_weight`` rule.
    """
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha {alpha} outside [0, 1]")
    return merge_linear([a, b], [1.0 - alpha, alpha], buffers)


def merge_by_prefix(state_dicts: Sequence[StateDict], prefix: str | Sequence[str] = "backbone.",
                    weights: Sequence[float] | None = None,
                    buffers: str = "pooled") -> list[dict[str, torch.Tensor]]:
    """Merge only the entries under ``prefix``; every model keeps the rest as its own.

    The paper's encoder-only variant (Table 1, dagger): one shared merged encoder,
    one decode head per target domain. Returns one state dict per input model,
    in input order; domain d is evaluated with the d-th.
    """
    prefixes = (prefix,) if isinstance(prefix, str) else tuple(prefix)
    keys = check_compatible(state_dicts)
    shared = [k for k in keys if k.startswith(prefixes)]
    if not shared:
        raise ValueError(f"no key starts with {prefixes}; keys begin like {_names(keys[:3])}")
    merged = merge_linear([{k: sd[k] for k in shared} for sd in state_dicts], weights, buffers)
    return [{k: merged[k] if k in merged else sd[k].clone() for k in keys} for sd in state_dicts]
