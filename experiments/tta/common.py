"""Shared pieces of the test-time adaptation (TTA) methods.

Every method adapts only the affine parameters (weight and bias) of the normalisation
layers, as Tent (Wang et al., ICLR 2021, Sec. 3) proposes and EATA / SAR keep; all other
parameters are frozen. ``Adapter`` is the common frame: it keeps an exact copy of the
source weights (for resets and SAR's model recovery), predicts on each test batch and
adapts on that same batch (online, one step per batch).

BatchNorm and single-sample batches: with test-batch statistics a BatchNorm layer needs
more than one value per channel, i.e. batch x height x width > 1. Segmentation feature
maps satisfy this at batch size 1 (statistics of one image's pixels), classification
features after global pooling do not. ``check_batch_statistics`` turns PyTorch's opaque
error into one naming the layer, and warns once that one image's statistics stand in
for the test distribution (the failure mode SAR, Niu et al. 2023, Sec. 4, measures).
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

NORM_TYPES = (_BatchNorm, nn.GroupNorm, nn.LayerNorm)
Forward = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def plain_forward(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Logits of a classifier (``model(images)``); segmentors pass ``experiments.models.segment``."""
    return model(images)


def norm_layers(model: nn.Module, exclude: tuple[str, ...] = ()) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of every BatchNorm / GroupNorm / LayerNorm, skipping names that start
    with any prefix in ``exclude`` (SAR leaves a ViT's last block and a ResNet-GN's last
    stage frozen, Niu et al. 2023, App. B)."""
    for name, module in model.named_modules():
        if isinstance(module, NORM_TYPES) and not name.startswith(exclude or ("\0",)):
            yield name, module


def collect_norm_params(model: nn.Module, exclude: tuple[str, ...] = ()
                        ) -> tuple[list[nn.Parameter], list[str]]:
    """The affine parameters of the normalisation layers and their state-dict names."""
    params, names = [], []
    for layer_name, layer in norm_layers(model, exclude):
        for attr in ("weight", "bias"):
            p = getattr(layer, attr, None)
            if isinstance(p, nn.Parameter):
                params.append(p)
                names.append(f"{layer_name}.{attr}" if layer_name else attr)
    if not params:
        raise ValueError(f"{type(model).__name__} has no affine normalisation parameters to adapt")
    return params, names


def use_batch_statistics(model: nn.Module) -> None:
    """BatchNorm layers normalise with the test batch's statistics and leave their running
    buffers untouched (train mode with ``track_running_stats=False``; PyTorch then passes no
    buffers to ``F.batch_norm``), so the source statistics survive for resets."""
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.train()
            module.track_running_stats = False


def configure_model(model: nn.Module, adapt: bool = True, exclude: tuple[str, ...] = ()
                    ) -> list[nn.Parameter]:
    """Put ``model`` in the TTA state and return the parameters to optimise.

    Everything runs in eval mode (dropout off) except BatchNorm, which uses test-batch
    statistics (Tent, Sec. 3: "normalization statistics are estimated on the test data").
    Only the norm affine parameters require gradients.
    """
    model.eval()
    use_batch_statistics(model)
    model.requires_grad_(False)
    if not adapt:
        return []
    params, _ = collect_norm_params(model, exclude)
    for p in params:
        p.requires_grad_(True)
    return params


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of softmax(logits) over dim 1: B for B x C, B x H x W for
    B x C x H x W. Computed from log-softmax for stability."""
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


def as_samples(logits: torch.Tensor) -> torch.Tensor:
    """B x C logits stay as they are; B x C x H x W become (B*H*W) x C, one row per pixel."""
    if logits.ndim == 2:
        return logits
    return logits.movedim(1, -1).reshape(-1, logits.shape[1])


def entropy_margin(num_classes: int, fraction: float = 0.4) -> float:
    """E_0 = fraction * ln C: EATA's (Niu et al. 2022, Eq. 4) and SAR's (Eq. 2) threshold."""
    return fraction * math.log(num_classes)


BASE_LR = 0.00025   # SGD, momentum 0.9, at batch 64: Tent (Sec. 4, ImageNet-C), EATA (Sec. 5); SAR's main.py from B >= 32
MOMENTUM = 0.9
LR_BATCH_THRESHOLD = 32


