"""Git Re-Basin weight matching (Ainsworth et al., ICLR 2023, Sec. 3.2, Alg. 1).

The paper's permutation baseline (docs/method.md, figure "Git Re-Basin vs
mid-point") aligns model B to model A before merging. Hidden units of a network
can be reordered without changing its function, provided every tensor that reads
or writes those units is reordered the same way. A :class:`PermutationSpec` names
each such reordering ("permutation") and lists, for every state-dict key, which
permutation acts on each of its axes.

Conventions used throughout:

- A permutation is a 1-D ``LongTensor`` ``p`` of length ``n``; applying it to an
  axis takes ``b.index_select(axis, p)``, i.e. unit ``i`` of the permuted model is
  unit ``p[i]`` of the original.
- ``weight_matching(spec, a, b)`` returns permutations that move ``b`` onto ``a``:
  ``apply_permutation(spec, weight_matching(spec, a, b), b)`` is B aligned to A.
- BatchNorm running statistics are permuted with their channels (the authors'
  script forgot them, which changes the function of the permuted network);
  ``num_batches_tracked`` is a scalar and never permuted. GroupNorm is not
  covered (a permutation that moves channels across groups changes its output);
  its state dicts lack running statistics, so the ResNet spec refuses them.
- The input RGB axis and every tensor the backbone returns stay unpermuted by
  default, so a permuted backbone is a drop-in replacement in front of the
  unchanged decode head.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

__all__ = [
    "PermutationSpec",
    "mlp_permutation_spec",
    "resnet_v1c_permutation_spec",
    "efficientnet_lite_permutation_spec",
    "weight_matching",
    "apply_permutation",
    "permutation_fraction_nonidentity",
]

log = logging.getLogger(__name__)

StateDict = Mapping[str, torch.Tensor]
Axes = tuple[str | None, ...]

# Data statistics are permuted but kept out of the matching objective: the
# objective of Ainsworth et al. (Sec. 3.2) is an inner product of *parameters*, and a
# running_var vector (all positive, with a large common offset) would reward pairing
# large-variance with large-variance units whatever the weights say. They are
# also redundant: they follow from the weights that feed them and the data.
_STATISTICS = (".running_mean", ".running_var")
# Improvement below this fraction of the objective is rounding, not progress.
_RELATIVE_TOLERANCE = 1e-12


@dataclass(frozen=True)
class PermutationSpec:
    """Which permutation acts on which axis of which state-dict entry.

    ``axes_to_perm`` maps every key to one entry per tensor axis: a permutation
    name, or ``None`` for an axis left as it is. ``perm_to_axes`` is the inverse
    index: permutation name -> list of ``(key, axis)``.
    """

    perm_to_axes: dict[str, list[tuple[str, int]]]
    axes_to_perm: dict[str, Axes]

    @classmethod
    def from_axes(cls, axes_to_perm: Mapping[str, Axes]) -> PermutationSpec:
        """Build a spec from the key -> axes table alone."""
        perm_to_axes: dict[str, list[tuple[str, int]]] = {}
        for key, axes in axes_to_perm.items():
            for axis, name in enumerate(axes):
                if name is not None:
                    perm_to_axes.setdefault(name, []).append((key, axis))
        return cls(perm_to_axes, {key: tuple(axes) for key, axes in axes_to_perm.items()})

    def extend(self, axes_to_perm: Mapping[str, Axes]) -> PermutationSpec:
        """Return a spec with extra entries, e.g. a decode head whose input axis
        follows a backbone permutation, or keys that are never permuted."""
        clash = sorted(set(axes_to_perm) & set(self.axes_to_perm))
        if clash:
            raise ValueError(f"keys already in the permutation spec: {clash[:10]}")
        return PermutationSpec.from_axes({**self.axes_to_perm, **axes_to_perm})

    def with_unpermuted(self, state_dict: StateDict) -> PermutationSpec:
        """Declare every entry of ``state_dict`` as unpermuted (all axes ``None``).

        This is the documented decode-head rule: with backbone outputs unpermuted,
        the head's tensors stay exactly as they are.
        """
        return self.extend({key: (None,) * value.dim() for key, value in state_dict.items()})


def mlp_permutation_spec(num_hidden_layers: int) -> PermutationSpec:
    """Spec for an MLP whose Linear layers are stored as ``layers.{i}.weight`` and
    ``layers.{i}.bias``, ``i = 0..num_hidden_layers`` (e.g. an ``nn.ModuleList`` of
    ``nn.Linear`` named ``layers``, activations applied in ``forward``).

    Hidden layer ``i`` (the output of ``layers.{i}``) is permuted by ``"layers.{i}"``;
    the input features and the final outputs are not permuted.
    """
    if num_hidden_layers < 1:
        raise ValueError(f"num_hidden_layers must be >= 1, got {num_hidden_layers}")
    axes: dict[str, Axes] = {}
    for i in range(num_hidden_layers + 1):
        out = f"layers.{i}" if i < num_hidden_layers else None
        inp = f"layers.{i - 1}" if i > 0 else None
        axes[f"layers.{i}.weight"] = (out, inp)
        axes[f"layers.{i}.bias"] = (out,)
    return PermutationSpec.from_axes(axes)


# mmseg ResNet: depth -> (block type, blocks per stage).
_RESNET_LAYOUT = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def resnet_v1c_permutation_spec(
    depth: int,
    permute_outputs: bool = False,
    layer1_downsample: bool | None = None,
    prefix: str = "",
) -> PermutationSpec:
    """Spec for mmseg's ``ResNetV1c(depth=...)`` (deep stem, BatchNorm), keys exactly
    as in its ``state_dict()``, optionally behind ``prefix`` (``"backbone."`` in a
    segmentor).

    Permutation names are the module that writes the channels: ``"stem.0"``,
    ``"stem.3"``, ``"stem.6"`` for the stem, ``"layer{s}.{i}.conv{k}"`` for a block's
    inner channels, and ``"layer{s}"`` for the residual stream of stage ``s`` (shared by
    the downsample branch and every block output of the stage, since they are summed).

    The backbone returns every stage's output (``out_indices`` 0..3) to the decode
    head. With ``permute_outputs=False`` (default) all four residual streams are
    therefore identity: only the stem's internal channels and each block's inner
    channels (conv1 in BasicBlock; conv1 and conv2 in Bottleneck) are permuted, the
    outputs are bit-comparable and the decode head needs no change. With
    ``permute_outputs=True`` the streams are permuted too and stage ``s`` returns
    ``out[:, perm["layer{s}"]]``; a head reading them must then be permuted on its
    input axis (add its entries with :meth:`PermutationSpec.extend`).

    The stem output feeds stage 1's residual stream directly unless ``layer1.0`` has
    a downsample branch (always for Bottleneck; for BasicBlock only when
    ``stem_channels != base_channels``). ``layer1_downsample=None`` assumes mmseg's
    default (``stem_channels == base_channels``). The RGB input axis of ``stem.0`` is
    never permuted.
    """
    if depth not in _RESNET_LAYOUT:
        raise ValueError(f"ResNetV1c depth must be one of {sorted(_RESNET_LAYOUT)}, got {depth}")
    block_type, blocks_per_stage = _RESNET_LAYOUT[depth]
    if layer1_downsample is None:
        layer1_downsample = block_type == "bottleneck"
    axes: dict[str, Axes] = {}

    def conv(name: str, out: str | None, inp: str | None) -> None:
        axes[f"{prefix}{name}.weight"] = (out, inp, None, None)

    def batchnorm(name: str, channels: str | None) -> None:
        for field in ("weight", "bias", "running_mean", "running_var"):
            axes[f"{prefix}{name}.{field}"] = (channels,)
        axes[f"{prefix}{name}.num_batches_tracked"] = ()

    def stream(stage: int) -> str | None:
        return f"layer{stage}" if permute_outputs else None

    # Deep stem: three 3x3 convs with BN (+ReLU); max-pooling acts per channel.
    stem_out = "stem.6" if layer1_downsample else stream(1)
    conv("stem.0", "stem.0", None)
    batchnorm("stem.1", "stem.0")
    conv("stem.3", "stem.3", "stem.0")
    batchnorm("stem.4", "stem.3")
    conv("stem.6", stem_out, "stem.3")
    batchnorm("stem.7", stem_out)

    previous = stem_out
    for stage, num_blocks in enumerate(blocks_per_stage, start=1):
        out = stream(stage)
        for index in range(num_blocks):
            block = f"layer{stage}.{index}"
            block_in = previous if index == 0 else out
            inner = [f"{block}.conv1"] if block_type == "basic" else [f"{block}.conv1", f"{block}.conv2"]
            channels = [block_in, *inner, out]
            for k in range(len(channels) - 1):
                conv(f"{block}.conv{k + 1}", channels[k + 1], channels[k])
                batchnorm(f"{block}.bn{k + 1}", channels[k + 1])
            if index == 0 and (stage > 1 or layer1_downsample):
                conv(f"{block}.downsample.0", out, previous)
                batchnorm(f"{block}.downsample.1", out)
        previous = out
    return PermutationSpec.from_axes(axes)


# EfficientNet-Lite0 (experiments/models/lite0.py, the package ``efficientnet_lite_pytorch``'s
# keys): stem width and, per stage, (blocks, stride, expand ratio, output channels).
EFFICIENTNET_LITE0_STEM = 32
EFFICIENTNET_LITE0_STAGES = ((1, 1, 1, 16), (2, 2, 6, 24), (2, 2, 6, 40), (3, 2, 6, 80),
                             (3, 1, 6, 112), (4, 2, 6, 192), (1, 1, 6, 320))
EFFICIENTNET_LITE0_OUT_INDICES = (1, 2, 4, 6)


def efficientnet_lite_permutation_spec(
    prefix: str = "backbone.",
    permute_stem: bool = True,
    permute_streams: bool = False,
    out_indices: tuple[int, ...] = EFFICIENTNET_LITE0_OUT_INDICES,
    stages: tuple[tuple[int, int, int, int], ...] = EFFICIENTNET_LITE0_STAGES,
    stem_channels: int = EFFICIENTNET_LITE0_STEM,
) -> PermutationSpec:
    """Spec for the EfficientNet-Lite backbone ``EfficientNetLite0`` (keys ``_conv_stem``,
    ``_bn0``, ``_blocks.{i}._{expand,depthwise,project}_conv`` / ``_bn{0,1,2}``, each
    behind ``prefix``; no squeeze-and-excitation, no classifier head).

    Permutations, named after the module that writes the channels:

    - ``"_blocks.{i}"``: the *expanded* channels of MBConv block ``i`` (expand ratio > 1):
      rows of ``_expand_conv``, its BN ``_bn0`` (affine and running statistics), the
      depthwise conv's channels and its BN ``_bn1``, and the input axis of
      ``_project_conv``. ReLU6 and the depthwise conv act per channel, so any order works.
    - ``"_conv_stem"`` (``permute_stem``): the stem's output channels: the stem conv's rows,
      ``_bn0``, and the first block, which has no expansion: its depthwise conv and ``_bn1``
      channels and ``_project_conv``'s input axis. The stem output feeds no residual sum
      (32 -> 16 channels).
    - ``"stage{s}"`` (``permute_streams``, off by default): the output stream of a stage
      that is *not* returned (``s`` not in ``out_indices``: stages 0, 3 and 5 of Lite0, 16,
      80 and 192 channels). All blocks of a stage share it (identity skips sum into it):
      rows of each block's ``_project_conv`` and ``_bn2``, and the input axis of the next
      block's ``_expand_conv``. The streams of returned stages are never permuted, so the
      four features keep their channel order and the decode head needs no change.

    The RGB input axis of the stem is never permuted. Blocks without expansion have no
    expanded channels. ``num_batches_tracked`` is scalar and unpermuted.

    Without streams every permutation touches unpermuted block inputs and outputs only (the
    stem's also block 1's expansion), so weight matching solves each almost independently
    and recovers a planted permutation exactly. With ``permute_streams`` a stream couples all
    blocks of its stage and the next expansion; on random networks the coordinate descent
    was seen to stop in a local optimum there for some visit orders (``seed``).
    """
    if any(not 0 <= s < len(stages) for s in out_indices):
        raise ValueError(f"out_indices {out_indices} outside the {len(stages)} stages")
    axes: dict[str, Axes] = {}

    def conv(name: str, out: str | None, inp: str | None) -> None:
        axes[f"{prefix}{name}.weight"] = (out, inp, None, None)

    def batchnorm(name: str, channels: str | None) -> None:
        for field in ("weight", "bias", "running_mean", "running_var"):
            axes[f"{prefix}{name}.{field}"] = (channels,)
        axes[f"{prefix}{name}.num_batches_tracked"] = ()

    stem = "_conv_stem" if permute_stem else None
    conv("_conv_stem", stem, None)
    batchnorm("_bn0", stem)
    previous, index = stem, 0
    for stage, (repeats, _stride, expand, _width) in enumerate(stages):
        stream = f"stage{stage}" if permute_streams and stage not in out_indices else None
        for repeat in range(repeats):
            block = f"_blocks.{index}"
            block_in = previous if repeat == 0 else stream
            if expand != 1:
                inner = block
                conv(f"{block}._expand_conv", inner, block_in)
                batchnorm(f"{block}._bn0", inner)
            else:
                inner = block_in  # the depthwise conv acts on the block's input channels
            # Depthwise: weight (channels, 1, k, k); its channel axis is its output axis.
            conv(f"{block}._depthwise_conv", inner, None)
            batchnorm(f"{block}._bn1", inner)
            conv(f"{block}._project_conv", stream, inner)
            batchnorm(f"{block}._bn2", stream)
            index += 1
        previous = stream
    return PermutationSpec.from_axes(axes)


def _permutation_sizes(spec: PermutationSpec, state_dict: StateDict, label: str) -> dict[str, int]:
    """Check keys and axis counts against the spec; return each permutation's size."""
    missing = sorted(set(spec.axes_to_perm) - set(state_dict))
    extra = sorted(set(state_dict) - set(spec.axes_to_perm))
    if missing or extra:
        raise ValueError(
            f"state dict {label} does not match the permutation spec: "
            f"missing keys {missing[:10]}, keys not in the spec {extra[:10]}"
        )
    sizes: dict[str, int] = {}
    for key, axes in spec.axes_to_perm.items():
        shape = tuple(state_dict[key].shape)
        if len(axes) != len(shape):
            raise ValueError(f"{label}[{key!r}] has shape {shape} but the spec lists {len(axes)} axes")
        for axis, name in enumerate(axes):
            if name is None:
                continue
            if sizes.setdefault(name, shape[axis]) != shape[axis]:
                raise ValueError(
                    f"permutation {name!r} has size {sizes[name]} elsewhere but "
                    f"{label}[{key!r}] axis {axis} has size {shape[axis]}"
                )
    return sizes


