"""The paper's studies end to end: train -> merge -> evaluate -> tables and figures.

``run_study(cfg)`` (``python -m experiments.reproduce study=table1``, ``make
reproduce-table1``) runs one study described by a config in ``configs/study/``: which single-target models to
train (train-config overrides per model), which merges to build from them, which
interpolation curves to draw. Every step writes a run folder with a manifest under a
deterministic name, so a finished step is skipped when the study runs again and an
interrupted training resumes from its own latest checkpoint.
"""

from __future__ import annotations

import itertools
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from analysis.metrics import iou_per_class, mean_iou
from analysis.report import STAND_IN_NOTE, record_artifacts, write_report
from experiments.infra.logs import log_study
from analysis.figures import rebasin_figure
from experiments.pipeline import stages
from experiments.pipeline.rebasin import rebasin_comparison, rebasin_run_dir

log = logging.getLogger(__name__)


def _merge_specs(study: DictConfig) -> dict[str, dict]:
    """The study's merges, plus every subset of >= 2 of ``subsets.members`` when given (Table 3)."""
    merges = {name: dict(spec) for name, spec in (study.get("merges") or {}).items()}
    subsets = study.get("subsets")
    if subsets:
        members = list(subsets.members)
        for size in range(2, len(members) + 1):
            for group in itertools.combinations(members, size):
                merges["+".join(subsets.labels[m] for m in group)] = {
                    "members": list(group), "fusion": subsets.get("fusion", "midpoint")}
    return merges


def _records(name: str, seed: int, confusions: dict[str, np.ndarray]) -> list[dict]:
    return [{"method": name, "seed": seed, "domain": domain, "miou": 100.0 * mean_iou(c)}
            for domain, c in confusions.items()]


def _class_records(name: str, seed: int, confusions: dict[str, np.ndarray]) -> list[dict]:
    return [{"method": name, "seed": seed, "domain": domain, "iou": (100.0 * iou_per_class(c)).tolist()}
            for domain, c in confusions.items()]


def run_study(cfg: DictConfig) -> dict[str, Any]:
    """Run one study; return its records and the files it wrote."""
    if cfg.study.get("kind") == "methods":  # merging methods side by side: its own runner
        from experiments.pipeline.methods import run_methods

        return run_methods(cfg)
    started = time.time()
    study = cfg.study
    results_dir = Path(cfg.results_dir) / study.name
    domains = list(study.domains)
    stages.ensure_data(cfg)
    evaluator = stages.Evaluator(cfg, domains)
    stand_in = evaluator.stand_in  # read from the data's own manifest
    note = STAND_IN_NOTE if stand_in else ""
    merges = _merge_specs(study)
    records: list[dict] = []
    per_class: list[dict] = []
    pictures: dict[str, Path] = {}
    jobs = {(label, seed): stages.compose_train(cfg, list(overrides), seed, label)
            for seed in cfg.seeds for label, overrides in study.models.items()}
    folders = stages.train_models(cfg, jobs)
    runs = [str(p) for p in folders.values()]
    for seed in cfg.seeds:
        trained = {label: folders[(label, seed)] for label in study.models}
        for label in study.get("table_models", list(study.models)):
            confusions = evaluator.scores(trained[label])
            records += _records(label, seed, confusions)
            per_class += _class_records(label, seed, confusions)
            pictures[label] = trained[label]
        for name, spec in merges.items():
            merged = stages.merge_models(cfg, name, seed, [trained[m] for m in spec["members"]], spec)
            runs.append(str(merged))
            confusions = evaluator.scores(merged)
            records += _records(name, seed, confusions)
            per_class += _class_records(name, seed, confusions)
            pictures[name] = merged
        if study.get("pictures") and seed == cfg.seeds[0]:
            picture_dir = stages.prediction_maps(cfg, evaluator, {m: pictures[m] for m in study.pictures.methods},
                                                 int(study.pictures.images), seed)
        for curve_name, curve in (study.get("curves") or {}).items():
            stages.interpolation_curve(cfg, evaluator, curve_name, curve, seed, trained)
        if study.get("rebasin"):
            rebasin_comparison(cfg, evaluator, study.rebasin, seed, trained)
    files = stages.write_study_outputs(cfg, records, domains, results_dir, note, per_class) if records else []
    if study.get("pictures"):
        files += stages.write_pictures(cfg, picture_dir, results_dir, note)
    files += stages.write_curve_figures(cfg, results_dir, note)
    if study.get("rebasin"):
        files += rebasin_figure([rebasin_run_dir(cfg, seed) for seed in cfg.seeds], results_dir / "rebasin_vs_midpoint.pdf",
                                study.title, (study.rebasin.a, study.rebasin.b), note)
    record_artifacts(cfg.results_dir, study.name, [
        {"title": study.title, "files": [str(f) for f in files], "stand_in": stand_in,
         "runs": sorted(set(runs)), "summary": f"seeds {list(cfg.seeds)}; {study.get('summary', '')}"}])
    write_report(cfg.results_dir)
    log_study(study.name, OmegaConf.to_container(cfg, resolve=True), records, files, cfg.logger.wandb_mode,
              cfg.logger.project, cfg.logger.get("group"), Path(cfg.runs_root) / "wandb")
    log.info("study %s finished in %.0f s", study.name, time.time() - started)
    return {"records": records, "files": files, "seconds": time.time() - started}