def sar_lr(batch_size: int, method: str = "tent", base_lr: float = BASE_LR) -> float:
    """The learning rate of ``method`` at batch size ``batch_size`` under SAR's rule.

    What each source states:

    - Tent (Wang et al., ICLR 2021, Sec. 4, ImageNet-C): SGD, momentum 0.9, lr 0.00025 at
      batch 64. No rule for other batch sizes (the released code, DequanWang/tent, ships
      only the CIFAR-10-C example: Adam, lr 1e-3, batch 128).
    - EATA (Niu et al., ICML 2022, Sec. 5): SGD, momentum 0.9, lr 0.00025 at batch 64; the
      released main.py (mr-eggplant/EATA) hard-codes 0.00025 whatever ``--batch_size``.
    - SAR (Niu et al., ICLR 2023): its released main.py (mr-eggplant/SAR, the code behind
      the paper's wild-world tables, which runs Tent, EATA and SAR alike) sets, for the
      BatchNorm and GroupNorm ResNet-50s,
      ``lr = (0.00025 / 64) * bs * 2 if bs < 32 else 0.00025``, i.e. 0.00025 x B / 32 below
      batch 32 and 0.00025 from batch 32 up (so it agrees with Tent and EATA at batch 64);
      then, for SAR only and only at batch size 1 (``exp_type == 'bs1'``),
      ``args.lr = 2 * args.lr`` ("double lr for sar under bs=1"). (ViT-LN models get
      0.001 / 64 x B there; no model of this project is a ViT.)

    The wild-world protocol this project reproduces is SAR's, so every method takes SAR's
    rule: ``method`` only decides the x 2 of SAR at B = 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lr = (base_lr / 64) * batch_size * 2 if batch_size < LR_BATCH_THRESHOLD else base_lr
    if method == "sar" and batch_size == 1:
        lr = 2 * lr
    return lr


def check_batch_statistics(model: nn.Module, method: str) -> list[torch.utils.hooks.RemovableHandle]:
    """Hooks on BatchNorm layers using batch statistics that fail clearly where a batch has
    one value per channel and warn once when a batch holds a single sample."""
    warned = [False]

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if not module.training or getattr(module, "tta_prior", 0):
            return  # running or blended (prior > 0) statistics are defined for one sample
        x = inputs[0]
        values = x.shape[0] * (x[0, 0].numel() if x.ndim > 2 else 1)
        if values <= 1:
            raise ValueError(
                f"{method}: BatchNorm layer {names[module]!r} sees input {tuple(x.shape)}, one value "
                "per channel, so test-batch statistics are undefined; use batch size > 1, a prior "
                "strength N > 0 (bn_adapt), or a GroupNorm/LayerNorm model")
        if x.shape[0] == 1 and not warned[0]:
            warned[0] = True
            warnings.warn(f"{method}: batch size 1 with BatchNorm normalises with the statistics of "
                          "one image; expect degraded accuracy (SAR, Niu et al. 2023, Sec. 4)",
                          stacklevel=2)

    names = {m: n for n, m in model.named_modules()}
    return [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, _BatchNorm)]


class Adapter:
    """Online TTA around ``model``: ``adapter(images)`` returns logits for the batch (the
    prediction made before this batch's update, as in Tent's online protocol) and adapts.

    Subclasses implement ``step(images) -> logits``. ``reset()`` restores the source
    weights and buffers bit for bit and the optimiser state.
    """

    name = "source"

    def __init__(self, model: nn.Module, forward: Forward = plain_forward,
                 optimizer: torch.optim.Optimizer | None = None) -> None:
        self.model = model
        self.forward = forward
        self.optimizer = optimizer
        self.source_state = copy.deepcopy(model.state_dict())
        self.optimizer_state = copy.deepcopy(optimizer.state_dict()) if optimizer else None
        self.resets = 0
        self._hooks = check_batch_statistics(model, self.name)

    def reset(self) -> None:
        self.model.load_state_dict(self.source_state)
        if self.optimizer is not None:
            self.optimizer.load_state_dict(self.optimizer_state)
        self.resets += 1

    def step(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.forward(self.model, images)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.step(images)


class NoAdaptation(Adapter):
    """The source model with its running statistics: the 'no TTA' row."""

    name = "source"

    def __init__(self, model: nn.Module, forward: Forward = plain_forward) -> None:
        model.eval()
        super().__init__(model, forward)
