"""RegMean: merging linear maps by regression on each domain's layer inputs
(Jin et al., ICLR 2023, "Dataless Knowledge Fusion by Merging Weights of Language
Models", arXiv:2212.09849).

For a layer y = W x shared by K domains, the merged W minimises
sum_k || X_k W^T - X_k W_k^T ||^2 over the inputs X_k each domain's own model
feeds the layer. With G_k = X_k^T X_k (d x d, d = input size) the minimiser is,
in torch's orientation (W is out x d),

    W* = (sum_k W_k G_k) (sum_k G_k)^-1,

the paper's (sum_k G_k)^-1 sum_k G_k W_k written for y = x W. Each domain shares
G_k, never its images. The paper shrinks the off-diagonal of every Gram matrix,
G~ = alpha G + (1 - alpha) diag(G), which interpolates between RegMean
(alpha = 1) and a per-input-feature weighted average (alpha = 0) and keeps the
system well conditioned.

Convolutions are linear maps of their input patches: a Conv2d weight
(out, in/groups, kh, kw) is per group a (out/groups) x d matrix with
d = in/groups * kh * kw acting on the unfolded patch (channel-major, then kernel
row, then column: the order of ``weight.reshape(out, -1)``), so G is taken over
every output position of every image, one d x d block per group (a depthwise
convolution has d = kh * kw). A Conv2d subclass that pads its input inside its own
forward (TensorFlow "SAME" padding, as EfficientNet ports do) is unfolded with the padding
its output size implies. The paper merges transformer linear layers; the conv form is our
extension of the same objective.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .forward import Forward, check_state_keys, evaluating, on_device, run
from .linear import merge_linear
from .state import StateDict, _names, check_compatible, check_finite
from .statistics import check_statistics


def _padded(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The conv's input with its padding applied, in its own padding mode."""
    if conv.padding == "valid":
        return x
    if conv.padding == "same":
        pads = []
        for size, dilation in zip(reversed(conv.kernel_size), reversed(conv.dilation)):
            total = dilation * (size - 1)
            pads += [total // 2, total - total // 2]
    else:
        pads = [p for p in reversed(conv.padding) for _ in range(2)]
    if not any(pads):
        return x
    if conv.padding_mode == "zeros":
        return F.pad(x, pads)
    return F.pad(x, pads, mode=conv.padding_mode)


def _pads_itself(conv: nn.Conv2d) -> bool:
    """A Conv2d subclass with its own forward and no padding of its own attribute: it pads its
    input inside forward (TensorFlow "SAME" padding, as the EfficientNet ports do)."""
    return type(conv).forward is not nn.Conv2d.forward and conv.padding in ("valid", (0, 0))


def _same_padded(conv: nn.Conv2d, x: torch.Tensor, output_size: Sequence[int]) -> torch.Tensor:
    """The input padded as TensorFlow's "SAME" rule pads it, read off the output size: per axis
    total = (out - 1) * stride + (k - 1) * dilation + 1 - in, the odd row/column at the end."""
    pads = []
    for size, out, k, stride, dilation in zip(reversed(x.shape[-2:]), reversed(output_size),
                                              reversed(conv.kernel_size), reversed(conv.stride),
                                              reversed(conv.dilation)):
        total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


def layer_rows(module: nn.Module, x: torch.Tensor, output: torch.Tensor | None = None) -> torch.Tensor:
    """The rows a layer multiplies by its weight: (groups, rows, d), float64.

    Linear: every input vector (all leading axes flattened), one group.
    Conv2d: every unfolded input patch of every image, split by group. A Conv2d subclass that
    pads its input inside its own forward (``_pads_itself``) needs its ``output`` to tell the
    padding; the patches are checked to number the output's positions.
    """
    if isinstance(module, nn.Linear):
        return x.reshape(1, -1, x.shape[-1]).to(torch.float64)
    if _pads_itself(module):
        if output is None:
            raise ValueError(f"{type(module).__name__} pads its input inside forward: its rows need "
                             "the layer's output to tell the padding")
        padded = _same_padded(module, x, output.shape[-2:])
    else:
        padded = _padded(module, x)
    patches = F.unfold(padded, module.kernel_size, dilation=module.dilation,
                       stride=module.stride)  # (B, in * kh * kw, positions)
    if output is not None and patches.shape[-1] != output.shape[-2] * output.shape[-1]:
        raise ValueError(f"{type(module).__name__}: {patches.shape[-1]} unfolded patches for an output "
                         f"of {tuple(output.shape[-2:])}: the layer pads or strides in a way RegMean "
                         "cannot read")
    groups = module.groups
    batch, width, positions = patches.shape
    patches = patches.view(batch, groups, width // groups, positions)
    return patches.permute(1, 0, 3, 2).reshape(groups, batch * positions, width // groups) \
        .to(torch.float64)


def _weight_key(module_name: str) -> str:
    return f"{module_name}.weight" if module_name else "weight"  # "": the model is the layer


def regmean_grams(model: nn.Module, batches: Iterable[Any], forward: Forward | None = None,
                  state: StateDict | None = None) -> dict[str, torch.Tensor]:
    """One domain's Gram matrices of every nn.Linear and nn.Conv2d layer's inputs.

    Runs ``model`` (weights from ``state`` if given, else its own) in eval mode
    over ``batches``; forward hooks read each layer's input. Returns
    ``{weight key: G}`` with G = X^T X / N over the N rows the layer saw (d x d,
    or groups x d x d for a grouped convolution), accumulated in float64 and
    stored in the weight's dtype. Dividing by N weighs every domain alike,
    whatever the size of its calibration set; with equal sizes it is the
    paper's X^T X up to a common factor, which cancels in the merge. Layers the
    forward never calls as modules are left out, and their weights are then
    averaged: so are the projections of ``nn.MultiheadAttention``, which reads
    ``in_proj_weight`` and ``out_proj.weight`` directly.
    Size: d^2 * groups entries per layer, e.g. 4 * (9 * 512)^2 bytes = 85 MB for a
    float32 3x3 conv with 512 input channels.
    """
    state = on_device(model.state_dict() if state is None else state, model)
    check_state_keys(model, state, "state")
    sums: dict[str, torch.Tensor] = {}
    rows: dict[str, int] = {}
    handles = []

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            x = layer_rows(module, inputs[0], output)
            gram = x.transpose(1, 2) @ x
            sums[name] = gram if name not in sums else sums[name] + gram
            rows[name] = rows.get(name, 0) + x.shape[1]
        return record

    layers = {name: module for name, module in model.named_modules()
              if isinstance(module, (nn.Linear, nn.Conv2d)) and _weight_key(name) in state}
    for name, module in layers.items():
        handles.append(module.register_forward_hook(hook(name)))
    try:
        with torch.no_grad(), evaluating(model):
            for batch in batches:
                run(model, state, batch, forward)
    finally:
        for handle in handles:
            handle.remove()
    grams = {}
    for name, total in sums.items():
        gram = total / rows[name]
        grams[_weight_key(name)] = (gram[0] if gram.shape[0] == 1 else gram) \
            .to(state[_weight_key(name)].dtype).cpu()
    return grams


def _regmean_weight(key: str, weights: list[torch.Tensor], grams: list[torch.Tensor],
                    alpha: float) -> torch.Tensor:
    shape, dtype = weights[0].shape, weights[0].dtype
    blocks = [g.to(torch.float64).reshape(-1, g.shape[-2], g.shape[-1]) for g in grams]
    groups, width = blocks[0].shape[0], blocks[0].shape[-1]
    if (blocks[0].shape[-2] != width or any(b.shape != blocks[0].shape for b in blocks)
            or weights[0].dim() < 2 or shape[0] % groups or weights[0][0].numel() != width):
        raise ValueError(f"Gram matrices of shapes {[tuple(g.shape) for g in grams]} do not fit "
                         f"weight {_names([key])} of shape {tuple(shape)}")
    per_group = shape[0] // groups
    lhs = torch.zeros_like(blocks[0])
    rhs = torch.zeros(groups, width, per_group, dtype=torch.float64)
    for weight, gram in zip(weights, blocks):
        diagonal = torch.diag_embed(torch.diagonal(gram, dim1=-2, dim2=-1))
        shrunk = alpha * gram + (1.0 - alpha) * diagonal
        w = weight.to(torch.float64).reshape(groups, per_group, width)
        lhs += shrunk
        rhs += shrunk @ w.transpose(1, 2)  # G~_k W_k^T: (groups, d, out/groups)
    # An input feature no domain ever fed (zero row and column of every G) leaves
    # its weights undetermined; giving it G~_k[j, j] = 1 in every domain decouples
    # it and makes its merged weights the plain average, as for unseen layers.
    unseen = torch.diagonal(lhs, dim1=-2, dim2=-1) == 0
    if bool(unseen.any()):
        lhs = lhs + torch.diag_embed(unseen.to(torch.float64) * len(weights))
        total = sum(w.to(torch.float64).reshape(groups, per_group, width) for w in weights)
        rhs = rhs + unseen.unsqueeze(-1) * total.transpose(1, 2)
    try:
        solution = torch.linalg.solve(lhs, rhs)
    except torch.linalg.LinAlgError:  # alpha = 1 with collinear inputs: least-norm solution
        solution = torch.linalg.lstsq(lhs, rhs, driver="gelsd").solution
    return solution.transpose(1, 2).reshape(shape).to(dtype)


def regmean(state_dicts: Sequence[StateDict], grams: Sequence[Mapping[str, torch.Tensor]],
            alpha: float = 0.9, buffers: str = "pooled") -> dict[str, torch.Tensor]:
    """RegMean merge of K models given each one's Gram matrices (:func:`regmean_grams`).

    Every weight with a Gram matrix in all K domains is merged in closed form,
    W* = (sum_k W_k G~_k)(sum_k G~_k)^-1 per group, G~ = alpha G + (1 - alpha) diag(G),
    in float64. Every other float parameter (biases, norms, layers without
    statistics) is averaged and BatchNorm statistics are pooled by ``buffers``,
    as ``fusion.merge_linear`` does. ``alpha`` in [0, 1]; the paper tunes it per
    setting, our default 0.9 shrinks the off-diagonal mildly. With equal Gram
    matrices in every domain the result is the plain average.
    """
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha {alpha} outside [0, 1]")
    keys = check_compatible(state_dicts)
    check_finite(state_dicts)
    covered = check_statistics(state_dicts, grams, "Gram matrices")
    rest = [k for k in keys if k not in set(covered)]
    merged = merge_linear([{k: sd[k] for k in rest} for sd in state_dicts], None, buffers) \
        if rest else {}
    for key in covered:
        merged[key] = _regmean_weight(key, [sd[key] for sd in state_dicts],
                                      [g[key] for g in grams], alpha)
    return {k: merged[k] for k in keys}
