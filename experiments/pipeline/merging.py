"""The merge stage: trained models into one (or one per head) without data.

``run_merge(cfg)`` (``python -m experiments.merge``, studies, TTA) applies a
``configs/fusion`` method through ``fusion``. The run folder ``runs/merge/<name>`` holds
the merged weights (safetensors and an mmseg-loadable .pth), the resolved config and a
manifest with the sha256 of every member and output, how to rebuild the network, whether
the members come from the miniature stand-in, and the merge's own wall time and peak
added memory (``merge_cost``, ``experiments.infra.measure``; inputs already loaded).
A complete run is skipped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

import fusion
from fusion.checkpoint import sha256_of
from experiments.inference.sources import WEIGHT_FILES
from experiments.infra.measure import measured
from experiments.infra.runs import finish_run, is_complete, read_manifest, stage

log = logging.getLogger(__name__)


def _as_config(cfg: DictConfig | Mapping[str, Any]) -> DictConfig:
    return cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))


INITIAL_WEIGHTS = "initial.safetensors"  # experiments.selftraining.loop writes it in every training run


def _base_model(spec: DictConfig, members: list[Path]) -> tuple[Path, dict[str, torch.Tensor]]:
    """theta_0 of the task-vector methods.

    ``base_network: initial`` (default): the members' common starting point, the
    ``initial.safetensors`` their training runs wrote before the first step; members that
    started from different weights share no theta_0 and are refused. Otherwise the network
    ``base_network`` (imagenet | student | teacher) of ``base`` (default: the first member's
    checkpoint), e.g. the ``imnet_model.`` of a checkpoint released with DAFormer.
    """
    network = spec.get("base_network") or "initial"
    if network != "initial":
        path = Path(spec.get("base") or members[0])
        return path, fusion.load_checkpoint(path, network)
    if spec.get("base"):
        path = Path(spec.base)
        path = path / INITIAL_WEIGHTS if path.is_dir() else path
        return path, fusion.load_checkpoint(path)
    files = [Path(m).parent / INITIAL_WEIGHTS for m in members]
    absent = [str(m) for m, f in zip(members, files) if not f.is_file()]
    if absent:
        raise FileNotFoundError(f"fusion.base_network=initial: no {INITIAL_WEIGHTS} beside {absent} (runs "
                                "trained before it was written, or weights outside a run folder); give "
                                "fusion.base=<theta_0 checkpoint> or fusion.base_network=imagenet|student|teacher")
    digests = {sha256_of(f) for f in files}
    if len(digests) != 1:
        raise ValueError(f"the members started from different weights ({[str(f) for f in files]} differ): "
                         "task vectors theta_k - theta_0 need one common theta_0; merge them with a "
                         "method that needs none (e.g. fusion=midpoint) or give fusion.base")
    return files[0], fusion.load_checkpoint(files[0])


# Methods on task vectors tau_k = theta_k - theta_0 (they need theta_0, ``base``), and the
# parameters each reads from its configs/fusion entry.
TASK_VECTOR_METHODS = {
    "task_arithmetic": (fusion.task_arithmetic, ("scale",)),
    "ties": (fusion.ties_merging, ("density", "scale")),
    "dare": (fusion.dare, ("drop_rate", "scale", "seed")),
    "breadcrumbs": (fusion.model_breadcrumbs, ("top", "bottom", "scale")),
    "tsv_merge": (fusion.tsv_merge, ("alpha",)),
    "iso_c": (fusion.iso_c, ("alpha",)),
    "iso_cts": (fusion.iso_cts, ("alpha", "common_fraction")),
}
# Methods that read one statistic file per member (computed on that member's domain alone).
STATISTIC_METHODS = {"regmean": ("grams", "regmean_gram"), "fisher": ("fishers", "fisher")}
# Methods that need a network and images at merge time (``experiments.pipeline.methods``).
DATA_METHODS = ("adamerging", "repair")


def needs_base(spec: DictConfig) -> bool:
    return spec.method in TASK_VECTOR_METHODS


def _statistics(spec: DictConfig, count: int) -> list[dict[str, torch.Tensor]]:
    key, kind = STATISTIC_METHODS[spec.method]
    files = list(spec.get(key) or [])
    if len(files) != count:
        raise ValueError(f"fusion.{key}: {spec.method} needs one statistic file per member ({count}), "
                         f"got {len(files)}; make them with `python -m experiments.statistics`")
    return [fusion.load_statistic(f, kind) for f in files]


def merge_states(spec: DictConfig, states: list[dict[str, torch.Tensor]],
                 base: dict[str, torch.Tensor] | None = None) -> list[dict[str, torch.Tensor]]:
    """Apply the data-free or statistics-sharing method of ``spec`` (a ``configs/fusion`` entry);
    one state dict per output (the encoder-only merge: one per member)."""
    method = spec.method
    buffers = spec.get("buffers", "pooled")
    if method == "linear":
        weights = spec.get("weights")
        weights = None if weights is None else list(weights)
        if spec.get("prefix"):
            return fusion.merge_by_prefix(states, spec.prefix, weights, buffers)
        return [fusion.merge_linear(states, weights, buffers)]
    if method in TASK_VECTOR_METHODS:
        function, parameters = TASK_VECTOR_METHODS[method]
        return [function(base, states, **{p: spec[p] for p in parameters}, buffers=buffers)]
    if method == "slerp":
        if len(states) != 2:
            raise ValueError(f"slerp merges exactly 2 models, got {len(states)} members")
        return [fusion.slerp(states[0], states[1], spec.t, buffers)]
    if method == "regmean":
        return [fusion.regmean(states, _statistics(spec, len(states)), spec.alpha, buffers)]
    if method == "fisher":
        weights = None if spec.get("weights") is None else list(spec.weights)
        return [fusion.fisher_merge(states, _statistics(spec, len(states)), weights, spec.epsilon, buffers)]
    if method in DATA_METHODS:
        raise ValueError(f"{method} needs the network and unlabelled images at merge time: run it through "
                         "experiments.pipeline.methods (make reproduce-methods), not as a data-free merge")
    known = ["linear", "slerp", *TASK_VECTOR_METHODS, *STATISTIC_METHODS, *DATA_METHODS]
    raise ValueError(f"unknown merge method {method!r}: {' | '.join(known)}")


@dataclass(frozen=True)
class Member:
    """One model to merge: its weights file, and what its run folder says about it."""

    path: Path
    run_dir: Path | None
    model: dict[str, Any] | None     # segmentor, overrides, network (from the run's manifest)
    targets: tuple[str, ...]          # target domains it was trained on (for encoder-only heads)
    stand_in: bool


def _member(entry: str | Path) -> Member:
    """A member given as a run folder or as a weights file (inside a run folder or not)."""
    path = Path(entry)
    if path.is_dir():
        run_dir = path
        weights = next((path / n for n in WEIGHT_FILES if (path / n).is_file()), None)
        if weights is None:
            raise FileNotFoundError(f"merge member {path}: a folder without {' or '.join(WEIGHT_FILES)}")
    elif path.is_file():
        weights, run_dir = path, path.parent if (path.parent / "manifest.json").is_file() else None
    else:
        raise FileNotFoundError(f"merge member {path} not found")
    manifest = read_manifest(run_dir) if run_dir is not None else None
    targets = tuple((manifest or {}).get("targets") or ())
    if not targets:  # a training checkpoint outside its run folder records its config
        meta = torch.load(weights, map_location="cpu", weights_only=False).get("meta", {}) \
            if weights.suffix == ".pth" else {}
        targets = tuple(((meta.get("config") or {}).get("target") or {}).get("names") or ())
    return Member(weights, run_dir, (manifest or {}).get("model"), targets, bool((manifest or {}).get("stand_in")))


def _model_entry(cfg: DictConfig, members: list[Member]) -> dict[str, Any] | None:
    """How to rebuild the merged network: the members' (which must agree) or ``cfg.model``."""
    if cfg.get("model"):
        return dict(OmegaConf.to_container(cfg.model, resolve=True))
    described = [m.model for m in members if m.model]
    if not described:
        return None
    kinds = {json.dumps({k: d.get(k) for k in ("segmentor", "overrides")}, sort_keys=True) for d in described}
    if len(kinds) != 1 or len(described) != len(members):
        raise ValueError(f"merge members differ in network (segmentor, overrides) or do not all say: "
                         f"{[m.model for m in members]}")
    return {k: described[0][k] for k in ("segmentor", "overrides")}