def _check_permutations(perm: Mapping[str, torch.Tensor], sizes: Mapping[str, int]) -> None:
    missing, extra = sorted(set(sizes) - set(perm)), sorted(set(perm) - set(sizes))
    if missing or extra:
        raise ValueError(f"permutations missing {missing[:10]}, unknown permutations {extra[:10]}")
    for name, n in sizes.items():
        index = perm[name]
        if index.dim() != 1 or index.numel() != n or not torch.equal(
            torch.sort(index.detach().cpu().long()).values, torch.arange(n)
        ):
            raise ValueError(f"perm[{name!r}] is not a permutation of range({n})")


def apply_permutation(
    spec: PermutationSpec, perm: Mapping[str, torch.Tensor], b: StateDict
) -> dict[str, torch.Tensor]:
    """Return a permuted copy of ``b`` (``b`` itself is not modified)."""
    _check_permutations(perm, _permutation_sizes(spec, b, "b"))
    permuted: dict[str, torch.Tensor] = {}
    for key, tensor in b.items():
        axes = spec.axes_to_perm[key]
        result = tensor.detach()
        for axis, name in enumerate(axes):
            if name is not None:
                result = result.index_select(axis, perm[name].to(result.device, torch.long))
        # index_select already copied; unpermuted entries are cloned so b stays untouched.
        permuted[key] = result if any(name is not None for name in axes) else result.clone()
    return permuted


