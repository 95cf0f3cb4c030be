"""The training data pipeline of mmseg 0.x as DAFormer and HRDA use it, on numpy arrays.

Per sample, in this order (mmseg's ``Resize`` -> ``RandomCrop`` -> ``RandomFlip`` -> ``Pad``):

1. **keep-ratio resize** into a scale (long edge, short edge), as ``mmcv.imrescale``: factor
   min(long / max(h, w), short / min(h, w)), size rounded by int(x * f + 0.5); the image
   bilinear, the label and the pseudo-label margin mask nearest;
2. **random crop** of the crop size (the whole extent where the image is smaller), offsets
   uniform; on source images with ``cat_max_ratio`` the crop is redrawn (up to 10 times)
   until no single class covers ``cat_max_ratio`` of the labelled pixels of the crop (and at
   least two classes are present), as mmseg's ``RandomCrop``;
3. **horizontal flip** with probability 0.5;
4. **pad** to the crop size: image 0, label 255 (ignore), margin mask 0.

HRDA's pseudo-label margins (``crop_pseudo_margins``: top, bottom, left, right) are a mask
made at the image's own resolution *before* resizing and cropping, so a margin is only
masked out where the crop touches the periphery of the full image (HRDA, Sec. 4 and its
``custom.py``; the original makes the mask at one fixed size per dataset, here it is the
image's own size, which is the same for fixed-size datasets and right for IDD's mixed sizes).
All randomness comes from the ``torch.Generator`` passed in, so a sample is a function of the
training iteration's seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch

from experiments.data.labels import IGNORE_INDEX


def keep_ratio_size(height: int, width: int, scale: Sequence[int]) -> tuple[int, int]:
    """(H, W) after mmcv's keep-ratio rescale into ``scale`` (long edge, short edge, any order)."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def margin_mask(height: int, width: int, margins: Sequence[int]) -> np.ndarray:
    """uint8 H x W mask, 0 on the top, bottom, left and right margins, 1 elsewhere."""
    top, bottom, left, right = (int(m) for m in margins)
    mask = np.ones((height, width), np.uint8)
    if top > 0:
        mask[:top] = 0
    if bottom > 0:
        mask[-bottom:] = 0
    if left > 0:
        mask[:, :left] = 0
    if right > 0:
        mask[:, -right:] = 0
    return mask


def _randint(high: int, generator: torch.Generator) -> int:
    return int(torch.randint(high, (1,), generator=generator))


def crop_box(height: int, width: int, crop: Sequence[int], generator: torch.Generator) -> tuple[int, int, int, int]:
    """A uniformly placed (y1, y2, x1, x2) box of ``crop`` (H, W), clipped to the image."""
    y = _randint(max(height - int(crop[0]), 0) + 1, generator)
    x = _randint(max(width - int(crop[1]), 0) + 1, generator)
    return y, min(y + int(crop[0]), height), x, min(x + int(crop[1]), width)


def _dominated(label: np.ndarray, cat_max_ratio: float) -> bool:
    values, counts = np.unique(label, return_counts=True)
    counts = counts[values != IGNORE_INDEX]
    return not (len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio)


def _pad(array: np.ndarray, size: Sequence[int], value: int) -> np.ndarray:
    pad_h, pad_w = int(size[0]) - array.shape[0], int(size[1]) - array.shape[1]
    if pad_h <= 0 and pad_w <= 0:
        return array
    widths = [(0, max(pad_h, 0)), (0, max(pad_w, 0))] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, widths, constant_values=value)


@dataclass(frozen=True)
class Pipeline:
    """One role's pipeline (source or target): resize scale, crop, cat_max_ratio, flip, margins."""

    scale: tuple[int, int] | None = None      # keep-ratio resize into (long, short); None: as read
    crop: tuple[int, int] | None = None       # (H, W); None: the whole image
    cat_max_ratio: float | None = None        # source crops only (mmseg RandomCrop)
    flip: float = 0.5
    margins: tuple[int, int, int, int] | None = None  # pseudo-label margins (target), at native size

    def __call__(self, image: np.ndarray, label: np.ndarray | None, generator: torch.Generator) -> dict:
        """The transformed sample: ``image`` uint8 H x W x 3, ``label`` uint8 or None,
        ``valid`` uint8 margin mask (when ``margins``)."""
        valid = margin_mask(*image.shape[:2], self.margins) if self.margins is not None else None
        if self.scale is not None:
            height, width = keep_ratio_size(*image.shape[:2], self.scale)
            if (height, width) != image.shape[:2]:
                image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
                if label is not None:
                    label = cv2.resize(label, (width, height), interpolation=cv2.INTER_NEAREST)
                if valid is not None:
                    valid = cv2.resize(valid, (width, height), interpolation=cv2.INTER_NEAREST)
        if self.crop is not None:
            box = crop_box(*image.shape[:2], self.crop, generator)
            if self.cat_max_ratio is not None and label is not None and self.cat_max_ratio < 1:
                for _ in range(10):  # mmseg: redraw while one class dominates the crop
                    if not _dominated(label[box[0]:box[1], box[2]:box[3]], self.cat_max_ratio):
                        break
                    box = crop_box(*image.shape[:2], self.crop, generator)
            y1, y2, x1, x2 = box
            image = image[y1:y2, x1:x2]
            label = label[y1:y2, x1:x2] if label is not None else None
            valid = valid[y1:y2, x1:x2] if valid is not None else None
        if torch.rand(1, generator=generator).item() < self.flip:
            image = image[:, ::-1]
            label = label[:, ::-1] if label is not None else None
            valid = valid[:, ::-1] if valid is not None else None
        if self.crop is not None:
            image = _pad(image, self.crop, 0)
            label = _pad(label, self.crop, IGNORE_INDEX) if label is not None else None
            valid = _pad(valid, self.crop, 0) if valid is not None else None
        out = {"image": np.ascontiguousarray(image),
               "label": None if label is None else np.ascontiguousarray(label)}
        if valid is not None:
            out["valid"] = np.ascontiguousarray(valid)
        return out