def run_merge(cfg: DictConfig | Mapping[str, Any]) -> Path:
    """Merge ``cfg.members`` with ``cfg.fusion`` into ``cfg.run_dir``; return the run folder.

    Members are run folders or weights files. A merge refused for bad input (mismatched
    keys or shapes, NaN/Inf weights: ``fusion`` names them) leaves a ``failed`` manifest.
    """
    cfg = _as_config(cfg)
    entries = list(cfg.members or [])
    if not entries:
        raise ValueError("members is empty: give the run folders or checkpoints to merge, e.g. members=[a,b]")
    run_dir = Path(cfg.run_dir)
    if is_complete(run_dir) and not cfg.get("force", False):
        log.info("merge %s is complete; skipping (force=true re-runs it)", run_dir)
        return run_dir
    members = [_member(e) for e in entries]
    spec = cfg.fusion
    inputs: dict[str, Path] = {f"member{i}": m.path for i, m in enumerate(members)}
    stand_in = any(m.stand_in for m in members)
    with stage(run_dir, "merge", cfg, inputs, stand_in=stand_in):
        base = None
        if needs_base(spec):
            inputs["base"], base = _base_model(spec, [m.path for m in members])
        model = _model_entry(cfg, members)
        states = [fusion.load_checkpoint(m.path, cfg.network) for m in members]
        with measured() as cost:  # the merge itself, its inputs already in memory
            merged = merge_states(spec, states, base)
        meta = {"name": cfg.name, "method": spec.method, "network": cfg.network,
                "members": [str(m.path) for m in members], "fusion": OmegaConf.to_container(spec, resolve=True)}
        outputs: dict[str, Path] = {}
        extra: dict[str, Any] = {"method": spec.method, "members": [str(e) for e in entries],
                                 "merge_cost": cost.describe()}
        if model:  # lets later stages rebuild the network
            extra["model"] = dict(model, network="merged")
        if len(merged) == 1:
            # finish_run records the sha256 of the outputs in the run's own manifest
            paths = fusion.save_merged(merged[0], run_dir, meta, manifest_name=None)
            outputs.update(merged_safetensors=paths["safetensors"], merged_pth=paths["pth"])
        else:  # encoder-only: member i's decode head on the shared encoder, a run folder each
            extra["heads"] = []
            for index, (member, state) in enumerate(zip(members, merged)):
                head_dir = run_dir / f"head{index}"
                with stage(head_dir, "merge_head", {"head_of": str(member.path)}, {"member": member.path},
                           stand_in=stand_in):
                    paths = fusion.save_merged(state, head_dir, {**meta, "head_of": str(member.path)},
                                               manifest_name=None)
                    finish_run(head_dir, {"merged_safetensors": paths["safetensors"], "merged_pth": paths["pth"]},
                               method=spec.method, model=extra.get("model"), head_of=str(member.path),
                               targets=list(member.targets))
                extra["heads"].append({"folder": head_dir.name, "member": str(member.path),
                                       "domains": list(member.targets)})
                outputs[f"head{index}_safetensors"] = paths["safetensors"]
        finish_run(run_dir, outputs, **extra)
    log.info("merged %d models (%s) into %s", len(members), spec.method, run_dir)
    return run_dir
