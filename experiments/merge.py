"""Merge trained models into one (or one per head) without data: ``python -m experiments.merge``.

A thin Hydra entry point over ``fusion``; ``run_merge(cfg)`` does the work and is
what tests call. The run folder ``runs/merge/<name>`` holds the merged weights
(safetensors and an mmseg-loadable .pth), the resolved config and a manifest
with the sha256 of every member and output. A complete run is skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

import fusion
from experiments.runs import finish_run, is_complete, start_run

log = logging.getLogger(__name__)


def _as_config(cfg: DictConfig | Mapping[str, Any]) -> DictConfig:
    return cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))


def _base_model(spec: DictConfig, members: list[Path]) -> tuple[Path, dict[str, torch.Tensor]]:
    """theta_0 of task arithmetic / TIES: by default the first member's ImageNet network."""
    path = Path(spec.get("base") or members[0])
    return path, fusion.load_checkpoint(path, spec.get("base_network", "imagenet"))


def merge_states(spec: DictConfig, states: list[dict[str, torch.Tensor]],
                 base: dict[str, torch.Tensor] | None = None) -> list[dict[str, torch.Tensor]]:
    """Apply the method of ``spec`` (a ``configs/fusion`` entry); one state dict per output."""
    method = spec.method
    buffers = spec.get("buffers", "pooled")
    if method == "linear":
        weights = spec.get("weights")
        weights = None if weights is None else list(weights)
        if spec.get("prefix"):
            return fusion.merge_by_prefix(states, spec.prefix, weights, buffers)
        return [fusion.merge_linear(states, weights, buffers)]
    if method == "task_arithmetic":
        return [fusion.task_arithmetic(base, states, spec.scale, buffers)]
    if method == "ties":
        return [fusion.ties_merging(base, states, spec.density, spec.scale, buffers)]
    if method == "slerp":
        if len(states) != 2:
            raise ValueError(f"slerp merges exactly 2 models, got {len(states)} members")
        return [fusion.slerp(states[0], states[1], spec.t, buffers)]
    raise ValueError(f"unknown merge method {method!r}: linear | task_arithmetic | ties | slerp")


def run_merge(cfg: DictConfig | Mapping[str, Any]) -> Path:
    """Merge ``cfg.members`` with ``cfg.fusion`` into ``cfg.run_dir``; return the run folder."""
    cfg = _as_config(cfg)
    members = [Path(p) for p in (cfg.members or [])]
    if not members:
        raise ValueError("members is empty: give the checkpoints to merge, e.g. members=[a.pth,b.pth]")
    run_dir = Path(cfg.run_dir)
    if is_complete(run_dir) and not cfg.get("force", False):
        log.info("merge %s is complete; skipping (force=true re-runs it)", run_dir)
        return run_dir
    spec = cfg.fusion
    inputs: dict[str, Path] = {f"member{i}": p for i, p in enumerate(members)}
    base = None
    if spec.method in ("task_arithmetic", "ties"):
        inputs["base"], base = _base_model(spec, members)
    start_run(run_dir, "merge", cfg, inputs, stand_in=cfg.get("stand_in", True))
    states = [fusion.load_checkpoint(p, cfg.network) for p in members]
    merged = merge_states(spec, states, base)
    meta = {"name": cfg.name, "method": spec.method, "network": cfg.network,
            "members": [str(p) for p in members],
            "fusion": OmegaConf.to_container(spec, resolve=True)}
    outputs: dict[str, Path] = {}
    if len(merged) == 1:
        # finish_run records the sha256 of the outputs in the run's own manifest
        paths = fusion.save_merged(merged[0], run_dir, meta, manifest_name=None)
        outputs.update(merged_safetensors=paths["safetensors"], merged_pth=paths["pth"])
    else:  # encoder-only: member i's decode head on the shared encoder
        for index, state in enumerate(merged):
            paths = fusion.save_merged(state, run_dir / f"head{index}",
                                       {**meta, "head_of": str(members[index])})
            outputs[f"head{index}_safetensors"] = paths["safetensors"]
            outputs[f"head{index}_pth"] = paths["pth"]
    # ``model`` (segmentor name, build overrides) lets later stages rebuild the network.
    model = OmegaConf.to_container(cfg.model, resolve=True) if cfg.get("model") else None
    finish_run(run_dir, outputs, method=spec.method, heads=len(merged),
               **({"model": dict(model, network="merged")} if model else {}))
    log.info("merged %d models (%s) into %s", len(members), spec.method, run_dir)
    return run_dir


@hydra.main(version_base="1.3", config_path="../configs", config_name="merge")
def main(cfg: DictConfig) -> None:
    run_merge(cfg)


if __name__ == "__main__":
    main()
