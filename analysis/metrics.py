"""Segmentation metrics from a confusion matrix, and the harmonic mean across domains.

``confusion[i, j]`` counts the pixels of true class ``i`` predicted as class ``j``.
The matrix is accumulated with ``bincount`` on the device the predictions live on,
saved per domain as ``.npy``, and every metric is recomputed from it later, so a
report never depends on scraped log lines.

IoU follows mmseg's ``IoUMetric`` and the Cityscapes pixel evaluation:
IoU_c = TP_c / (TP_c + FP_c + FN_c); a class absent from both the ground truth and
the predictions (union 0) has no IoU (NaN) and is left out of the mean.
"""

from __future__ import annotations

import math
import os
from typing import Iterable, Sequence

import numpy as np
import torch

from experiments.runs import atomic_path


class ConfusionMatrix:
    """Accumulates a num_classes x num_classes int64 confusion matrix on a device.

    Args:
        num_classes: number of classes (19 Cityscapes trainIds).
        ignore_index: ground-truth value whose pixels are not counted.
        device: where the counts live; by default that of the first ``update``.

    Class ids outside ``0..num_classes-1`` are refused. On the CPU ``update`` refuses
    them at once; on an accelerator the range is tracked on the device and checked
    when the counts are read (``tensor``/``matrix``), so updates never wait for the
    device and the next batch can be prepared while this one is counted.
    """

    def __init__(self, num_classes: int = 19, ignore_index: int = 255,
                 device: torch.device | str | None = None) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.device = torch.device(device) if device is not None else None
        self._counts: torch.Tensor | None = None
        self._bounds: torch.Tensor | None = None  # pred min, -pred max, target min, -target max

    def reset(self) -> None:
        self._counts = None
        self._bounds = None

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add predicted class ids ``pred`` against ground truth ``target`` (same shape)."""
        pred = torch.as_tensor(pred)
        target = torch.as_tensor(target)
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape "
                             f"{tuple(target.shape)}")
        if pred.numel() == 0:
            return
        device = self.device or pred.device
        # int32 indices: torch's CPU bincount is many times slower on int64.
        pred = pred.to(device=device, dtype=torch.int32).reshape(-1)
        target = target.to(device=device, dtype=torch.int32, copy=True).reshape(-1)
        n = self.num_classes
        keep = target != self.ignore_index
        low_p, high_p = torch.aminmax(pred)
        low_t, high_t = torch.aminmax(torch.where(keep, target, 0))
        bounds = torch.stack([low_p, -high_p, low_t, -high_t])  # all must stay >= 0 / > -n
        if device.type == "cpu":  # a host check costs nothing here
            self._raise_if_out_of_range(bounds)
        else:
            self._bounds = bounds if self._bounds is None else torch.minimum(self._bounds, bounds)
        # Ignored pixels go to one extra bin that is dropped, which avoids a masked copy;
        # in place on the int32 copies to spare temporaries. Out-of-range ids (refused when
        # the counts are read) are clamped so that bincount stays small.
        index = target.mul_(n).add_(pred).masked_fill_(~keep, n * n)
        if device.type == "cpu":
            counts = torch.bincount(index, minlength=n * n + 1)
        else:  # bincount on a GPU reads the maximum back to the host; a scatter-add does not
            index = index.clamp_(0, n * n).long()
            counts = torch.zeros(n * n + 1, dtype=torch.int64, device=device).scatter_add_(
                0, index, torch.ones_like(index))
        counts = counts[: n * n].reshape(n, n).to(torch.int64)
        if self._counts is None:
            self._counts = counts
        else:
            self._counts += counts.to(self._counts.device)

    def _raise_if_out_of_range(self, bounds: torch.Tensor) -> None:
        low_p, neg_high_p, low_t, neg_high_t = bounds.tolist()
        high_p, high_t = -neg_high_p, -neg_high_t
        n = self.num_classes
        if min(low_p, low_t) < 0 or max(high_p, high_t) >= n:
            raise ValueError(f"class ids outside 0..{n - 1} (ignore {self.ignore_index}): "
                             f"target ids span [{low_t}, {high_t}], "
                             f"prediction ids span [{low_p}, {high_p}]")

    @property
    def tensor(self) -> torch.Tensor:
        """The counts as an int64 tensor on the accumulation device."""
        if self._bounds is not None:
            self._raise_if_out_of_range(self._bounds)
        if self._counts is None:
            return torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64,
                               device=self.device)
        return self._counts

    @property
    def matrix(self) -> np.ndarray:
        """The counts as an int64 numpy array (a copy on the host)."""
        return self.tensor.cpu().numpy().astype(np.int64)


def _check(confusion: np.ndarray) -> np.ndarray:
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"a confusion matrix must be square, got shape {confusion.shape}")
    return confusion.astype(np.float64)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """IoU of each class; NaN for classes absent from both ground truth and prediction."""
    c = _check(confusion)
    tp = np.diag(c)
    union = c.sum(0) + c.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def mean_iou(confusion: np.ndarray) -> float:
    """Mean IoU over the classes present in ground truth or prediction (NaN if none)."""
    iou = iou_per_class(confusion)
    present = ~np.isnan(iou)
    return float(iou[present].mean()) if present.any() else float("nan")


def pixel_accuracy(confusion: np.ndarray) -> float:
    """Fraction of counted pixels predicted correctly (NaN for an empty matrix)."""
    c = _check(confusion)
    total = c.sum()
    return float(np.trace(c) / total) if total > 0 else float("nan")


def harmonic_mean(values: Iterable[float]) -> float:
    """H = D / sum_d (1 / x_d), the paper's summary across D target domains (Sec. 4).

    0 when any value is 0 (the limit of the formula); NaN when any value is NaN.
    """
    x = np.asarray(list(values), dtype=np.float64)
    if x.size == 0:
        raise ValueError("harmonic_mean of no values")
    if np.isnan(x).any():
        return float("nan")
    if (x < 0).any():
        raise ValueError(f"harmonic_mean needs non-negative values, got {x.tolist()}")
    if (x == 0).any():
        return 0.0
    return float(x.size / np.sum(1.0 / x))


def save_confusion(path: str | os.PathLike, confusion: np.ndarray) -> None:
    """Write ``confusion`` (int64) to ``path`` as .npy, atomically."""
    matrix = np.asarray(confusion)
    _check(matrix)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, matrix.astype(np.int64))


def load_confusion(path: str | os.PathLike) -> np.ndarray:
    """Read a confusion matrix written by ``save_confusion``; refuse anything else."""
    try:
        matrix = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read confusion matrix {path}: {error}") from error
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.dtype.kind not in "iu":
        raise ValueError(f"{path}: expected a square integer matrix, got {matrix.dtype} "
                         f"{matrix.shape}")
    return matrix.astype(np.int64)


def loss_barrier(alphas: Sequence[float], losses: Sequence[float]) -> float:
    """Highest loss on an interpolation path minus the mean of its two endpoint losses.

    ``alphas`` must run from 0 (model A) to 1 (model B). The maximum includes the
    endpoints, so the barrier is at least half the endpoints' difference; a value near
    that bound means the straight line between the models stays in one basin. For a
    score where higher is better (mIoU, H, accuracy) pass the negated scores: the result
    is the mean of the endpoint scores minus the lowest score on the path.
    """
    if len(alphas) != len(losses) or len(alphas) < 2:
        raise ValueError(f"need matching alphas and losses (>= 2), got {len(alphas)} and {len(losses)}")
    if alphas[0] != 0.0 or alphas[-1] != 1.0 or list(alphas) != sorted(alphas):
        raise ValueError(f"alphas must increase from 0 to 1, got {list(alphas)}")
    if not all(math.isfinite(v) for v in losses):
        raise ValueError(f"non-finite loss on the path: {list(losses)}")
    return max(losses) - 0.5 * (losses[0] + losses[-1])


def interpolation_barrier(alphas: Sequence[float], scores: Sequence[float]) -> float:
    """Largest drop of a score below the straight line between its endpoints (>= 0).

    max over alpha of ``(1 - alpha) s(0) + alpha s(1) - s(alpha)`` for a score where
    higher is better (mIoU, H): 0 for a path that never falls below the chord between
    the two models, the depth of the dip otherwise (Frankle et al., ICML 2020, for error).
    """
    loss_barrier(alphas, scores)  # same validation of the path
    first, last = scores[0], scores[-1]
    return max(0.0, max((1 - a) * first + a * last - s for a, s in zip(alphas, scores)))
