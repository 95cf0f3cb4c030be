"""The one evaluation path: confusion matrices per domain, ``metrics.json``, H.

``evaluate_model`` runs one network over one dataset under a test protocol and returns the
confusion matrix. ``evaluate`` scores a model (``experiments.inference.sources``: a training
run, a merge run, an encoder-only merge with one head per domain, or a weights file) on
several domains and writes ``<out_dir>/confusion/<domain>.npy``, ``metrics.json`` (the
schema of ``analysis.metrics.summarize``: per-domain mIoU, per-class IoU, pixel accuracy,
confusion file; H over the domains) and a manifest recording the weights' sha256, the
test protocol of each domain and whether the data is the miniature stand-in. Every
evaluation of the project, from studies, training validation excepted, and from
``python -m experiments.evaluate``, goes through ``evaluate``.

Test protocol (per domain; docs/recipe.md): optional keep-ratio resize of the input
(``resize``: long and short edge, e.g. (2048, 1024)), whole-image (``mode: whole``) or
sliding-window logits (``mode: slide``, ``crop`` and ``stride`` as (height, width)),
bilinear upsampling to the label's resolution, first-maximum class.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from analysis import metrics as M
from experiments.data.labels import CLASS_NAMES, NUM_CLASSES
from experiments.inference.confusion import ConfusionMatrix
from experiments.infra import runs
from experiments.data.transforms import keep_ratio_size
from experiments.models.segmentors import decoder_logits, normalize, segment


def windows(height: int, width: int, crop: Sequence[int], stride: Sequence[int]) -> list[tuple[int, int, int, int]]:
    """The (y1, y2, x1, x2) windows of mmseg's slide inference over an image.

    ``crop`` and ``stride`` are (height, width); windows at the border are shifted inwards so
    every window has the full crop size when the image allows it.
    """
    crop_h, crop_w = min(crop[0], height), min(crop[1], width)
    rows = max(height - crop_h + stride[0] - 1, 0) // stride[0] + 1
    cols = max(width - crop_w + stride[1] - 1, 0) // stride[1] + 1
    boxes = []
    for row in range(rows):
        for col in range(cols):
            y2, x2 = min(row * stride[0] + crop_h, height), min(col * stride[1] + crop_w, width)
            boxes.append((max(y2 - crop_h, 0), y2, max(x2 - crop_w, 0), x2))
    return boxes


def slide_logits(model: torch.nn.Module, images: torch.Tensor, crop: Sequence[int],
                 stride: Sequence[int], num_classes: int, window_batch: int | None = None) -> torch.Tensor:
    """Average logits of overlapping crop windows, batched (mmseg's ``slide_inference`` with
    ``batched_slide``, as HRDA tests): the windows of every image go through the model
    together, ``window_batch`` windows per call (None: all at once)."""
    batch, _, height, width = images.shape
    boxes = windows(height, width, crop, stride)
    crops = torch.cat([images[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in boxes])  # window-major
    step = len(crops) if not window_batch else int(window_batch) * batch
    logits = torch.cat([segment(model, crops[i:i + step]).float() for i in range(0, len(crops), step)])
    total = images.new_zeros(batch, num_classes, height, width, dtype=torch.float32)
    count = images.new_zeros(1, 1, height, width, dtype=torch.float32)
    for index, (y1, y2, x1, x2) in enumerate(boxes):
        total[:, :, y1:y2, x1:x2] += logits[index * batch:(index + 1) * batch]
        count[:, :, y1:y2, x1:x2] += 1
    return total / count


def _as_list(items: list) -> list:
    return items


def group_by_size(items: list[dict]) -> list[list[dict]]:
    """Split a batch into runs of equal image and label size (IDD mixes resolutions)."""
    groups: dict[tuple, list[dict]] = {}
    for item in items:
        if item.get("label") is None:
            raise ValueError(f"{item.get('path', '<item>')}: evaluation needs labels, this split has none")
        groups.setdefault((item["image"].shape, item["label"].shape), []).append(item)
    return list(groups.values())


def predict_classes(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Class ids at the label ``size`` from decoder logits (B x C x h x w).

    One bilinear step straight to the label size (the same as ``segment`` when the
    input is not rescaled). Channels-last makes both the upsampling and the class max
    read contiguous memory; max(1).indices keeps argmax's first-maximum rule and is
    many times faster on CPU.
    """
    if tuple(logits.shape[2:]) != tuple(size):
        logits = F.interpolate(logits.float().contiguous(memory_format=torch.channels_last),
                               size=tuple(size), mode="bilinear", align_corners=False)
    return logits.max(1).indices


