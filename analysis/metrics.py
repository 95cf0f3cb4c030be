"""Segmentation metrics from a confusion matrix, and the harmonic mean across domains.

``confusion[i, j]`` counts the pixels of true class ``i`` predicted as class ``j``. The
matrix is accumulated by ``experiments.inference.confusion.ConfusionMatrix`` and saved
per domain as ``.npy`` (``save_confusion``); every number of a ``metrics.json``, a table
or a figure is computed from such matrices by the functions here (``summarize``), so a
report never depends on scraped log lines. Numpy only.

IoU follows mmseg's ``IoUMetric`` and the Cityscapes pixel evaluation:
IoU_c = TP_c / (TP_c + FP_c + FN_c); a class absent from both the ground truth and
the predictions (union 0) has no IoU (NaN) and is left out of the mean.
"""

from __future__ import annotations

import math
import os
from typing import Iterable, Sequence

import numpy as np

from analysis.io import atomic_path


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


def _percent(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(100.0 * float(value), 4)


def summarize(confusions: dict[str, np.ndarray], classes: Sequence[int] | None = None,
              class_names: Sequence[str] | None = None,
              confusion_files: dict[str, str] | None = None) -> dict:
    """The ``metrics.json`` of an evaluation, in percent, from its confusion matrices.

    Per domain: mIoU (over ``classes`` when given, e.g. SYNTHIA's 16 or 13), IoU per class,
    pixel accuracy, counted pixels and the confusion file (relative to the run folder);
    then the harmonic mean H over the domains (``harmonic_mean``).
    """
    domains = {}
    for name, confusion in confusions.items():
        iou = iou_per_class(confusion)
        names = class_names or [f"class_{i}" for i in range(len(iou))]
        chosen = iou[np.asarray(classes if classes is not None else range(len(iou)))]
        miou = float(np.nanmean(chosen)) if (~np.isnan(chosen)).any() else float("nan")
        domains[name] = {
            "miou": _percent(miou),
            "pixel_accuracy": _percent(pixel_accuracy(confusion)),
            "iou": {names[i]: _percent(v) for i, v in enumerate(iou)},
            "pixels": int(np.asarray(confusion).sum()),
        }
        if confusion_files and name in confusion_files:
            domains[name]["confusion"] = confusion_files[name]
    mious = [d["miou"] for d in domains.values()]
    harmonic = None if any(v is None for v in mious) else _percent(harmonic_mean(mious) / 100)
    return {"units": "percent", "domains": domains, "harmonic_mean": harmonic,
            "classes": None if classes is None else [int(c) for c in classes]}
