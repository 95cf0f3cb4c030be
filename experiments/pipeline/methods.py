"""Merging methods side by side on domain-adaptive segmentation (``make reproduce-methods``).

``run_methods(cfg)`` (``python -m experiments.reproduce study=methods``) trains the
single-target models of each setting (the Table 1 setting: two targets; the Table 3
setting: four), merges them with every method of ``study.methods`` and scores each merge
on the setting's targets, seed by seed (``workers`` seeds side by side, each in its own
process with ``resources.threads`` threads; the records do not depend on ``workers``). Per
method it records what had to cross each domain's boundary besides the weights:

- ``nothing``: the data-free merges (averaging, task arithmetic, TIES, DARE, Breadcrumbs,
  TSV-M, Iso-C, Iso-CTS, SLERP; BatchNorm statistics travel inside the weights);
- ``statistic``: one file per domain computed inside it on its own unlabelled images
  (RegMean's Gram matrices, Fisher diagonals: ``experiments.pipeline.statistics``), with
  its size in bytes;
- ``images``: unlabelled target images at merge time (AdaMerging's entropy stream,
  REPAIR's calibration batches), with their count;
- the output ensemble crosses nothing but keeps K models and runs K forward passes.

and the merge's own wall time and peak added memory (``experiments.infra.measure``; the
inputs already loaded; a statistic's time is its domain's, reported apart). Every merge is
a run folder (``runs/merge/methods_<setting>_<method>_s<seed>``) scored through the one
evaluation path; a finished one is skipped when the study runs again.

``study.alignment``: the LMC panel of two models trained from different random inits, as
it is, after Git Re-Basin weight matching, and after weight matching + REPAIR (each point
of the path repaired on calibration images of both targets): curve, barrier and H of the
midpoint (``alignment_curves``).
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

import fusion
from analysis import reference
from analysis.claims import method_claims, write_claims
from analysis.figures import alignment_figure, methods_figure
from analysis.io import read_csv_rows, write_text_atomic
from analysis.metrics import harmonic_mean, interpolation_barrier, mean_iou
from analysis.report import STAND_IN_NOTE, record_artifacts, write_report
from analysis.tables import Summary, domain_table, summarize_domains, write_table
from experiments.inference import sources
from experiments.inference.evaluation import protocols
from experiments.inference.interpolation import evaluate_path
from experiments.infra import names
from experiments.infra.logs import log_study
from experiments.infra.measure import measured
from experiments.infra.runs import finish_run, is_complete, read_manifest, stage
from experiments.infra.threads import torch_threads, usable_threads
from experiments.pipeline import stages
from experiments.pipeline.merging import DATA_METHODS, _base_model
from experiments.pipeline.rebasin import backbone_permutation_spec
from experiments.pipeline.statistics import forward, run_statistic, statistic_file, unlabelled_batches

log = logging.getLogger(__name__)
CONFIGS = Path(__file__).resolve().parents[2] / "configs"

NOTHING, STATISTIC, IMAGES, ENSEMBLE = "nothing", "statistic", "images", "ensemble"


# --- what each method needs ------------------------------------------------------------------

def kind_of(spec: Mapping) -> str:
    """What crosses each domain's boundary for the method ``spec`` (a ``study.methods`` entry)."""
    if spec.get("ensemble"):
        return ENSEMBLE
    if spec.get("statistic"):
        return STATISTIC
    if spec.get("fusion") in ("adamerging", "repair"):
        return IMAGES
    return NOTHING


def resolve_overrides(overrides: Mapping[str, Any] | None, count: int) -> dict[str, Any]:
    """A method's ``fusion_overrides`` with the string ``"1/K"`` replaced by 1 / (number of members)."""
    out = {}
    for key, value in (overrides or {}).items():
        out[key] = 1.0 / count if value == "1/K" else value
    return out