def evaluate_model(model: torch.nn.Module, dataset: Sequence[dict], batch_size: int = 4,
                   mode: str = "whole", crop: Sequence[int] = (512, 512),
                   stride: Sequence[int] = (341, 341), scale: Sequence[int] | None = None,
                   device: torch.device | str | None = None, amp: bool = False,
                   channels_last: bool = False, progress: bool = True, num_classes: int = NUM_CLASSES,
                   num_workers: int = 0, description: str = "evaluate",
                   window_batch: int | None = None) -> np.ndarray:
    """Confusion matrix (num_classes x num_classes, int64) of ``model`` on ``dataset``.

    Args:
        model: a segmentor from ``build_segmentor``; set to eval mode here.
        dataset: items ``{"image": uint8 HxWx3, "label": uint8 HxW, "path": str}``.
        mode: "whole" (one forward per image) or "slide" (``crop``/``stride`` windows).
        scale: keep-ratio resize of the input before inference, (long, short) edge;
            predictions are upsampled back to the label size.
        device: where to run; by default the model's device (the model is moved).
        amp, channels_last: float16 autocast and NHWC memory format, CUDA only.
        num_workers: DataLoader workers decoding images in the background.
    """
    if mode not in ("whole", "slide"):
        raise ValueError(f"mode must be 'whole' or 'slide', got {mode!r}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    cuda = device.type == "cuda"
    if (amp or channels_last) and not cuda:
        warnings.warn("amp and channels_last apply on CUDA only; running in float32 NCHW")
    model = model.to(device).eval()
    memory_format = torch.channels_last if channels_last and cuda else torch.contiguous_format
    if memory_format is torch.channels_last:
        model = model.to(memory_format=memory_format)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers, collate_fn=_as_list)
    confusion = ConfusionMatrix(num_classes, device=device)
    # A disabled autocast still costs a context switch per batch: only enter it on use.
    autocast = (torch.autocast("cuda", dtype=torch.float16) if amp and cuda
                else contextlib.nullcontext())
    with torch.inference_mode(), tqdm(total=len(dataset), disable=not progress,
                                      desc=description, unit="img") as bar:
        for items in loader:
            for group in group_by_size(items):
                images = torch.from_numpy(np.stack([it["image"] for it in group]))
                labels = torch.from_numpy(np.stack([it["label"] for it in group]))
                if cuda:  # pinned: the copies queue behind the previous batch's kernels
                    images, labels = images.pin_memory(), labels.pin_memory()
                x = normalize(images.to(device, non_blocking=True))
                if scale is not None:
                    size = keep_ratio_size(x.shape[2], x.shape[3], scale)
                    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
                x = x.contiguous(memory_format=memory_format)
                with autocast:
                    if mode == "whole":  # decoder output, at 1/4 or 1/8 resolution
                        logits = decoder_logits(model, x)
                    else:
                        logits = slide_logits(model, x, crop, stride, num_classes, window_batch)
                confusion.update(predict_classes(logits, labels.shape[1:]),
                                 labels.to(device, non_blocking=True))
                bar.update(len(group))
    return confusion.matrix




@torch.inference_mode()
def predict_map(model: torch.nn.Module, image: np.ndarray, size: Sequence[int], protocol: "Protocol") -> np.ndarray:
    """The class map (uint8, ``size`` H x W) of one image under ``protocol``, as ``evaluate_model``
    predicts it (for pictures)."""
    device = next(model.parameters()).device
    x = normalize(torch.from_numpy(np.ascontiguousarray(image))[None].to(device))
    if protocol.resize is not None:
        x = F.interpolate(x, size=keep_ratio_size(x.shape[2], x.shape[3], protocol.resize), mode="bilinear",
                          align_corners=False)
    if protocol.mode == "whole":
        logits = decoder_logits(model, x)
    else:
        logits = slide_logits(model, x, protocol.crop, protocol.stride, NUM_CLASSES, protocol.window_batch)
    return predict_classes(logits, size)[0].to(torch.uint8).cpu().numpy()


