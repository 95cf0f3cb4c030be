"""Task arithmetic on sparsified task vectors: DARE and Model Breadcrumbs.

Both keep task arithmetic's form, theta = theta_0 + scale * sum_k m(tau_k) with
tau_k = theta_k - theta_0, and differ in the sparsifier m applied to each
fine-tuned model's float parameters, tensor by tensor. Like the baselines in
``fusion.baselines``, BatchNorm statistics are never task vectors: the
fine-tuned models' statistics are pooled by the ``buffers`` rule (default
``pooled`` by ``num_batches_tracked``) and theta_0's buffers are ignored.
Arithmetic is in float64, the result in theta_0's dtypes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .baselines import _check_finetuned, _merge_buffers, _split
from .state import StateDict

Sparsifier = Callable[[torch.Tensor], torch.Tensor]  # one model's float64 tau -> m(tau)


def sparse_task_arithmetic(base: StateDict, finetuned: Sequence[StateDict], scale: float,
                           buffers: str, sparsify: Callable[[int], Sparsifier]) -> dict[str, torch.Tensor]:
    """theta_0 + scale * sum_k m_k(tau_k), parameter by parameter.

    ``sparsify(k)`` gives model k's sparsifier, called on its task vectors in
    state-dict order (so a random sparsifier draws its masks in a fixed order).
    """
    finetuned = _check_finetuned(finetuned)
    keys, parameters, buffer_keys = _split([base, *finetuned])
    merged = _merge_buffers(finetuned, buffer_keys, None, buffers)
    sparsifiers = [sparsify(index) for index in range(len(finetuned))]
    for key in parameters:
        theta0 = base[key].to(torch.float64)
        total = torch.zeros_like(theta0)
        for model, sparsifier in zip(finetuned, sparsifiers):
            total += sparsifier(model[key].to(torch.float64) - theta0)
        merged[key] = (theta0 + float(scale) * total).to(base[key].dtype)
    return {k: merged[k] for k in keys}


def dare(base: StateDict, finetuned: Sequence[StateDict], drop_rate: float = 0.9,
         scale: float = 1.0, seed: int = 0, buffers: str = "pooled") -> dict[str, torch.Tensor]:
    """DARE, Drop And REscale (Yu et al., ICML 2024, "Language Models are Super Mario",
    arXiv:2311.03099), followed by task arithmetic.

    Each entry of each task vector is dropped with probability p = ``drop_rate``
    and the survivors are divided by (1 - p), so the sparsified tau_k equals tau_k
    in expectation: m_k(tau) = Bernoulli(1 - p) mask * tau / (1 - p). Then
    theta = theta_0 + scale * sum_k m_k(tau_k); p = 0 is task arithmetic exactly.

    Randomness: one ``torch.Generator`` per model, seeded with the k-th number
    drawn from a generator seeded with ``seed``; model k's masks are drawn
    tensor by tensor in state-dict order. A model's masks therefore depend only
    on ``seed``, its index and the keys, not on how many other models are merged.
    The paper's default p = 0.9 assumes small task vectors (it reports that
    DARE fails when fine-tuning moved the weights far); lower it for long
    adaptation runs.
    """
    drop_rate = float(drop_rate)
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"drop_rate {drop_rate} outside [0, 1)")
    keep = 1.0 - drop_rate
    seeds = torch.Generator().manual_seed(int(seed))

    def sparsifier(_: int) -> Sparsifier:
        generator = torch.Generator().manual_seed(
            int(torch.randint(0, 2**62, (), generator=seeds)))

        def drop(tau: torch.Tensor) -> torch.Tensor:
            if drop_rate == 0.0:
                return tau
            mask = torch.rand(tau.shape, generator=generator, dtype=torch.float64) < keep
            return torch.where(mask, tau / keep, torch.zeros_like(tau))
        return drop

    return sparse_task_arithmetic(base, finetuned, scale, buffers, sparsifier)


def model_breadcrumbs(base: StateDict, finetuned: Sequence[StateDict], top: float = 0.01,
                      bottom: float = 0.9, scale: float = 1.0,
                      buffers: str = "pooled") -> dict[str, torch.Tensor]:
    """Model Breadcrumbs (Davari & Belilovsky, ECCV 2024, arXiv:2312.06795).

    Per layer (one parameter tensor of n entries) and per task, the entries of
    tau_k are ranked by magnitude; the floor(``bottom`` * n) smallest (negligible
    perturbations) and the floor(``top`` * n) largest (outliers) are zeroed and
    the middle is kept unscaled. Then theta = theta_0 + scale * sum_k m_k(tau_k).

    The paper writes the two cut-offs as percentiles (beta, gamma); here they are
    named by what they remove, as fractions of each tensor. Ties in magnitude are
    broken by position (a stable sort), so exactly n - floor(bottom n) -
    floor(top n) entries survive in every tensor. The defaults (90 % bottom,
    1 % top) are our choice within the range the paper sweeps; tune them.
    """
    top, bottom = float(top), float(bottom)
    if not (0.0 <= top < 1.0 and 0.0 <= bottom < 1.0 and top + bottom < 1.0):
        raise ValueError(f"top {top} and bottom {bottom} must be fractions in [0, 1) "
                         f"that leave something: top + bottom < 1")

    def crumbs(tau: torch.Tensor) -> torch.Tensor:
        flat = tau.reshape(-1)
        count = flat.numel()
        low, high = math.floor(bottom * count), math.floor(top * count)
        order = torch.sort(flat.abs(), stable=True).indices
        kept = torch.zeros_like(flat)
        middle = order[low:count - high]
        kept[middle] = flat[middle]
        return kept.view(tau.shape)

    return sparse_task_arithmetic(base, finetuned, scale, buffers, lambda _: crumbs)