def applies(spec: Mapping, count: int) -> bool:
    """Whether a method runs with ``count`` members (SLERP and REPAIR merge exactly two)."""
    limit = spec.get("members")
    return limit is None or int(limit) == count


def _fusion_config(name: str, overrides: Mapping[str, Any]) -> DictConfig:
    from hydra import compose

    cfg = compose(config_name="merge", overrides=[f"fusion={name}", "name=x", "members=[]"])
    for key, value in overrides.items():
        if key not in cfg.fusion.keys():
            raise ValueError(f"fusion={name} has no parameter {key!r}")
        cfg.fusion[key] = value
    return cfg.fusion


# --- the merges that need images at merge time ------------------------------------------------

def merge_images(cfg: DictConfig, domains: Sequence[str], per_domain: int, seed: int,
                 device: torch.device | str = "cpu") -> tuple[list, list[str]]:
    """Unlabelled training images of every target, interleaved domain by domain (the merge-time stream)."""
    options = cfg.study.merge_time_images
    protocol = protocols(cfg.scale.get("test"), domains)
    per = []
    paths: list[str] = []
    for domain in domains:
        batches, read = unlabelled_batches(domain, cfg.scale.data_root, per_domain, int(options.batch_size),
                                           resize=protocol[domain].resize, device=device)
        per.append(batches)
        paths += read
    order = np.random.default_rng(seed).permutation(max(len(b) for b in per))
    stream = [batches[i] for i in order for batches in per if i < len(batches)]
    return stream, paths


def _save_merge(run_dir: Path, state: dict, member_runs: Sequence[Path], method: str, extra: Mapping) -> None:
    info = sources.model_info(member_runs[0])
    paths = fusion.save_merged(state, run_dir, {"method": method, "members": [str(m) for m in member_runs]},
                               manifest_name=None)
    finish_run(run_dir, {"merged_safetensors": paths["safetensors"], "merged_pth": paths["pth"]}, method=method,
               members=[str(m) for m in member_runs],
               model={"segmentor": info["segmentor"], "overrides": info.get("overrides") or {}, "network": "merged"},
               **extra)


def adamerging_merge(cfg: DictConfig, run_dir: Path, member_runs: Sequence[Path], domains: Sequence[str],
                     spec: DictConfig, seed: int, stand_in: bool, device: torch.device | str = "cpu") -> Path:
    """Layer-wise AdaMerging on an unlabelled stream of the targets' training images."""
    if is_complete(run_dir):
        return run_dir
    members = [sources.from_run(r) for r in member_runs]
    with stage(run_dir, "merge", {"fusion": OmegaConf.to_container(spec), "members": [str(m) for m in member_runs],
                                  "seed": seed}, {f"member{i}": m.weights[0].path for i, m in enumerate(members)},
               stand_in=stand_in):
        torch.manual_seed(seed)
        states = [m.state() for m in members]
        _, base = _base_model(spec, [m.weights[0].path for m in members])
        model = members[0].build().to(device)
        stream, paths = merge_images(cfg, domains, int(cfg.study.merge_time_images.per_domain), seed, device)
        with measured() as cost:
            result = fusion.adamerging(model, base, states, stream, steps=int(spec.steps), lr=float(spec.lr),
                                       init=float(spec.init), bounds=None if spec.bounds is None else tuple(spec.bounds),
                                       buffers=spec.buffers, forward=forward)
        layers = torch.stack(list(result.coefficients.values()))  # L x K
        _save_merge(run_dir, result.state_dict, member_runs, "adamerging",
                    {"merge_cost": cost.describe(), "merge_images": paths, "entropy": result.entropy,
                     "coefficients_mean": layers.mean(0).tolist(), "coefficients_std": layers.std(0).tolist()})
    return run_dir


