"""Tent: fully test-time adaptation by entropy minimisation (Wang et al., ICLR 2021).

Each test batch is predicted, then one gradient step minimises the mean Shannon entropy
of those predictions (Eq. 2) with respect to the normalisation layers' affine parameters
only; BatchNorm uses test-batch statistics (Sec. 3). For segmentation the entropy is
averaged over every pixel of the batch.

Defaults (Sec. 4, ImageNet-C): SGD, momentum 0.9, lr 0.00025 at batch 64, here scaled
linearly with the batch size (lr x B / 64) as SAR's experiments do (Niu et al. 2023,
Sec. 5) so that batch-size sweeps compare like with like.
"""

from __future__ import annotations

import torch
from torch import nn

from experiments.tta.common import Adapter, Forward, configure_model, entropy, plain_forward, scaled_lr

BASE_LR = 0.00025  # Tent, Sec. 4: ImageNet, batch 64
MOMENTUM = 0.9


class Tent(Adapter):
    """Entropy minimisation of the norm affine parameters, one SGD step per batch."""

    name = "tent"

    def __init__(self, model: nn.Module, forward: Forward = plain_forward, batch_size: int = 64,
                 lr: float | None = None, momentum: float = MOMENTUM,
                 exclude: tuple[str, ...] = ()) -> None:
        params = configure_model(model, adapt=True, exclude=exclude)
        self.lr = scaled_lr(BASE_LR, batch_size) if lr is None else lr
        optimizer = torch.optim.SGD(params, lr=self.lr, momentum=momentum)
        super().__init__(model, forward, optimizer)

    def step(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.forward(self.model, images)
        loss = entropy(logits).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.last_loss = float(loss.detach())
        return logits.detach()
