"""Training, evaluation and the interpolation path of the classification check.

One recipe for every initialisation (pretrained, random, the second pretraining): the
comparison is only fair when nothing but the starting point differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from analysis.metrics import loss_barrier  # noqa: F401  (part of this module's interface)
from experiments.infra.runs import atomic_path


@dataclass(frozen=True)
class Recipe:
    """Plain SGD fine-tuning with a cosine learning-rate decay."""

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4


def train_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                     recipe: Recipe, seed: int) -> dict[str, float]:
    """Train ``model`` in place on ``images``/``labels``; returns the last epoch's mean loss."""
    if len(images) == 0:
        raise ValueError("no training images")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay)
    steps_per_epoch = math.ceil(len(images) / recipe.batch_size)
    total = max(1, recipe.epochs * steps_per_epoch)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * step / total)))
    model.train()
    epoch_loss = float("nan")
    for _ in range(recipe.epochs):
        order = torch.randperm(len(images), generator=generator)
        summed, seen = 0.0, 0
        for start in range(0, len(images), recipe.batch_size):
            index = order[start:start + recipe.batch_size]
            if len(index) < 2:  # BatchNorm cannot normalise a single example
                continue
            loss = F.cross_entropy(model(images[index]), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            summed += loss.item() * len(index)
            seen += len(index)
        epoch_loss = summed / max(seen, 1)
    if not math.isfinite(epoch_loss):
        raise FloatingPointError(f"training diverged: last epoch loss {epoch_loss}")
    return {"train_loss": epoch_loss, "steps": total}


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 50) -> dict[str, float]:
    """Top-1 accuracy (percent) and mean cross-entropy, accumulated in float64.

    Small batches: at 64 px a batch of 500 leaves the CPU cache and runs 3x slower per
    image than one of 50 (measured, one thread); eval-mode results do not depend on it.
    """
    model.eval()
    correct, loss = 0, torch.zeros((), dtype=torch.float64)
    for start in range(0, len(images), batch_size):
        logits = model(images[start:start + batch_size]).double()
        target = labels[start:start + batch_size]
        loss += F.cross_entropy(logits, target, reduction="sum")
        correct += int((logits.argmax(dim=1) == target).sum())
    return {"accuracy": 100.0 * correct / len(images), "loss": float(loss) / len(images)}


def interpolation_path(model: nn.Module, state_a: Mapping[str, torch.Tensor],
                       state_b: Mapping[str, torch.Tensor], alphas: Sequence[float],
                       images: torch.Tensor, labels: torch.Tensor,
                       known: Mapping[float, Mapping[str, float]] | None = None
                       ) -> list[dict[str, float]]:
    """Evaluate theta(alpha) = (1 - alpha) theta_A + alpha theta_B for each alpha.

    BatchNorm statistics along the path are pooled with the same weights (1 - alpha,
    alpha), the buffer rule of the paper's merge (docs/method.md), so alpha 0 and 1 are
    the models themselves. ``known``: alpha -> an evaluation already made of that point
    on these images (an endpoint shared with another panel), reused instead of redone.
    """
    from fusion import interpolate

    known = known or {}
    rows = []
    for alpha in alphas:
        if float(alpha) in known:
            row = known[float(alpha)]
            rows.append({"alpha": float(alpha), "accuracy": row["accuracy"], "loss": row["loss"]})
            continue
        model.load_state_dict(interpolate(state_a, state_b, float(alpha), buffers="pooled_by_weight"))
        rows.append({"alpha": float(alpha), **evaluate(model, images, labels)})
    return rows


def equal_counters(state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor]) -> bool:
    """Whether every BatchNorm counter agrees: then the counter-pooled midpoint merge and
    the weight-pooled path point at alpha 0.5 are the same model."""
    keys = [k for k in state_a if k.endswith("num_batches_tracked")]
    return all(torch.equal(state_a[k], state_b[k]) for k in keys)


def merge_midpoint(state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor]
                   ) -> dict[str, torch.Tensor]:
    """The paper's merge of two models: mean of the weights, pooled BatchNorm statistics."""
    from fusion import merge_linear

    return merge_linear([state_a, state_b], buffers="pooled")


def batchnorm_layers(model: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int = 50) -> None:
    """Replace every BatchNorm's running statistics by their cumulative average over
    ``images`` (no weight changes; a REPAIR-style reset, which needs data, unlike the
    pooled merge). Only the BatchNorm layers run in training mode: drop-connect and
    dropout stay off, so the statistics are those of the network that is evaluated."""
    layers = batchnorm_layers(model)
    momenta = {bn: bn.momentum for _, bn in layers}
    model.eval()
    for _, bn in layers:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    try:
        for start in range(0, len(images), batch_size):
            index = order[start:start + batch_size]
            if len(index) > 1:
                model(images[index])
    finally:
        for bn, momentum in momenta.items():
            bn.momentum = momentum
        model.eval()


def save_state(state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Write a state dict atomically (a reader never sees half a checkpoint)."""
    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the model's state dict, safe from later in-place training."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
