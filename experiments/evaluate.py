"""Evaluate a segmentor on target domains: confusion matrices and mIoU per domain, and H.

``evaluate_model`` runs one model over one dataset and returns the confusion matrix;
``evaluate_checkpoint`` loads a training checkpoint, merged weights, or merged
encoder + per-domain decode heads (the paper's encoder-only merge, Table 1 "dagger")
and evaluates each domain; ``python -m experiments.evaluate`` (configs/evaluate.yaml)
writes ``confusion/<domain>.npy``, ``metrics.json`` and the manifest into
``runs/evaluate/<name>``. Metrics are recomputed from the saved confusion matrices by
``analysis.metrics``, so nothing is scraped from logs.

Inference follows the DAFormer test pipeline: optional keep-ratio resize of the input
(``scale``, e.g. (1024, 512) for Cityscapes), whole-image or sliding-window logits,
bilinear upsampling to the label's resolution, argmax.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from pathlib import Path

import hydra
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from analysis import metrics as M
from experiments import runs
from experiments.models import build_segmentor, normalize, segment


def keep_ratio_size(height: int, width: int, scale: Sequence[int]) -> tuple[int, int]:
    """(H, W) after mmseg's keep-ratio resize into ``scale`` (long edge, short edge)."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def slide_logits(model: torch.nn.Module, images: torch.Tensor, crop: Sequence[int],
                 stride: Sequence[int], num_classes: int) -> torch.Tensor:
    """Average logits of overlapping crop windows (mmseg's ``slide_inference``).

    ``crop`` and ``stride`` are (height, width); windows at the border are shifted
    inwards so every window has the full crop size when the image allows it.
    """
    batch, _, height, width = images.shape
    crop_h, crop_w = min(crop[0], height), min(crop[1], width)
    rows = max(height - crop_h + stride[0] - 1, 0) // stride[0] + 1
    cols = max(width - crop_w + stride[1] - 1, 0) // stride[1] + 1
    total = images.new_zeros(batch, num_classes, height, width, dtype=torch.float32)
    count = images.new_zeros(1, 1, height, width, dtype=torch.float32)
    for row in range(rows):
        for col in range(cols):
            y2 = min(row * stride[0] + crop_h, height)
            x2 = min(col * stride[1] + crop_w, width)
            y1, x1 = max(y2 - crop_h, 0), max(x2 - crop_w, 0)
            total[:, :, y1:y2, x1:x2] += segment(model, images[:, :, y1:y2, x1:x2]).float()
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
                   channels_last: bool = False, progress: bool = True, num_classes: int = 19,
                   num_workers: int = 0, description: str = "evaluate") -> np.ndarray:
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
    confusion = M.ConfusionMatrix(num_classes, device=device)
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
                        logits = model.decode_head(model.extract_feat(x))
                    else:
                        logits = slide_logits(model, x, crop, stride, num_classes)
                confusion.update(predict_classes(logits, labels.shape[1:]),
                                 labels.to(device, non_blocking=True))
                bar.update(len(group))
    return confusion.matrix


# --------------------------------------------------------------------------- weights

def load_weights(path: str | os.PathLike, network: str = "student") -> dict[str, torch.Tensor]:
    """A segmentor state dict (``backbone.*``, ``decode_head.*``) from any saved form.

    ``fusion.load_checkpoint`` reads training checkpoints (choosing the student
    ``model.*`` or the EMA teacher ``ema_model.*``; DAFormer evaluates the student),
    merged ``.safetensors`` and plain ``.pth`` state dicts alike.
    """
    from fusion import load_checkpoint

    return load_checkpoint(path, network=network)


