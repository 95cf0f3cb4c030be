"""EATA: efficient anti-forgetting test-time adaptation (Niu et al., ICML 2022).

On top of Tent's entropy minimisation of norm affine parameters (Sec. 4):
- reliable samples: keep samples with entropy E < E_0 = 0.4 ln C (Eq. 4) and weight each
  by 1 / exp(E - E_0) (Eq. 5);
- non-redundant samples: keep a sample only when the cosine similarity between its
  probability vector and a moving average m of earlier reliable samples' probabilities
  is below epsilon = 0.05; m <- 0.9 m + 0.1 mean(kept probabilities) (Eq. 6);
- anti-forgetting: lambda * sum_i F_i (theta_i - theta_i^source)^2 with the diagonal
  Fisher F_i from squared gradients of the pseudo-label cross-entropy on a few held-out
  samples, lambda = 2000 (Eq. 9, Sec. 5).
Defaults: SGD, momentum 0.9, lr 0.00025 at batch 64 (Sec. 5; the released main.py,
mr-eggplant/EATA, hard-codes 0.00025 and states no rule for other batch sizes); at batch
size B, SAR's rule (``common.sar_lr``, as SAR's released main.py runs EATA): 0.00025 x B / 32
below batch 32, 0.00025 from 32 up.

Segmentation: every pixel is a sample for both filters and the weights (a design choice
of this implementation). epsilon = 0.05 was chosen for C = 1000 near-one-hot ImageNet
predictions; with C = 19 it keeps mostly pixels of classes that are rare in the moving
average. It is kept at the paper's value, not tuned.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from experiments.tta.common import (MOMENTUM, Adapter, Forward, as_samples, collect_norm_params, configure_model,
                                    entropy, entropy_margin, plain_forward, sar_lr)

FISHER_ALPHA = 2000.0   # lambda of Eq. 9 (EATA, Sec. 5)
REDUNDANCY_EPS = 0.05   # epsilon of the cosine filter (EATA, Sec. 5)


def fisher_information(model: nn.Module, forward: Forward, batches: Iterable[torch.Tensor],
                       exclude: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Diagonal Fisher of the norm affine parameters: mean over ``batches`` of the squared
    gradient of the cross-entropy with the model's own argmax predictions (EATA, Eq. 9).
    Call it on a model already configured for TTA."""
    params, names = collect_norm_params(model, exclude)
    fisher = {n: torch.zeros_like(p) for n, p in zip(names, params)}
    count = 0
    for images in batches:
        logits = forward(model, images)
        loss = F.cross_entropy(logits, logits.argmax(1).detach())
        grads = torch.autograd.grad(loss, params)
        for n, g in zip(names, grads):
            fisher[n] += g.detach() ** 2
        count += 1
    if count == 0:
        raise ValueError("fisher_information needs at least one batch of held-out images")
    return {n: f / count for n, f in fisher.items()}


class EATA(Adapter):
    """Sample-efficient entropy minimisation with a Fisher anti-forgetting penalty."""

    name = "eata"

    def __init__(self, model: nn.Module, num_classes: int, forward: Forward = plain_forward,
                 batch_size: int = 64, lr: float | None = None, momentum: float = MOMENTUM,
                 fisher_batches: Iterable[torch.Tensor] | None = None,
                 fisher: dict[str, torch.Tensor] | None = None, fisher_alpha: float = FISHER_ALPHA, margin_fraction: float = 0.4,
                 redundancy_eps: float = REDUNDANCY_EPS, exclude: tuple[str, ...] = ()) -> None:
        exclude = tuple(exclude)
        params = configure_model(model, adapt=True, exclude=exclude)
        _, self.names = collect_norm_params(model, exclude)
        self.params = params
        self.lr = sar_lr(batch_size, self.name) if lr is None else lr
        super().__init__(model, forward, torch.optim.SGD(params, lr=self.lr, momentum=momentum))
        self.margin = entropy_margin(num_classes, margin_fraction)
        self.redundancy_eps = redundancy_eps
        self.fisher_alpha = fisher_alpha
        self.anchor = [p.detach().clone() for p in params]
        # ``fisher``: a Fisher already computed for this source model (it depends on the
        # model and the held-out images only, so streams of one model can share it)
        self.fisher = fisher if fisher is not None else (
            fisher_information(model, forward, fisher_batches, exclude) if fisher_batches is not None else None)
        self.average_probs: torch.Tensor | None = None
        self.kept = self.seen = 0

    def reset(self) -> None:
        super().reset()
        self.average_probs = None

    def step(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.forward(self.model, images)
        samples = as_samples(logits)                              # N x C (pixels or images)
        ent = entropy(samples)
        keep = ent < self.margin                                  # Eq. 4
        probs = samples.detach().softmax(1)
        if self.average_probs is not None:                        # Eq. 6
            cosine = F.cosine_similarity(probs, self.average_probs[None], dim=1)
            keep &= cosine.abs() < self.redundancy_eps
        weights = torch.exp(-(ent.detach() - self.margin))        # Eq. 5: 1 / exp(E - E_0)
        loss = (ent * weights)[keep].sum() / keep.sum().clamp_min(1)
        if self.fisher is not None:                               # Eq. 9
            penalty = sum((self.fisher[n] * (p - a) ** 2).sum()
                          for n, p, a in zip(self.names, self.params, self.anchor))
            loss = loss + self.fisher_alpha * penalty
        if bool(keep.any()):
            mean = probs[keep].mean(0)
            self.average_probs = mean if self.average_probs is None else 0.9 * self.average_probs + 0.1 * mean
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        self.kept += int(keep.sum())
        self.seen += keep.numel()
        self.last_loss = float(loss.detach())
        return logits.detach()
