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


def predict_classes(logits: torch.Tensor) -> np.ndarray:
    """Class of each pixel (or sample): the index of the largest logit along dim 1.
    ``max(1).indices`` gives ``argmax(1)``'s answer about 3x faster on CPU for B x C x H x W."""
    return logits.max(1).indices.cpu().numpy()


def _confusion(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore: int = 255) -> np.ndarray:
    keep = target != ignore
    index = target[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
    return np.bincount(index, minlength=num_classes ** 2).reshape(num_classes, num_classes)


class Memo:
    """Predictions of an adapter without state across batches, shared between streams.

    No TTA predicts each image on its own (eval mode), so ``per_image`` memos key by the
    sample's ``id``; BN-adapt's prediction depends on the whole batch and nothing else,
    so its memo keys by the batch's ids in order. A stream that meets a known key reuses
    the prediction instead of running the model again (the same result up to
    floating-point ties between batch shapes).
    """

    def __init__(self, per_image: bool) -> None:
        self.per_image = per_image
        self.predictions: dict[Any, np.ndarray] = {}
        self.hits = 0

    def predict(self, adapter: Adapter, batch: Sequence[Sample], prepare: Prepare,
                device: torch.device | str) -> np.ndarray:
        ids = [s["id"] for s in batch]
        keys = [(i,) for i in ids] if self.per_image else [tuple(ids)]
        todo = [k for k in keys if k not in self.predictions]
        if todo:
            chosen = [s for s in batch if (s["id"],) in todo] if self.per_image else list(batch)
            images = prepare(np.stack([s["image"] for s in chosen])).to(device)
            pred = predict_classes(adapter(images)).astype(np.uint8)
            if self.per_image:
                self.predictions.update({k: p for k, p in zip(todo, pred)})
            else:
                self.predictions[keys[0]] = pred
        self.hits += len(keys) - len(todo)
        if self.per_image:
            return np.stack([self.predictions[k] for k in keys])
        return self.predictions[keys[0]]


def run_stream(adapter: Adapter, samples: Sequence[Sample], batch_size: int, num_classes: int,
               prepare: Prepare, device: torch.device | str = "cpu", trace_every: int = 1,
               memo: Memo | None = None) -> dict[str, Any]:
    """Adapt online over ``samples`` in batches of ``batch_size`` and score every prediction.

    ``prepare`` turns a stacked uint8 image batch (B x H x W x 3) into the model's input.
    ``memo`` (for adapters without state across batches; samples need an ``id``) reuses
    predictions made on earlier streams.
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
        if memo is not None:
            pred = memo.predict(adapter, batch, prepare, device)
        else:
            images = prepare(np.stack([s["image"] for s in batch])).to(device)
            pred = predict_classes(adapter(images))
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