def load_into(model: torch.nn.Module, state: Mapping[str, torch.Tensor],
              source: str = "weights") -> torch.nn.Module:
    """Load ``state`` into ``model`` strictly, naming keys and shapes that do not fit."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
                    for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or shapes:
        raise ValueError(f"{source} does not fit the model: missing {missing[:10]}, "
                         f"unexpected {unexpected[:10]}, shape {shapes[:10]}")
    model.load_state_dict(dict(state))
    return model


def evaluate_checkpoint(checkpoint: str | os.PathLike, segmentor: str,
                        domains: Mapping[str, Sequence[dict]], network: str = "student",
                        heads: Mapping[str, str | os.PathLike] | None = None,
                        num_classes: int = 19, **evaluate_kw: Any) -> dict[str, np.ndarray]:
    """Confusion matrix per domain for a checkpoint or merged weights.

    ``heads`` (encoder-only merge): domain -> checkpoint whose ``decode_head.*`` replaces
    the merged one when evaluating that domain; the encoder stays the merged one.
    """
    state = load_weights(checkpoint, network)
    heads = dict(heads or {})
    unknown = sorted(set(heads) - set(domains))
    if unknown:
        raise KeyError(f"heads given for unknown domains {unknown}; domains: {sorted(domains)}")
    model = build_segmentor(segmentor, num_classes=num_classes)
    results = {}
    for name, dataset in domains.items():
        domain_state, source = state, str(checkpoint)
        if name in heads:
            head = {k: v for k, v in load_weights(heads[name], network).items()
                    if k.startswith("decode_head.")}
            if not head:
                raise ValueError(f"{heads[name]} has no decode_head.* entries")
            domain_state = {k: v for k, v in state.items() if not k.startswith("decode_head.")}
            domain_state.update(head)
            source = f"{checkpoint} + head {heads[name]}"
        load_into(model, domain_state, f"{source} ({segmentor})")
        results[name] = evaluate_model(model, dataset, num_classes=num_classes,
                                       description=name, **evaluate_kw)
    return results


# --------------------------------------------------------------------------- metrics

def summarize(confusions: Mapping[str, np.ndarray], classes: Sequence[int] | None = None,
              class_names: Sequence[str] | None = None) -> dict:
    """metrics.json content, in percent: per-domain mIoU, IoU per class, pixel accuracy, H.

    ``classes`` restricts the mean to a subset (SYNTHIA's 16 or 13 classes).
    """
    domains = {}
    for name, confusion in confusions.items():
        iou = M.iou_per_class(confusion)
        names = class_names or [f"class_{i}" for i in range(len(iou))]
        subset = np.asarray(classes if classes is not None else range(len(iou)))
        chosen = iou[subset]
        miou = float(np.nanmean(chosen)) if (~np.isnan(chosen)).any() else float("nan")
        domains[name] = {
            "miou": _percent(miou),
            "pixel_accuracy": _percent(M.pixel_accuracy(confusion)),
            "iou": {names[i]: _percent(v) for i, v in enumerate(iou)},
            "pixels": int(np.asarray(confusion).sum()),
        }
    mious = [d["miou"] for d in domains.values()]
    harmonic = None if any(v is None for v in mious) else _percent(M.harmonic_mean(mious) / 100)
    return {"units": "percent", "domains": domains, "harmonic_mean": harmonic,
            "classes": None if classes is None else [int(c) for c in classes]}


def _percent(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(100.0 * float(value), 4)


# --------------------------------------------------------------------------- entry point

_CLASS_SUBSETS = {"all": None, "synthia16": "SYNTHIA16", "synthia13": "SYNTHIA13"}
_DOMAIN_KEYS = ("name", "dataset", "root", "split")


def run_evaluation(cfg: Mapping[str, Any]) -> dict:
    """Evaluate ``cfg.checkpoint`` on ``cfg.domains`` into ``cfg.run_dir``; return metrics.

    A run folder already marked complete is left as it is (``force: true`` redoes it).
    """
    from omegaconf import OmegaConf

    from experiments import datasets, labels

    cfg = OmegaConf.create(OmegaConf.to_container(OmegaConf.create(cfg), resolve=True))
    run_dir = Path(cfg.run_dir)
    if runs.is_complete(run_dir) and not cfg.get("force", False):
        print(f"{run_dir} is complete; skipping (force=true to redo)")
        return json.loads((run_dir / "metrics.json").read_text())
    if cfg.classes not in _CLASS_SUBSETS:
        raise ValueError(f"classes must be one of {sorted(_CLASS_SUBSETS)}, got {cfg.classes!r}")
    subset = _CLASS_SUBSETS[cfg.classes]
    classes = getattr(labels, subset) if subset else None
    heads = dict(cfg.get("heads") or {})
    inputs = {"checkpoint": cfg.checkpoint, **{f"head_{d}": p for d, p in heads.items()}}
    runs.start_run(run_dir, "evaluate", cfg, inputs, stand_in=bool(cfg.stand_in))
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")

    domains = {}
    for domain in cfg.domains:
        missing = [k for k in _DOMAIN_KEYS if k not in domain]
        if missing:
            raise ValueError(f"domain entry {OmegaConf.to_container(domain)} lacks {missing}")
        extra = {k: v for k, v in OmegaConf.to_container(domain).items() if k not in _DOMAIN_KEYS}
        domains[domain.name] = datasets.load(domain.dataset, domain.root, domain.split, **extra)
    confusions = evaluate_checkpoint(
        cfg.checkpoint, cfg.segmentor, domains, network=cfg.network, heads=heads,
        num_classes=cfg.num_classes, batch_size=cfg.batch_size, mode=cfg.mode,
        crop=tuple(cfg.crop), stride=tuple(cfg.stride),
        scale=tuple(cfg.scale) if cfg.scale else None, device=device, amp=cfg.amp,
        channels_last=cfg.channels_last, progress=cfg.progress, num_workers=cfg.num_workers)

    outputs = {}
    for name, confusion in confusions.items():
        path = run_dir / "confusion" / f"{name}.npy"
        M.save_confusion(path, confusion)
        outputs[f"confusion_{name}"] = path
    metrics = summarize(confusions, classes, labels.CLASS_NAMES if cfg.num_classes == 19 else None)
    metrics.update(segmentor=cfg.segmentor, network=cfg.network, checkpoint=str(cfg.checkpoint))
    if cfg.stand_in:
        metrics["note"] = runs.STAND_IN_NOTE
    runs.finish_run(run_dir, outputs, metrics)
    for name, result in metrics["domains"].items():
        print(f"{name}: mIoU {result['miou']}")
    print(f"harmonic mean H: {metrics['harmonic_mean']}")
    return metrics


@hydra.main(version_base="1.3", config_path=str(Path(__file__).resolve().parents[1] / "configs"),
            config_name="evaluate")
def main(cfg) -> None:
    run_evaluation(cfg)


if __name__ == "__main__":
    # As in experiments.train: run the importable module's main so that a SLURM launch
    # pickles it by reference (cloudpickle cannot pickle torch.classes by value).
    from experiments.evaluate import main as importable_main

    importable_main()
