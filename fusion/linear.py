"""Weighted averaging of K models, matched by name (docs/method.md).

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

from . import native
from .batchnorm import check_rule, merge_counters, pool_statistics, pooling_weights
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
    """sum_k w_k t_k accumulated in float64, stored in the inputs' dtype.

    Runs on the compiled one-pass kernel (``fusion.native``) where it applies,
    else on torch operations block by block; both add in the order k = 0..K-1.
    ``scratch``: optional float64 buffer of at least 2 x ``_BLOCK`` elements for
    the torch path. Refuses NaN/Inf, naming ``key``: any of them makes the sum
    non-finite, so checking the output replaces a separate pass over the inputs.
    """
    out = torch.empty(tensors[0].shape, dtype=tensors[0].dtype)
    engine = native.kernel()
    nonfinite = None if engine is None else engine.weighted_sum(tensors, weights, out)
    if nonfinite is None:
        nonfinite = _weighted_sum_torch(tensors, weights, out, scratch)
    if nonfinite:  # rare: overflow of the sum, or NaN/Inf in an input
        _refuse_nonfinite(key, tensors)
        raise ValueError(f"the weighted sum overflows in: {_names([key])}")
    return out


def _weighted_sum_torch(tensors: Sequence[torch.Tensor], weights: Sequence[float],
                        out: torch.Tensor, scratch: torch.Tensor | None) -> bool:
    """The torch-operations path of ``weighted_sum``; True if ``out`` holds NaN/Inf."""
    flat_out = out.view(-1)
    flats = [t.reshape(-1) for t in tensors]
    total = flat_out.numel()
    if scratch is None:
        scratch = torch.empty(2 * min(_BLOCK, total), dtype=torch.float64)
    half = scratch.numel() // 2
    nonfinite = False
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
        # A finite sum proves every element finite; only a non-finite one needs the exact test.
        if not nonfinite and not math.isfinite(float(block.sum())):
            nonfinite = not bool(torch.isfinite(block).all())
    return nonfinite


class _Batches:
    """Items gathered per group and merged together once a group holds ``_BLOCK`` elements.

    Hundreds of tiny tensors (BatchNorm weights, biases and statistics) merged one
    by one would cost more in per-call overhead than in arithmetic; merged as one
    tensor per group, elementwise, the result is exactly that of merging each alone.
    Subclasses say what a batch's merge is (``_merge``).
    """

    def __init__(self) -> None:
        self.pending: dict[object, list] = {}
        self.sizes: dict[object, int] = {}

    def _push(self, group: object, item: object, size: int) -> None:
        self.pending.setdefault(group, []).append(item)
        self.sizes[group] = self.sizes.get(group, 0) + size
        if self.sizes[group] >= _BLOCK:
            self.flush(group)

    def flush(self, group: object | None = None) -> None:
        """Merge the pending items of ``group`` (default: of every group)."""
        for kind in [group] if group is not None else list(self.pending):
            batch = self.pending.pop(kind, [])
            self.sizes.pop(kind, None)
            if batch:
                self._merge(batch)

    def _merge(self, batch: list) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class _SmallParameters(_Batches):
    """Small float parameters, one group per dtype."""

    def __init__(self, count: int, weights: Sequence[float], emit: Emitter, scratch: torch.Tensor):
        super().__init__()
        self.count, self.weights, self.emit, self.scratch = count, weights, emit, scratch

    def add(self, key: str, tensors: list[torch.Tensor]) -> None:
        self._push(tensors[0].dtype, (key, tensors), tensors[0].numel())

    def _merge(self, batch: list[tuple[str, list[torch.Tensor]]]) -> None:
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


@dataclass
class _Statistics:
    layer: BatchNormKeys
    means: list[torch.Tensor]
    variances: list[torch.Tensor]
    counts: list[torch.Tensor] | None
    pi: list[float]


class _BatchNormLayers(_Batches):
    """BatchNorm statistics of many layers pooled as one tensor per model.

    Each layer keeps its own pi_k (from its counters), spread over its channels;
    ``pool_statistics`` is elementwise, so the result equals pooling each layer
    on its own (``merge_batchnorm_statistics``) exactly, at a fraction of the calls.
    One group per (mean dtype, variance dtype).
    """

    def __init__(self, count: int, weights: Sequence[float], rule: str, emit: Emitter):
        super().__init__()
        self.count, self.weights, self.rule, self.emit = count, weights, rule, emit

    def add(self, layer: BatchNormKeys, means: list[torch.Tensor], variances: list[torch.Tensor],
            counts: list[torch.Tensor] | None) -> None:
        # refusals about the counters come at once, naming the layer
        pi = pooling_weights(counts, self.weights, self.rule, layer.prefix)
        self._push((means[0].dtype, variances[0].dtype),
                   _Statistics(layer, means, variances, counts, pi), means[0].numel())

    def _merge(self, batch: list[_Statistics]) -> None:
        def joined(field: str) -> torch.Tensor:  # (K, channels of all layers), float64
            return torch.stack([torch.cat([getattr(s, field)[k].reshape(-1) for s in batch])
                                for k in range(self.count)]).to(torch.float64)

        mu_k, var_k = joined("means"), joined("variances")
        if not math.isfinite(float(mu_k.sum() + var_k.sum())):  # one pass for all layers
            for stats in batch:
                _refuse_nonfinite(stats.layer.prefix + "running_mean", stats.means)
                _refuse_nonfinite(stats.layer.prefix + "running_var", stats.variances)
        sizes = torch.tensor([s.means[0].numel() for s in batch])
        pi = torch.tensor([s.pi for s in batch], dtype=torch.float64).T.repeat_interleave(sizes, 1)
        mean64, var64 = pool_statistics(pi, mu_k, var_k, self.rule)
        offset = 0
        for stats in batch:
            size, layer = stats.means[0].numel(), stats.layer
            part = slice(offset, offset + size)
            # copy=True: float64 statistics must not stay views of one shared buffer
            self.emit(layer.mean, mean64[part].to(stats.means[0].dtype, copy=True)
                      .view(stats.means[0].shape))
            self.emit(layer.var, var64[part].to(stats.variances[0].dtype, copy=True)
                      .view(stats.variances[0].shape))
            if layer.count is not None:
                self.emit(layer.count, merge_counters(stats.counts, self.weights, self.rule,
                                                      layer.prefix))
            offset += size


def merge_entries(units: Sequence[Unit], get: Getter, count: int, weights: Sequence[float],
                  buffers: str, emit: Emitter) -> None:
    """Run a merge plan: read each unit's tensors from all models, emit the merged ones.

    Only one unit's tensors (and a block of small parameters) are held at a
    time, which keeps the streaming merge at about one tensor per model.
    Emission order may differ from the plan's.
    """
    scratch = torch.empty(2 * _BLOCK, dtype=torch.float64)
    small = _SmallParameters(count, weights, emit, scratch)
    statistics = _BatchNormLayers(count, weights, buffers, emit)
    for unit in units:
        if unit.kind == "batchnorm":
            layer = unit.layer
            statistics.add(layer, [get(i, layer.mean) for i in range(count)],
                           [get(i, layer.var) for i in range(count)],
                           None if layer.count is None else [get(i, layer.count) for i in range(count)])
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
    statistics.flush()


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
