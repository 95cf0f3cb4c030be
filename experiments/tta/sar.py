"""SAR: sharpness-aware and reliable entropy minimisation (Niu et al., "Towards Stable
Test-time Adaptation in Dynamic Wild World", ICLR 2023).

Per test batch (Algorithm 1):
1. reliable entropy filter: keep samples with E(x) < E_0 = 0.4 ln C (Eq. 2); the loss is
   their mean entropy;
2. sharpness-aware update (SAM, Foret et al. 2021; SAR Eq. 5-6) of the norm affine
   parameters: first pass gives the gradient g, the weights move to w + rho g / ||g||
   (rho = 0.05), a second pass on the perturbed weights filters again with E_0 and its
   gradient, taken at w + e, updates the original w with the base optimiser;
3. model recovery (Sec. 4.3): an exponential moving average of the second pass's loss,
   ema <- 0.9 ema + 0.1 loss, and a reset to the source weights (and optimiser state)
   whenever ema < e_m; the paper's e_m is 0.2, here ``reset_threshold``.

Defaults: SGD, momentum 0.9; the learning rate of the released main.py (mr-eggplant/SAR,
``common.sar_lr``): 0.00025 x B / 32 below batch 32, 0.00025 from 32 up, doubled for SAR at
batch size 1 ("double lr for sar under bs=1"). The released ``collect_params`` also leaves
a ResNet's ``layer4`` (and a ViT's blocks 9-11 and final norm) out of the update: here
``exclude`` (configs/adapt.yaml passes ``backbone.layer4``). For segmentation every pixel
is a sample.
"""

from __future__ import annotations

import torch
from torch import nn

from experiments.tta.common import (MOMENTUM, Adapter, Forward, as_samples, configure_model, entropy,
                                    entropy_margin, plain_forward, sar_lr)

RHO = 0.05             # SAM neighbourhood radius (SAR, Sec. 5)
RESET_THRESHOLD = 0.2  # e_m of the model recovery (SAR, Sec. 4.3)
EMA_FACTOR = 0.9


def reliable_entropy(logits: torch.Tensor, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy of each sample (pixel or image) and the mask of those below ``margin``."""
    ent = entropy(as_samples(logits))
    return ent, ent < margin


class SAR(Adapter):
    """Reliable, sharpness-aware entropy minimisation with model recovery."""

    name = "sar"

    def __init__(self, model: nn.Module, num_classes: int, forward: Forward = plain_forward,
                 batch_size: int = 64, lr: float | None = None, momentum: float = MOMENTUM,
                 rho: float = RHO, margin_fraction: float = 0.4,
                 reset_threshold: float | None = RESET_THRESHOLD,
                 exclude: tuple[str, ...] = ()) -> None:
        self.params = configure_model(model, adapt=True, exclude=tuple(exclude))
        self.lr = sar_lr(batch_size, self.name) if lr is None else lr
        super().__init__(model, forward, torch.optim.SGD(self.params, lr=self.lr, momentum=momentum))
        self.margin = entropy_margin(num_classes, margin_fraction)
        self.rho = rho
        self.reset_threshold = reset_threshold
        self.ema: float | None = None
        self.kept = self.seen = self.recoveries = 0

    def reset(self) -> None:
        super().reset()
        self.ema = None

    def _perturb(self) -> list[torch.Tensor]:
        """Move every parameter to w + rho g / ||g|| (SAM's first step); return the offsets."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        norm = torch.norm(torch.stack([g.norm(2) for g in grads]), 2)
        scale = self.rho / (norm + 1e-12)
        offsets = []
        with torch.no_grad():
            for p, g in zip(self.params, grads):
                e = g * scale
                p.add_(e)
                offsets.append(e)
        return offsets

    def step(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.forward(self.model, images)
        ent, keep = reliable_entropy(logits, self.margin)
        self.seen += keep.numel()
        if not bool(keep.any()):
            return logits.detach()          # nothing reliable: no update, ema unchanged
        self.kept += int(keep.sum())
        self.optimizer.zero_grad(set_to_none=True)
        ent[keep].mean().backward()
        offsets = self._perturb()
        # second pass at w + e, restricted to the first pass's reliable samples and filtered
        # again (SAR's Algorithm 1 as released)
        self.optimizer.zero_grad(set_to_none=True)
        ent2 = entropy(as_samples(self.forward(self.model, images)))[keep]
        keep2 = ent2 < self.margin
        loss2 = ent2[keep2].mean() if bool(keep2.any()) else None
        if loss2 is not None:
            loss2.backward()
        with torch.no_grad():
            for p, e in zip(self.params, offsets):
                p.sub_(e)                    # back to w; the gradient stays the one at w + e
        if loss2 is not None:
            self.optimizer.step()
            value = float(loss2.detach())
            self.ema = value if self.ema is None else EMA_FACTOR * self.ema + (1 - EMA_FACTOR) * value
            self.last_loss = value
        if self.reset_threshold is not None and self.ema is not None and self.ema < self.reset_threshold:
            self.recoveries += 1
            self.reset()                     # Sec. 4.3: collapse detected, recover the source model
        return logits.detach()