@dataclass(frozen=True)
class _Term:
    """One (tensor, axis) of the matching objective, laid out once with the matched
    axis first: A as an (n, rest) matrix, B kept n-by-other-axes so the current
    permutations of its other axes can be applied with one ``index_select`` each."""

    rows_a: torch.Tensor
    moved_b: torch.Tensor
    others: tuple[tuple[int, str], ...]  # (axis of moved_b, permutation name)


def _objective_terms(
    spec: PermutationSpec, a: StateDict, b: StateDict, matched: list[str]
) -> dict[str, list[_Term]]:
    terms: dict[str, list[_Term]] = {name: [] for name in spec.perm_to_axes}
    for key in matched:
        weight_a = a[key].detach().to(torch.float64)
        weight_b = b[key].detach().to(weight_a.device, torch.float64)
        for label, weight in (("a", weight_a), ("b", weight_b)):
            if not torch.isfinite(weight).all():
                raise ValueError(f"{label}[{key!r}] contains NaN or Inf")
        axes = spec.axes_to_perm[key]
        for axis, name in enumerate(axes):
            if name is None:
                continue
            size = weight_a.shape[axis]
            # movedim(axis, 0) shifts the axes before `axis` one place to the right.
            others = tuple(
                (other_axis + 1 if other_axis < axis else other_axis, other)
                for other_axis, other in enumerate(axes)
                if other is not None and other_axis != axis
            )
            rows_a = weight_a.movedim(axis, 0).reshape(size, -1)
            terms[name].append(_Term(rows_a, weight_b.movedim(axis, 0).contiguous(), others))
    return terms


