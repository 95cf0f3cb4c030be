"""Confusion matrices accumulated on the device the predictions live on.

The analysis layer (``analysis.metrics``) turns the matrices into IoU, mIoU and H; this
module only counts, so that it may use torch while ``analysis`` stays torch-free.
"""

from __future__ import annotations

import numpy as np
import torch

from experiments.data.labels import NUM_CLASSES


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

    def __init__(self, num_classes: int = NUM_CLASSES, ignore_index: int = 255,
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