def repair_merge(cfg: DictConfig, run_dir: Path, member_runs: Sequence[Path], domains: Sequence[str],
                 spec: DictConfig, seed: int, stand_in: bool, device: torch.device | str = "cpu") -> Path:
    """B aligned to A by weight matching, then the midpoint repaired on calibration images (K = 2)."""
    if is_complete(run_dir):
        return run_dir
    if len(member_runs) != 2:
        raise ValueError(f"repair merges exactly 2 models, got {len(member_runs)}")
    a_source, b_source = (sources.from_run(r) for r in member_runs)
    with stage(run_dir, "merge", {"fusion": OmegaConf.to_container(spec), "members": [str(m) for m in member_runs],
                                  "seed": seed}, {"member0": a_source.weights[0].path, "member1": b_source.weights[0].path},
               stand_in=stand_in):
        a, b = a_source.state(), b_source.state()
        model = a_source.build().to(device)
        stream, paths = merge_images(cfg, domains, int(cfg.study.merge_time_images.per_domain), seed, device)
        with measured() as cost:
            permutation_spec = backbone_permutation_spec(model, a)
            permutation = fusion.weight_matching(permutation_spec, a, b, seed=seed)
            b_aligned = fusion.apply_permutation(permutation_spec, permutation, b)
            merged = fusion.repair(model, a, b_aligned, stream, alpha=float(spec.alpha), buffers=spec.buffers,
                                   forward=forward)
        _save_merge(run_dir, merged, member_runs, "repair",
                    {"merge_cost": cost.describe(), "merge_images": paths,
                     "nonidentity_fraction": fusion.permutation_fraction_nonidentity(permutation)})
    return run_dir


# --- one method on one setting -----------------------------------------------------------------

def statistic_runs(cfg: DictConfig, kind: str, member_runs: Sequence[Path], member_domains: Sequence[str]) -> list[Path]:
    """Each member's statistic on its own target's unlabelled images (one run folder each)."""
    options = cfg.study.statistics
    protocol = protocols(cfg.scale.get("test"), member_domains)
    out = []
    for run, domain in zip(member_runs, member_domains):
        name = names.statistic_run(run, kind, domain, int(options.images))
        out.append(run_statistic({
            "model": str(run), "domain": domain, "kind": kind, "images": int(options.images),
            "batch_size": int(options.batch_size), "split": "train", "data_root": cfg.scale.data_root,
            "resize": None if protocol[domain].resize is None else list(protocol[domain].resize),
            "fisher": dict(options.get("fisher") or {}),
            "run_dir": str(names.run_path(cfg.runs_root, "statistics", name))}))
    return out


def run_method(cfg: DictConfig, setting: str, method: str, spec: DictConfig, seed: int,
               member_runs: Sequence[Path], member_domains: Sequence[str],
               evaluator: stages.Evaluator) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Merge (or ensemble) one setting's members with one method; its confusions and costs."""
    name = f"{setting}_{method}"
    count = len(member_runs)
    overrides = resolve_overrides(spec.get("fusion_overrides"), count)
    info: dict[str, Any] = {"kind": kind_of(spec), "statistic_bytes": None, "images": None,
                            "statistic_seconds": None, "merge_seconds": None, "peak_bytes": None}
    if spec.get("ensemble"):
        out = names.run_path(cfg.runs_root, "evaluate", names.study_run(cfg.study.name, name, seed))
        confusions = evaluator.score_source(sources.ensemble_of(list(member_runs), name), out)
        info.update(merge_seconds=0.0, peak_bytes=0, forward_passes=count, run=str(out))
        return confusions, info
    fusion_name = spec.fusion
    run_dir = stages.merge_run_dir(cfg, name, seed)
    if fusion_name in DATA_METHODS:
        fusion_spec = _fusion_config(fusion_name, overrides)
        build = adamerging_merge if fusion_name == "adamerging" else repair_merge
        build(cfg, run_dir, member_runs, member_domains, fusion_spec, seed, evaluator.stand_in, evaluator.device)
        manifest = read_manifest(run_dir) or {}
        info["images"] = len(manifest.get("merge_images") or [])
    else:
        values = {}
        if spec.get("statistic"):
            kind = str(spec.statistic)
            runs = statistic_runs(cfg, kind, member_runs, member_domains)
            values[{"regmean": "grams", "fisher": "fishers"}[kind]] = [str(statistic_file(r)) for r in runs]
            manifests = [read_manifest(r) or {} for r in runs]
            info["statistic_bytes"] = int(np.mean([m["statistic_bytes"] for m in manifests]))
            info["statistic_seconds"] = float(np.mean([m["cost"]["seconds"] for m in manifests]))
            info["images"] = int(np.mean([len(m.get("images") or []) for m in manifests]))
        stages.merge_models(cfg, name, seed, member_runs, {"fusion": fusion_name, "fusion_overrides": overrides},
                            values)
        manifest = read_manifest(run_dir) or {}
    cost = manifest.get("merge_cost") or {}
    info.update(merge_seconds=cost.get("seconds"), peak_bytes=cost.get("peak_bytes"), run=str(run_dir))
    return evaluator.scores(run_dir), info