def _similarity(terms: list[_Term], size: int, perm: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """S[i, j] = sum over tensors touching one permutation of <unit i of A, unit j of B>,
    with every other axis of B already moved by the current permutations."""
    similarity: torch.Tensor | None = None
    for term in terms:
        moved_b = term.moved_b
        for axis, other in term.others:
            moved_b = moved_b.index_select(axis, perm[other])
        rows_b = moved_b.reshape(size, -1).T
        if similarity is None:
            similarity = term.rows_a @ rows_b
        else:
            similarity.addmm_(term.rows_a, rows_b)
    assert similarity is not None, "callers skip permutations without terms"
    return similarity


def weight_matching(
    spec: PermutationSpec, a: StateDict, b: StateDict, seed: int = 0, max_iter: int = 100
) -> dict[str, torch.Tensor]:
    """Permutations of ``b`` that maximise sum_W <W_a, P(W_b)> (Ainsworth et al., Sec. 3.2).

    Coordinate descent from the identity: each sweep visits the permutations in an
    order drawn from ``seed`` and solves each one exactly as a linear assignment
    (``scipy.optimize.linear_sum_assignment``) with the others held fixed. A step is
    accepted only if it raises the objective by more than 1e-12 of its size, and the
    search stops after a sweep with no accepted step (or ``max_iter`` sweeps).
    Float parameters enter the objective in float64; BatchNorm running statistics
    and integer counters are excluded (see ``_STATISTICS``) but are permuted by
    :func:`apply_permutation`.

    Returns ``{name: LongTensor}`` on the CPU.
    """
    sizes = _permutation_sizes(spec, a, "a")
    _permutation_sizes(spec, b, "b")
    for key in spec.axes_to_perm:
        if a[key].shape != b[key].shape:
            raise ValueError(f"shape mismatch at {key!r}: a {tuple(a[key].shape)}, b {tuple(b[key].shape)}")
    matched = [
        key
        for key, value in a.items()
        if value.is_floating_point() and value.numel() > 0 and not key.endswith(_STATISTICS)
    ]
    terms = _objective_terms(spec, a, b, matched)
    device = a[matched[0]].device if matched else torch.device("cpu")
    perm = {name: torch.arange(n, device=device) for name, n in sizes.items()}
    # A permutation that touches no parameter (only statistics) has nothing to match.
    names = sorted(name for name, entries in terms.items() if entries)
    rng = np.random.default_rng(seed)
    for sweep in range(max_iter):
        accepted = 0
        for index in rng.permutation(len(names)):
            name = names[index]
            similarity = _similarity(terms[name], sizes[name], perm).cpu().numpy()
            rows, cols = linear_sum_assignment(similarity, maximize=True)
            old = similarity[rows, perm[name].cpu().numpy()].sum()
            new = similarity[rows, cols].sum()
            if new - old > _RELATIVE_TOLERANCE * max(abs(old), np.finfo(np.float64).tiny):
                perm[name] = torch.from_numpy(cols).to(device, torch.long)
                accepted += 1
        log.debug("weight matching sweep %d: %d permutations improved", sweep, accepted)
        if accepted == 0:
            break
    else:
        log.warning("weight matching stopped after max_iter=%d sweeps without converging", max_iter)
    return {name: index.cpu() for name, index in perm.items()}


def permutation_fraction_nonidentity(perm: Mapping[str, torch.Tensor]) -> float:
    """Fraction of all permuted units (over every permutation) not mapped to themselves;
    0 means weight matching found the identity, i.e. plain midpoint merging."""
    if not perm:
        raise ValueError("no permutations given")
    moved = sum(int((index.cpu() != torch.arange(index.numel())).sum()) for index in perm.values())
    total = sum(index.numel() for index in perm.values())
    return moved / total if total else 0.0
