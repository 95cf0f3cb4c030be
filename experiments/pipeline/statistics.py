"""Per-domain statistics for the statistics-sharing merges, each computed inside its domain.

RegMean needs, from each domain, the Gram matrices of every conv/linear layer's inputs;
Fisher merging the diagonal Fisher of every parameter (``fusion.regmean_grams``,
``fusion.fisher_information``). ``run_statistic(cfg)`` (``python -m experiments.statistics``)
computes one of them for one trained model on its own domain's unlabelled training images
alone and writes ``runs/statistics/<name>/statistic.safetensors``: the only thing that
leaves the domain besides the weights. Its manifest records the kind, the domain, the images
read (paths), the tensor bytes and the time it took. A complete run is skipped.

Images: ``images`` of the domain's training split (no labels read), evenly spaced over the
sorted file list, resized keep-ratio to ``resize`` when given (paper scale: the domain's
test scale), fed ``batch_size`` at a time through the segmentor's decoder in eval mode.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

import fusion
from experiments.data.domains import domain_root, is_stand_in, load_domain
from experiments.data.transforms import keep_ratio_size
from experiments.inference import sources
from experiments.infra.measure import measured
from experiments.infra.runs import finish_run, is_complete, read_manifest, stage
from experiments.models.segmentors import decoder_logits, normalize

log = logging.getLogger(__name__)

KINDS = {"regmean": "regmean_gram", "fisher": "fisher"}
STATISTIC_FILE = "statistic.safetensors"


def forward(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """How the data-driven merges feed a segmentor: the decoder's logits (classes on axis 1)."""
    return decoder_logits(model, images)


def image_indices(total: int, count: int) -> list[int]:
    """``count`` indices evenly spaced over ``range(total)`` (all of them when count >= total)."""
    if total <= 0:
        return []
    if count >= total:
        return list(range(total))
    return sorted({int(round(i)) for i in np.linspace(0, total - 1, int(count))})


def unlabelled_batches(domain: str, data_root: str | Path, images: int, batch_size: int,
                       split: str = "train", resize: Sequence[int] | None = None,
                       device: str | torch.device = "cpu") -> tuple[list[torch.Tensor], list[str]]:
    """Normalised image batches (B x 3 x H x W) of one domain's split, and the files read.

    No label is opened. Images of different sizes go into different batches.
    """
    if int(images) < 1 or int(batch_size) < 1:
        raise ValueError(f"images and batch_size must be >= 1, got {images} and {batch_size}")
    dataset = load_domain(domain, data_root, split, with_labels=False)
    picked = image_indices(len(dataset), int(images))
    if not picked:
        raise ValueError(f"domain {domain}: split {split!r} under {data_root} holds no images")
    groups: dict[tuple, list[np.ndarray]] = {}
    paths = []
    for index in picked:
        sample = dataset[index]
        groups.setdefault(sample["image"].shape, []).append(sample["image"])
        paths.append(str(sample.get("path", index)))
    batches = []
    for arrays in groups.values():
        for start in range(0, len(arrays), int(batch_size)):
            x = normalize(torch.from_numpy(np.stack(arrays[start:start + int(batch_size)])).to(device))
            if resize is not None:
                x = F.interpolate(x, size=keep_ratio_size(x.shape[2], x.shape[3], resize), mode="bilinear",
                                  align_corners=False)
            batches.append(x)
    return batches, paths


def compute(model: torch.nn.Module, kind: str, batches: Sequence[torch.Tensor],
            fisher: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """The statistic ``kind`` (regmean | fisher) of ``model`` on ``batches``."""
    if kind not in KINDS:
        raise ValueError(f"statistic kind {kind!r} unknown; choose one of {sorted(KINDS)}")
    if kind == "regmean":
        return fusion.regmean_grams(model, batches, forward)
    options = dict(fisher or {})
    return fusion.fisher_information(model, batches, forward, labels=options.get("labels", "sample"),
                                     seed=int(options.get("seed", 0)))


def _as_config(cfg: DictConfig | Mapping[str, Any]) -> DictConfig:
    return cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))


def run_statistic(cfg: DictConfig | Mapping[str, Any]) -> Path:
    """Compute ``cfg.kind`` for the model of ``cfg.model`` on ``cfg.domain``; return the run folder."""
    cfg = _as_config(cfg)
    if cfg.kind not in KINDS:
        raise ValueError(f"kind={cfg.kind!r}: choose one of {sorted(KINDS)}")
    run_dir = Path(cfg.run_dir)
    if is_complete(run_dir) and not cfg.get("force", False):
        return run_dir
    source = sources.from_run(cfg.model)
    if len(source.weights) != 1:
        raise ValueError(f"{cfg.model}: an encoder-only merge has one model per head; give a single model")
    trained_on = tuple((read_manifest(Path(cfg.model)) or {}).get("targets") or ())
    if trained_on and cfg.domain not in trained_on:
        # Not an error (a user may want another domain's statistic), but the privacy
        # argument assumes each domain computes its own model's statistic.
        log.warning("%s was trained on %s, its statistic is computed on %s", cfg.model, trained_on, cfg.domain)
    stand_in = is_stand_in([domain_root(cfg.data_root, cfg.domain)])
    with stage(run_dir, "statistic", cfg, source.inputs(), stand_in=stand_in):
        torch.manual_seed(0)
        device = cfg.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        network = source.build().to(device)
        batches, paths = unlabelled_batches(cfg.domain, cfg.data_root, cfg.images, cfg.batch_size,
                                            cfg.get("split", "train"), cfg.get("resize"), device)
        with measured() as cost:
            statistic = compute(network, cfg.kind, batches, cfg.get("fisher"))
        path = run_dir / STATISTIC_FILE
        size = fusion.save_statistic(statistic, path, KINDS[cfg.kind])
        finish_run(run_dir, {"statistic": path}, kind=cfg.kind, domain=cfg.domain, images=paths,
                   statistic_bytes=size, cost=cost.describe(), targets=list(trained_on))
    log.info("%s statistic of %s on %s: %d images, %.1f MiB", cfg.kind, cfg.model, cfg.domain, len(paths),
             size / 2 ** 20)
    return run_dir


def statistic_file(run_dir: str | Path) -> Path:
    return Path(run_dir) / STATISTIC_FILE


def statistic_size(run_dir: str | Path) -> int:
    """The tensor bytes a statistic run recorded (what its domain shares)."""
    manifest = read_manifest(Path(run_dir)) or {}
    if "statistic_bytes" not in manifest:
        raise ValueError(f"{run_dir}: not a complete statistic run (no statistic_bytes in its manifest)")
    return int(manifest["statistic_bytes"])