# --- the LMC panel with alignment --------------------------------------------------------------

VARIANTS = ("plain", "weight_matching", "weight_matching_repair")


def alignment_run_dir(cfg: DictConfig, seed: int) -> Path:
    return names.run_path(cfg.runs_root, "curve", names.study_run(cfg.study.name, "alignment", seed))


def alignment_curves(cfg: DictConfig, evaluator: stages.Evaluator, spec: Mapping, seed: int,
                     trained: Mapping[str, Path]) -> Path:
    """mIoU per domain and H along the path from A to B: as trained, B weight-matched to A, and
    weight-matched + REPAIR at every alpha; one CSV per seed."""
    out = alignment_run_dir(cfg, seed)
    if is_complete(out):
        return out
    a_source, b_source = sources.from_run(trained[spec["a"]]), sources.from_run(trained[spec["b"]])
    alphas = np.linspace(0.0, 1.0, int(spec.get("points", 11)))
    config = {"a": str(a_source.run_dir), "b": str(b_source.run_dir), "alphas": alphas.tolist(), "seed": seed}
    with stage(out, "alignment", config, {"a": a_source.weights[0].path, "b": b_source.weights[0].path},
               stand_in=evaluator.stand_in):
        a, b = a_source.state(), b_source.state()
        model = a_source.build().to(evaluator.device)
        permutation_spec = backbone_permutation_spec(model, a)
        permutation = fusion.weight_matching(permutation_spec, a, b, seed=seed)
        b_aligned = fusion.apply_permutation(permutation_spec, permutation, b)
        stream, _ = merge_images(cfg, evaluator.domains, int(spec.get("calibration_images", 16)), seed,
                                 evaluator.device)
        paths = {
            "plain": [fusion.interpolate(a, b, float(t), "pooled_by_weight") for t in alphas],
            "weight_matching": [fusion.interpolate(a, b_aligned, float(t), "pooled_by_weight") for t in alphas],
            "weight_matching_repair": [fusion.repair(model, a, b_aligned, stream, float(t), "pooled_by_weight",
                                                     forward) for t in alphas],
        }
        rows = []
        for variant, points in paths.items():
            for domain in evaluator.domains:
                confusions = evaluate_path(model, points, evaluator.dataset(domain), batch_size=evaluator.batch_size,
                                           device=evaluator.device)
                rows += [{"variant": variant, "alpha": round(float(t), 4), "domain": domain,
                          "miou": 100.0 * mean_iou(c)} for t, c in zip(alphas, confusions)]
            for t in alphas:
                values = [r["miou"] for r in rows if r["variant"] == variant and r["alpha"] == round(float(t), 4)]
                rows.append({"variant": variant, "alpha": round(float(t), 4), "domain": "H",
                             "miou": harmonic_mean(values)})
        lines = ["variant,alpha,seed,domain,miou"] + [
            f"{r['variant']},{r['alpha']},{seed},{r['domain']},{r['miou']:.4f}" for r in rows]
        write_text_atomic(out / "curve.csv", "\n".join(lines) + "\n")
        finish_run(out, {"curve": out / "curve.csv"},
                   nonidentity_fraction=fusion.permutation_fraction_nonidentity(permutation))
    return out


