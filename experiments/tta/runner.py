"""Online evaluation of a test-time adapter over a stream.

Each batch is predicted by the adapter (which then adapts on it), and the prediction is
scored against the labels the adapter never sees. The result holds the final metric over
the whole stream, the final metric per domain (for mixed streams), and a trace: the
running metric over everything seen so far and the metric of each batch alone, so a
collapse shows up as a falling trace.

Metric: mIoU (percent, ``analysis.metrics``) for segmentation (labels are maps),
accuracy (percent) for classification (labels are integers).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np
import torch

from analysis import metrics as M
from experiments.tta.common import Adapter
from experiments.tta.streams import Sample, batches

Prepare = Callable[[np.ndarray], torch.Tensor]


def _score(confusion: np.ndarray, segmentation: bool) -> float:
    if segmentation:
        return 100.0 * float(M.mean_iou(confusion))
    total = confusion.sum()
    return float(100.0 * np.trace(confusion) / total) if total else float("nan")


def _confusion(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore: int = 255) -> np.ndarray:
    keep = target != ignore
    index = target[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
    return np.bincount(index, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def run_stream(adapter: Adapter, samples: Sequence[Sample], batch_size: int, num_classes: int,
               prepare: Prepare, device: torch.device | str = "cpu", trace_every: int = 1) -> dict[str, Any]:
    """Adapt online over ``samples`` in batches of ``batch_size`` and score every prediction.

    ``prepare`` turns a stacked uint8 image batch (B x H x W x 3) into the model's input.
    Returns ``{"metric", "per_domain", "trace", "images", "seconds"}``.
    """
    if not samples:
        raise ValueError("run_stream needs a non-empty stream")
    segmentation = np.ndim(samples[0]["label"]) > 0
    total = np.zeros((num_classes, num_classes), dtype=np.int64)
    per_domain: dict[str, np.ndarray] = {}
    trace = []
    seen = 0
    start = time.perf_counter()
    for step, batch in enumerate(batches(samples, batch_size)):
        images = prepare(np.stack([s["image"] for s in batch])).to(device)
        logits = adapter(images)
        pred = logits.argmax(1).cpu().numpy()
        batch_confusion = np.zeros_like(total)
        for p, s in zip(pred, batch):
            c = _confusion(p, np.asarray(s["label"]), num_classes)
            batch_confusion += c
            domain = s.get("domain", "all")
            per_domain[domain] = per_domain.get(domain, 0) + c
        total += batch_confusion
        seen += len(batch)
        if step % trace_every == 0:
            trace.append({"step": step, "images": seen, "running": _score(total, segmentation),
                          "batch": _score(batch_confusion, segmentation)})
    return {"metric": _score(total, segmentation),
            "per_domain": {d: _score(c, segmentation) for d, c in per_domain.items()},
            "trace": trace, "images": seen, "seconds": time.perf_counter() - start,
            "confusion": total}
