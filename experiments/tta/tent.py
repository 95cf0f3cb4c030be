"""Tent: fully test-time adaptation by entropy minimisation (Wang et al., ICLR 2021).

Each test batch is predicted, then one gradient step minimises the mean Shannon entropy
of those predictions (Eq. 2) with respect to the normalisation layers' affine parameters
only; BatchNorm uses test-batch statistics (Sec. 3). For segmentation the entropy is
averaged over every pixel of the batch.

Defaults (Sec. 4, ImageNet-C): SGD, momentum 0.9, lr 0.00025 at batch 64. The paper states
no rule for other batch sizes; at batch size B this implementation takes SAR's rule
(``common.sar_lr``: the released SAR main.py runs Tent with it in every wild setting),
0.00025 x B / 32 below batch 32 and 0.00025 from 32 up, which is Tent's 0.00025 at 64.
"""

from __future__ import annotations

import torch
from torch import nn

from experiments.tta.common import (BASE_LR, MOMENTUM, Adapter, Forward, configure_model, entropy,  # noqa: F401
                                    plain_forward, sar_lr)


class Tent(Adapter):
    """Entropy minimisation of the norm affine parameters, one SGD step per batch."""

    name = "tent"

    def __init__(self, model: nn.Module, forward: Forward = plain_forward, batch_size: int = 64,
                 lr: float | None = None, momentum: float = MOMENTUM,
                 exclude: tuple[str, ...] = ()) -> None:
        params = configure_model(model, adapt=True, exclude=tuple(exclude))
        self.lr = sar_lr(batch_size, self.name) if lr is None else lr
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