def alignment_outputs(cfg: DictConfig, results_dir: Path, note: str) -> list[Path]:
    spec = cfg.study.alignment
    rows = []
    for seed in cfg.seeds:
        rows += read_csv_rows(alignment_run_dir(cfg, seed) / "curve.csv")
    labels = cfg.study.get("labels") or {}
    files = list(alignment_figure(rows, results_dir / "lmc_alignment.pdf", spec.title,
                                  (labels.get(spec.a, spec.a), labels.get(spec.b, spec.b)), note))
    table_rows, csv_rows = [], []
    for variant in VARIANTS:
        barrier, middle = Summary(), Summary()
        for seed in cfg.seeds:
            path = sorted((float(r["alpha"]), float(r["miou"])) for r in rows
                          if r["variant"] == variant and r["domain"] == "H" and int(r["seed"]) == seed)
            barrier.values.append(interpolation_barrier([t for t, _ in path], [h for _, h in path]))
            middle.values.append(min(path, key=lambda p: abs(p[0] - 0.5))[1])
        table_rows.append([VARIANT_LABELS[variant], barrier.format(2), middle.format(1)])
        csv_rows.append([variant, len(barrier.values), round(barrier.mean, 4), round(barrier.std, 4),
                         round(middle.mean, 4), round(middle.std, 4)])
    files += write_table(results_dir / "lmc_alignment_barriers", ["Path", "H barrier", "H at alpha = 0.5"],
                         table_rows, ["variant", "seeds", "barrier_mean", "barrier_std", "h_mid_mean", "h_mid_std"],
                         csv_rows, f"{spec.title}: barrier of H and H of the midpoint, mean ± std over seeds", note)
    return files


VARIANT_LABELS = {"plain": "as trained", "weight_matching": "weight matching",
                  "weight_matching_repair": "weight matching + REPAIR"}


# --- the study ---------------------------------------------------------------------------------