@dataclass(frozen=True)
class Protocol:
    """How one domain is scored: whole image or slide windows, at a keep-ratio test scale."""

    mode: str = "whole"
    resize: tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    window_batch: int | None = None   # slide windows per forward call and image (None: all)

    def __post_init__(self) -> None:
        if self.mode not in ("whole", "slide"):
            raise ValueError(f"test protocol: mode must be 'whole' or 'slide', got {self.mode!r}")
        if self.mode == "slide" and (self.crop is None or self.stride is None):
            raise ValueError("test protocol: mode 'slide' needs crop and stride ([height, width])")

    @classmethod
    def of(cls, entry: Mapping[str, Any] | None) -> "Protocol":
        entry = dict(entry or {})
        unknown = sorted(set(entry) - {"mode", "resize", "crop", "stride", "window_batch"})
        if unknown:
            raise ValueError(f"test protocol: unknown keys {unknown}; known: mode, resize, crop, stride, window_batch")
        pair = lambda v: None if v is None else (int(v[0]), int(v[1]))  # noqa: E731
        batch = entry.get("window_batch")
        return cls(entry.get("mode", "whole"), pair(entry.get("resize")), pair(entry.get("crop")),
                   pair(entry.get("stride")), None if batch is None else int(batch))

    def keywords(self) -> dict[str, Any]:
        """``evaluate_model``'s arguments for this protocol."""
        out: dict[str, Any] = {"mode": self.mode, "scale": self.resize}
        if self.mode == "slide":
            out.update(crop=self.crop, stride=self.stride, window_batch=self.window_batch)
        return out

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "resize": self.resize, "crop": self.crop, "stride": self.stride}


def protocols(test: Mapping[str, Any] | None, domains: Sequence[str]) -> dict[str, Protocol]:
    """Each domain's protocol from a scale's ``test`` table: ``default``, then the domain's entry."""
    test = dict(test or {})
    default = dict(test.get("default") or {})
    return {d: Protocol.of({**default, **dict(test.get(d) or {})}) for d in domains}


def _cached(out_dir: Path, domains: Sequence[str], source_inputs: Mapping[str, Path]) -> dict | None:
    """The confusion matrices of a complete evaluation of the same weights on these domains."""
    manifest = runs.read_manifest(out_dir)
    if not manifest or manifest.get("status") != "complete":
        return None
    recorded = manifest.get("inputs", {})
    if any(recorded.get(role, {}).get("sha256") != runs.sha256_file(path) for role, path in source_inputs.items()):
        return None
    files = {d: out_dir / "confusion" / f"{d}.npy" for d in domains}
    if not all(f.exists() for f in files.values()):
        return None
    return {d: M.load_confusion(f) for d, f in files.items()}


def evaluate(source, datasets: Mapping[str, Sequence[dict]], out_dir: str | Path,
             test: Mapping[str, Protocol] | None = None, *, stand_in: bool, batch_size: int = 4,
             classes: Sequence[int] | None = None, force: bool = False, config: Any = None,
             **evaluate_kw: Any) -> dict[str, np.ndarray]:
    """Confusion matrix per domain of ``source`` (a ``ModelSource``), cached in ``out_dir``.

    ``datasets`` maps a domain to its samples; ``test`` a domain to its ``Protocol``
    (default: whole image). A complete evaluation of the same weights files (by sha256)
    covering these domains is read back instead of recomputed, unless ``force``. The
    network is built once per distinct weights file (an encoder-only merge has one per head).
    """
    out_dir = Path(out_dir)
    domains = list(datasets)
    test = {d: (test or {}).get(d) or Protocol() for d in domains}
    inputs = source.inputs()
    if not force:
        cached = _cached(out_dir, domains, inputs)
        if cached is not None:
            return cached
    record = {"model": source.describe(), "domains": domains, "batch_size": batch_size,
              "protocol": {d: p.describe() for d, p in test.items()}, "config": config}
    with runs.stage(out_dir, "evaluate", record, inputs, stand_in=stand_in):
        confusions, networks, files = {}, {}, {}
        for domain in domains:
            weights = source.weights_for(domain)
            if weights.path not in networks:
                networks[weights.path] = source.build(source.state(weights))
            confusions[domain] = evaluate_model(networks[weights.path], datasets[domain], batch_size=batch_size,
                                                description=domain, **test[domain].keywords(), **evaluate_kw)
            path = out_dir / "confusion" / f"{domain}.npy"
            M.save_confusion(path, confusions[domain])
            files[domain] = path
        metrics = M.summarize(confusions, classes, CLASS_NAMES if confusions[domains[0]].shape[0] == NUM_CLASSES
                              else None, {d: str(p.relative_to(out_dir)) for d, p in files.items()})
        metrics.update(model=source.describe(), protocol=record["protocol"], stand_in=stand_in)
        if stand_in:
            metrics["note"] = runs.STAND_IN_NOTE
        runs.finish_run(out_dir, {f"confusion_{d}": p for d, p in files.items()}, metrics)
    return confusions
