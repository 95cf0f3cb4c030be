"""Evaluate a model on target domains: ``python -m experiments.evaluate``.

A thin Hydra entry point (``configs/evaluate.yaml``) over ``run_evaluation``, which goes
through the project's one evaluation path (``experiments.inference.evaluation.evaluate``):
``<runs_root>/evaluate/<name>/{confusion/<domain>.npy, metrics.json, manifest.json}``.

    python -m experiments.evaluate model=runs/train/gta2cs_mini_r18_daformer_shared_s0
    python -m experiments.evaluate model=runs/merge/table1_merged_encoder_only_s0   # one head per domain
    python -m experiments.evaluate checkpoint=weights.pth segmentor=daformer_r101 name=mine scale=paper
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import hydra
from omegaconf import DictConfig, OmegaConf

from experiments.data import labels
from experiments.data.domains import domain_root, is_stand_in, load_domain
from experiments.inference import sources
from experiments.inference.evaluation import evaluate, protocols
from experiments.infra import names

_CLASS_SUBSETS = {"all": None, "synthia16": labels.SYNTHIA16, "synthia13": labels.SYNTHIA13}


def model_source(cfg: Mapping[str, Any]) -> sources.ModelSource:
    """The model ``cfg`` names: ``model`` (a run folder) or ``checkpoint`` (+ segmentor)."""
    if bool(cfg.get("model")) == bool(cfg.get("checkpoint")):
        raise ValueError("give exactly one of model=<run folder> or checkpoint=<weights file>")
    if cfg.get("model"):
        return sources.from_run(cfg["model"], network=cfg.get("network"))
    segmentor, overrides = cfg.get("segmentor"), dict(cfg.get("overrides") or {})
    if isinstance(segmentor, Mapping):  # the segmentor config group (configs/segmentor/<name>.yaml)
        overrides = {**dict(segmentor.get("overrides") or {}), **overrides}
        segmentor = segmentor.get("name")
    if not segmentor:
        raise ValueError("checkpoint=<weights file> needs segmentor=<name> (configs/segmentor/)")
    return sources.from_checkpoint(cfg["checkpoint"], str(segmentor), overrides, cfg.get("network") or "student")


def run_evaluation(cfg: DictConfig | Mapping[str, Any]) -> dict:
    """Evaluate the model of ``cfg`` on ``cfg.domains``; return ``metrics.json``'s content."""
    import json

    cfg = OmegaConf.create(OmegaConf.to_container(OmegaConf.create(cfg), resolve=True))
    if cfg.classes not in _CLASS_SUBSETS:
        raise ValueError(f"classes must be one of {sorted(_CLASS_SUBSETS)}, got {cfg.classes!r}")
    source = model_source(cfg)
    name = cfg.name or names.evaluation_run(source.run_dir or source.label)
    out_dir = names.run_path(cfg.runs_root, "evaluate", name)
    domains = list(cfg.domains)
    datasets = {d: load_domain(d, cfg.data_root) for d in domains}
    import torch

    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    evaluate(source, datasets, out_dir, protocols(cfg.scale.test, domains),
             stand_in=is_stand_in(domain_root(cfg.data_root, d) for d in domains), batch_size=cfg.batch_size,
             classes=_CLASS_SUBSETS[cfg.classes], force=cfg.force, config=OmegaConf.to_container(cfg),
             device=device, amp=cfg.amp, channels_last=cfg.channels_last, progress=cfg.progress,
             num_workers=cfg.num_workers)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    for domain, result in metrics["domains"].items():
        print(f"{domain}: mIoU {result['miou']}")
    print(f"harmonic mean H: {metrics['harmonic_mean']}  ({out_dir})")
    return metrics


@hydra.main(version_base="1.3", config_path=str(Path(__file__).resolve().parents[1] / "configs"),
            config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run_evaluation(cfg)


if __name__ == "__main__":
    # As in experiments.train: run the importable module's main so that a SLURM launch
    # pickles it by reference (cloudpickle cannot pickle torch.classes by value).
    from experiments.evaluate import main as importable_main

    importable_main()