def _describe_need(info: Mapping[str, Any], count: int) -> str:
    kind = info["kind"]
    if kind == NOTHING:
        return "nothing"
    if kind == STATISTIC:
        return f"a statistic of {info['statistic_bytes'] / 2 ** 20:.1f} MiB (from {info['images']} images, inside)"
    if kind == IMAGES:
        return f"{info['images'] // count} unlabelled images each, at merge time"
    return "nothing; keeps the K models, K forward passes"  # one column for every setting's K


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [float(v) for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def write_outputs(cfg: DictConfig, records: list[dict], costs: dict, results_dir: Path, note: str) -> list[Path]:
    study = cfg.study
    labels = dict(study.get("method_labels") or {})
    files: list[Path] = []
    summaries: dict[str, dict[str, dict[str, Summary]]] = {}
    for setting, setting_spec in study.settings.items():
        domains = list(setting_spec.domains)
        chosen = [r for r in records if r["setting"] == setting]
        summaries[setting] = summarize_domains(chosen, domains)
        columns = reference.columns(setting_spec.get("paper_reference"), list(summaries[setting]))
        files += domain_table(summaries[setting], domains, labels, results_dir / f"methods_{setting}",
                              f"{study.title}: {setting_spec.title}, mIoU (%) per target and H", note, columns)
    by_key = method_claims(records, {s: list(v.domains) for s, v in study.settings.items()}, study.baseline, labels)
    files += write_claims(list(by_key.values()), results_dir / "claims", note)
    settings = list(study.settings)
    header = ["Method", "Needs from each domain"]
    csv_header = ["method", "kind"]
    for setting in settings:
        header += [f"H {study.settings[setting].short}", f"vs {labels.get(study.baseline, study.baseline)}"]
        csv_header += [f"{setting}_h_mean", f"{setting}_h_std", f"{setting}_seeds", f"{setting}_difference",
                       f"{setting}_verdict", f"{setting}_merge_seconds", f"{setting}_peak_mib",
                       f"{setting}_statistic_bytes", f"{setting}_images"]
    shorts = " / ".join(study.settings[s].short for s in settings)
    header += [f"merge s ({shorts})", f"peak MiB ({shorts})"]
    rows, csv_rows, figure_rows = [], [], []
    for method in study.methods:
        row, csv_row = [labels.get(method, method)], [method]
        need = next((_describe_need(costs[(s, method)][0], len(study.settings[s].members)) for s in reversed(settings)
                     if (s, method) in costs), "–")
        row.append(need)
        csv_row.append(next((costs[(s, method)][0]["kind"] for s in settings if (s, method) in costs), ""))
        seconds_cells, peak_cells = [], []
        for setting in settings:
            summary = summaries[setting].get(method, {}).get("H")
            verdict = by_key.get((method, setting))
            if summary is None:
                row += ["–", "–"]
                csv_row += ["", "", 0, "", "", "", "", "", ""]
                seconds_cells.append("–")
                peak_cells.append("–")
                continue
            infos = [info for info in costs.get((setting, method), [])]
            seconds = _mean([i["merge_seconds"] for i in infos])
            peak = _mean([i["peak_bytes"] for i in infos])
            row += [summary.format(1), "–" if verdict is None else f"{verdict.mean:+.1f} ({verdict.verdict})"]
            csv_row += [round(summary.mean, 4), round(summary.std, 4), len(summary.values),
                        "" if verdict is None else round(verdict.mean, 4), "" if verdict is None else verdict.verdict,
                        "" if seconds is None else round(seconds, 4), "" if peak is None else round(peak / 2 ** 20, 2),
                        infos[0]["statistic_bytes"] or "", infos[0]["images"] or ""]
            figure_rows.append({"setting": setting, "method": method, "label": labels.get(method, method),
                                "kind": infos[0]["kind"], "values": list(summary.values),
                                "verdict": None if verdict is None else verdict.verdict})
            seconds_cells.append("–" if seconds is None else f"{seconds:.2f}")
            peak_cells.append("–" if peak is None else f"{peak / 2 ** 20:.0f}")
        row += [" / ".join(seconds_cells), " / ".join(peak_cells)]
        rows.append(row)
        csv_rows.append(csv_row)
    files += write_table(results_dir / "methods", header, rows, csv_header, csv_rows,
                         f"{study.title}: H (%) mean ± std over seeds; difference to the baseline with the "
                         "pre-declared verdict; what each domain hands over besides its weights; merge time "
                         "and peak added memory", note)
    files += list(methods_figure(figure_rows, {s: study.settings[s].title for s in settings},
                                 labels.get(study.baseline, study.baseline), study.baseline,
                                 results_dir / "methods_h.pdf", note))
    return files


def _target_of(run: Path) -> str:
    """The one target domain a single-target member was trained on (its manifest says)."""
    targets = list((read_manifest(run) or {}).get("targets") or [])
    if len(targets) != 1:
        raise ValueError(f"{run}: a member of the methods study must be a single-target model, "
                         f"its manifest lists targets {targets}")
    return targets[0]


def run_seed(cfg: DictConfig, seed: int, trained: Mapping[str, Path]) -> dict[str, Any]:
    """Every method on every setting for one seed's trained models, and its alignment panel:
    the records (mIoU per domain), each merge's costs and the run folders written."""
    study = cfg.study
    evaluators = {s: stages.Evaluator(cfg, list(spec.domains)) for s, spec in study.settings.items()}
    records: list[dict] = []
    costs: list[tuple[tuple[str, str], dict]] = []
    runs: list[str] = []
    for setting, setting_spec in study.settings.items():
        members = list(setting_spec.members)
        member_runs = [trained[m] for m in members]
        member_domains = [_target_of(run) for run in member_runs]
        for method, spec in study.methods.items():
            if not applies(spec, len(members)):
                continue
            confusions, info = run_method(cfg, setting, method, spec, seed, member_runs, member_domains,
                                          evaluators[setting])
            costs.append(((setting, method), info))
            runs.append(info["run"])
            records += [{"setting": setting, "method": method, "seed": seed, "domain": d,
                         "miou": 100.0 * mean_iou(c)} for d, c in confusions.items()]
            log.info("methods %s %s seed %d: H %.2f", setting, method, seed,
                     harmonic_mean([100.0 * mean_iou(c) for c in confusions.values()]))
    if study.get("alignment"):
        evaluator = stages.Evaluator(cfg, list(study.alignment.domains))
        runs.append(str(alignment_curves(cfg, evaluator, study.alignment, seed, trained)))
    return {"records": records, "costs": costs, "runs": runs}


def _seed_in_worker(job: tuple) -> dict[str, Any]:
    """``run_seed`` in a spawned worker: its own Hydra config search (merges compose
    configs/merge.yaml), the run's thread count, progress lines on stderr."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    cfg, seed, trained = job
    logging.basicConfig(level=logging.INFO, format=f"[seed {seed}] %(asctime)s %(name)s %(levelname)s - %(message)s")
    torch.set_num_threads(usable_threads(cfg.resources.threads))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return run_seed(cfg, seed, trained)


def run_methods(cfg: DictConfig) -> dict[str, Any]:
    """Run the methods study; return its records and the files it wrote."""
    started = time.time()
    study = cfg.study
    results_dir = Path(cfg.results_dir) / study.name
    stages.ensure_data(cfg)
    all_domains = list(dict.fromkeys(d for s in study.settings.values() for d in s.domains))
    stand_in = stages.data_is_stand_in(cfg, all_domains)
    note = STAND_IN_NOTE if stand_in else ""
    jobs = {(label, seed): stages.compose_train(cfg, list(overrides), seed, label)
            for seed in cfg.seeds for label, overrides in study.models.items()}
    folders = stages.train_models(cfg, jobs)
    runs = {str(p) for p in folders.values()}
    jobs = [(cfg, seed, {label: folders[(label, seed)] for label in study.models}) for seed in cfg.seeds]
    workers = max(1, min(usable_threads(cfg.workers), len(jobs)))
    if workers > 1:  # seeds side by side, one process each (resources.threads threads)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = list(pool.map(_seed_in_worker, jobs))
    else:
        with torch_threads(cfg.resources.threads):  # the workers' count: results do not depend on workers
            parts = [run_seed(*job) for job in jobs]
    records: list[dict] = []
    costs: dict[tuple[str, str], list[dict]] = {}
    for part in parts:  # in seed order, whichever process ran them
        records += part["records"]
        for key, info in part["costs"]:
            costs.setdefault(key, []).append(info)
        runs |= set(part["runs"])
    files = write_outputs(cfg, records, costs, results_dir, note)
    if study.get("alignment"):
        files += alignment_outputs(cfg, results_dir, note)
    record_artifacts(cfg.results_dir, study.name, [
        {"title": study.title, "files": [str(f) for f in files], "stand_in": stand_in, "runs": sorted(runs),
         "summary": f"seeds {list(cfg.seeds)}; {study.get('summary', '')}"}])
    write_report(cfg.results_dir)
    log_study(study.name, OmegaConf.to_container(cfg, resolve=True), records, files, cfg.logger.wandb_mode,
              cfg.logger.project, cfg.logger.get("group"), Path(cfg.runs_root) / "wandb")
    log.info("study %s finished in %.0f s", study.name, time.time() - started)
    return {"records": records, "files": files, "seconds": time.time() - started}
