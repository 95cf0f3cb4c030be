"""Linear-mode-connectivity curves evaluated in one pass over the data.

A curve theta(alpha) = (1 - alpha) theta_A + alpha theta_B (paper Sec. 4, Fig. LMC)
needs every alpha evaluated on every target domain. Each batch is decoded and
normalised once and then run through every point of the path with
``torch.func.functional_call``: the weights of point i are swapped in for the call,
the module itself is never rewritten. Batching (runs of equal image size) and the
post-processing (one bilinear step to the label size, first-maximum class) are those
of ``experiments.inference.evaluation.evaluate_model``, so every point's confusion matrix is
identical to a full evaluation of that point. The naive loop (one full evaluation
per alpha) is kept for the benchmark (benchmarks/interpolate.py) and as the
reference in tests.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch.func import functional_call

import fusion
from experiments.data.labels import NUM_CLASSES
from experiments.inference.confusion import ConfusionMatrix
from experiments.inference.evaluation import evaluate_model, group_by_size, predict_classes
from experiments.models.segmentors import decoder_logits, normalize


class _Segmenter(torch.nn.Module):
    """Wraps a segmentor so that ``functional_call`` can reparametrise its decoder logits."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return decoder_logits(self.model, images)


def path_state_dicts(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor],
                     alphas: Sequence[float], buffers: str = "pooled_by_weight") -> list[dict]:
    """The state dicts along the path from ``a`` (alpha 0) to ``b`` (alpha 1)."""
    return [fusion.interpolate(a, b, float(alpha), buffers=buffers) for alpha in alphas]


def _batches(dataset: Sequence[dict], batch_size: int):
    """``evaluate_model``'s batches: chunks of ``batch_size`` split into runs of equal size."""
    for start in range(0, len(dataset), batch_size):
        yield from group_by_size([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])


@torch.inference_mode()
def evaluate_path(model: torch.nn.Module, state_dicts: Sequence[Mapping[str, torch.Tensor]],
                  dataset: Sequence[dict], batch_size: int = 8, num_classes: int = NUM_CLASSES,
                  device: str | torch.device | None = None,
                  progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Confusion matrices (P x C x C) of every state dict on ``dataset``, one data pass.

    Every item of ``dataset`` is decoded and normalised once; each batch then runs
    through the P points of the path. Buffers (BatchNorm statistics) are swapped
    in with the parameters, so eval-mode BatchNorm uses each point's own statistics.
    """
    device = torch.device(device or next(model.parameters()).device)
    model = model.to(device).eval()
    wrapper = _Segmenter(model)
    expected = set(model.state_dict())
    for index, sd in enumerate(state_dicts):
        missing, extra = sorted(expected - set(sd)), sorted(set(sd) - expected)
        if missing or extra:
            raise ValueError(f"path point {index} does not match the model: missing keys {missing[:5]}, "
                             f"unexpected keys {extra[:5]}")
    # Non-persistent buffers (the data preprocessor's mean/std) are not in a state
    # dict; strict=False lets them keep the module's own values.
    points = [{f"model.{k}": v.to(device) for k, v in sd.items()} for sd in state_dicts]
    meters = [ConfusionMatrix(num_classes, device=device) for _ in points]
    for items in _batches(dataset, batch_size):
        images = normalize(torch.from_numpy(np.stack([item["image"] for item in items])).to(device))
        target = torch.from_numpy(np.stack([item["label"] for item in items])).to(device)
        for weights, meter in zip(points, meters):
            logits = functional_call(wrapper, weights, (images,), strict=False)
            meter.update(predict_classes(logits, target.shape[1:]), target)
        if progress is not None:
            progress(len(items))
    return np.stack([meter.matrix for meter in meters])


def evaluate_path_naive(model: torch.nn.Module, state_dicts: Sequence[Mapping[str, torch.Tensor]],
                        dataset: Sequence[dict], batch_size: int = 8) -> np.ndarray:
    """The reference: load each point's weights and run a full evaluation."""
    confusions = []
    for sd in state_dicts:
        model.load_state_dict(sd, strict=True)
        confusions.append(evaluate_model(model, dataset, batch_size=batch_size, progress=False))
    return np.stack(confusions)
