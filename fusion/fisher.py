"""Fisher merging (Matena & Raffel, NeurIPS 2022, "Merging Models with Fisher-Weighted
Averaging", arXiv:2111.09832).

Each model is a Gaussian posterior around its weights with precision given by
its diagonal Fisher information F_k; the merged model maximises the joint
posterior, a per-entry precision-weighted average:

    theta = sum_k lambda_k F_k theta_k / sum_k lambda_k F_k.

F_k comes from the model's own predictions on unlabelled images of its domain
(no labels needed), F = E_x E_{y ~ p(y|x)} [(grad_theta log p(y|x))^2].
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from .forward import Forward, check_state_keys, evaluating, log_probabilities, on_device, run
from .linear import merge_linear
from .state import StateDict, _names, check_compatible, check_finite, check_weights
from .statistics import check_statistics

LABELS = ("sample", "argmax")


def _image_log_likelihoods(logits: torch.Tensor, labels: str,
                           generator: torch.Generator | None) -> torch.Tensor:
    """log p(y | x) per image, averaged over pixels, for labels y drawn from the model."""
    log_p = log_probabilities(logits)
    with torch.no_grad():
        if labels == "argmax":
            y = log_p.argmax(1)
        else:
            classes = log_p.shape[1]
            probabilities = log_p.exp().movedim(1, -1).reshape(-1, classes)
            y = torch.multinomial(probabilities, 1, generator=generator) \
                .view(log_p.shape[0], *log_p.shape[2:])
    picked = log_p.gather(1, y.unsqueeze(1)).squeeze(1)
    return picked.reshape(picked.shape[0], -1).mean(1)


def fisher_information(model: torch.nn.Module, batches: Iterable[Any], forward: Forward | None = None,
                       state: StateDict | None = None, labels: str = "sample",
                       seed: int = 0) -> dict[str, torch.Tensor]:
    """One domain's diagonal Fisher of every trainable parameter, keyed by its name.

    For each image x of ``batches`` (model in eval mode, weights from ``state``
    if given): labels y are drawn per pixel from the model's own softmax
    (``labels="sample"``, a one-sample estimate of the expectation over y, the
    paper's Fisher rather than the "empirical" one; generator seeded with
    ``seed``) or taken as its prediction (``"argmax"``); the image's
    log-likelihood is the mean over its pixels of log p(y_pixel | x), and its
    gradient is squared entry by entry. F is the mean of these squares over the
    images. One backward pass per image, all from one forward pass per batch
    (eval-mode BatchNorm keeps the images of a batch independent). Accumulated
    in float64, returned in each parameter's dtype; as large as the parameters.
    """
    if labels not in LABELS:
        raise ValueError(f"labels {labels!r} unknown; choose one of {LABELS}")
    state = on_device(model.state_dict() if state is None else state, model)
    check_state_keys(model, state, "state")
    names = [n for n, p in model.named_parameters() if p.requires_grad and p.is_floating_point()]
    leaves = {n: state[n].detach().requires_grad_(True) for n in names}
    squares = {n: torch.zeros(t.shape, dtype=torch.float64, device=t.device) for n, t in leaves.items()}
    images, generator = 0, None
    with evaluating(model):
        for batch in batches:
            logits = run(model, {**state, **leaves}, batch, forward)
            if generator is None and labels == "sample":
                generator = torch.Generator(device=logits.device).manual_seed(int(seed))
            likelihoods = _image_log_likelihoods(logits, labels, generator)
            for index in range(likelihoods.shape[0]):
                grads = torch.autograd.grad(likelihoods[index], list(leaves.values()),
                                            retain_graph=index < likelihoods.shape[0] - 1,
                                            allow_unused=True)
                for name, grad in zip(leaves, grads):
                    if grad is not None:
                        squares[name] += grad.to(torch.float64).square()
            images += likelihoods.shape[0]
    if images == 0:
        raise ValueError("no batches given to fisher_information")
    return {n: (squares[n] / images).to(leaves[n].dtype).cpu() for n in names}


def fisher_merge(state_dicts: Sequence[StateDict], fishers: Sequence[Mapping[str, torch.Tensor]],
                 weights: Sequence[float] | None = None, epsilon: float = 1e-6,
                 buffers: str = "pooled") -> dict[str, torch.Tensor]:
    """Fisher-weighted average of K models (the paper's Eq. for isotropic priors).

    theta = sum_k w_k F~_k theta_k / sum_k w_k F~_k per entry, F~ = max(F, ``epsilon``),
    in float64; ``weights`` w_k (the paper's lambda_k) default 1/K. The floor keeps
    the ratio defined: where every model's Fisher is at most ``epsilon`` (an
    entry no domain's loss depends on), the result is the weighted average
    sum_k w_k theta_k. Float parameters without a Fisher are averaged with
    ``weights``; BatchNorm statistics are pooled by ``buffers``
    (``fusion.merge_linear``'s rules). With equal Fishers it is the weighted average.
    """
    epsilon = float(epsilon)
    if not epsilon > 0.0:
        raise ValueError(f"epsilon {epsilon} must be positive (it keeps the weights defined)")
    keys = check_compatible(state_dicts)
    check_finite(state_dicts)
    weights = check_weights(weights, len(state_dicts))
    covered = check_statistics(state_dicts, fishers, "Fisher information")
    shapes = [k for k in covered if any(f[k].shape != state_dicts[0][k].shape for f in fishers)]
    if shapes:
        raise ValueError(f"Fisher information of another shape than its parameter: {_names(shapes)}")
    negative = [k for k in covered if any(bool((f[k] < 0).any()) for f in fishers)]
    if negative:
        raise ValueError(f"negative Fisher information in: {_names(negative)}")
    rest = [k for k in keys if k not in set(covered)]
    merged = merge_linear([{k: sd[k] for k in rest} for sd in state_dicts], weights, buffers) \
        if rest else {}
    for key in covered:
        numerator = torch.zeros(state_dicts[0][key].shape, dtype=torch.float64)
        denominator = torch.zeros_like(numerator)
        for weight, model, fisher in zip(weights, state_dicts, fishers):
            precision = weight * fisher[key].to(torch.float64).clamp(min=epsilon)
            numerator += precision * model[key].to(torch.float64)
            denominator += precision
        merged[key] = (numerator / denominator).to(state_dicts[0][key].dtype)
    return {k: merged[k] for k in keys}
