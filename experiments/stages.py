"""The steps a study is made of, each cached in a run folder under a deterministic name.

- ``train_models``: single-target models (``experiments.train``), side by side, skipped when done.
- ``merge_models``: a training-free merge of trained members (``fusion``).
- ``Evaluator``: confusion matrices per target domain, cached per model and domain.
- ``interpolation_curve``: the LMC path between two models, all alphas in one data pass.
- ``write_study_outputs`` / ``write_curve_figures``: tables and PDFs from the records.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from hydra import compose
from omegaconf import DictConfig, OmegaConf

import fusion
from analysis.figures import lmc_figure, read_csv_rows
from analysis.metrics import harmonic_mean, interpolation_barrier, mean_iou
from analysis.tables import (Summary, domain_table, paper_table1_harmonic_mean, paper_table3_harmonic_mean,
                             paper_table4_harmonic_mean, summarize_domains, write_table)
from experiments import datasets
from experiments.evaluate import evaluate_model
from experiments.merge import run_merge
from experiments.interpolate import evaluate_path, path_state_dicts
from experiments.models import build_segmentor
from experiments.runs import finish_run, is_complete, read_manifest, start_run, write_text_atomic

log = logging.getLogger(__name__)


def ensure_data(cfg: DictConfig) -> None:
    """Generate the miniature benchmark when the study runs on it and it is missing."""
    if cfg.scale.name != "mini":
        return
    from experiments.miniature import generate

    generate(cfg.scale.data_root, **OmegaConf.to_container(cfg.scale.generate, resolve=True))


def compose_train(cfg: DictConfig, overrides: Sequence[str], seed: int) -> DictConfig:
    """The training config of one model of the study (scale defaults, then the model's own)."""
    return compose(config_name="train",
                   overrides=[*cfg.scale.train_overrides, *overrides, f"seed={seed}",
                              f"runs_root={cfg.runs_root}"])


def _train_in_worker(train_cfg: DictConfig) -> str:
    from experiments.train import train

    logging.basicConfig(level=logging.WARNING)
    return str(train(train_cfg))


def train_models(cfg: DictConfig, jobs: Mapping[Any, DictConfig]) -> dict[Any, Path]:
    """Train every job (key -> training config); finished runs are skipped by ``train``.

    Jobs that resolve to the same run folder (e.g. one model shared by two studies)
    are trained once. With ``workers > 1`` unfinished runs train side by side in
    spawned processes; pretraining runs first, here, so workers never race on it.
    """
    from experiments.train import missing_snapshots, pretrained_backbone, run_dir_for, train

    folders = {key: run_dir_for(job) for key, job in jobs.items()}
    pending = {}
    for key, job in jobs.items():
        # A finished run still trains again when the job asks for snapshots it lacks (train.py).
        done = is_complete(folders[key]) and not missing_snapshots(job, folders[key])
        if not done and folders[key] not in pending:
            pending[folders[key]] = job
    threads = torch.get_num_threads()
    for job in pending.values():
        # Pretrain with the job's own thread count: on a busy CPU, extra OpenMP threads
        # spin against the training workers and run many times slower.
        torch.set_num_threads(max(1, int(job.resources.threads)))
        pretrained_backbone(job)
    torch.set_num_threads(threads)
    workers = min(int(cfg.workers), len(pending))
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for done in pool.map(_train_in_worker, pending.values()):
                log.info("trained %s", done)
    else:
        for job in pending.values():
            train(job)
    return folders


def _checkpoint(run_dir: Path) -> Path:
    for name in ("model.pth", "merged.safetensors"):
        if (run_dir / name).exists():
            return run_dir / name
    raise FileNotFoundError(f"{run_dir}: no model.pth or merged.safetensors (is the run complete?)")


def _model_info(run_dir: Path) -> dict[str, Any]:
    """Segmentor name, build overrides and network of a training or merge run."""
    manifest = read_manifest(run_dir) or {}
    info = manifest.get("model")
    if not info:
        raise ValueError(f"{run_dir}/manifest.json has no 'model' entry (segmentor, network)")
    return info


def load_state(run_dir: Path, network: str | None = None) -> dict[str, torch.Tensor]:
    info = _model_info(run_dir)
    return fusion.load_checkpoint(_checkpoint(run_dir), network=network or info.get("network", "student"))


def merge_models(cfg: DictConfig, name: str, seed: int, members: Sequence[Path], spec: Mapping) -> Path:
    """Merge trained members as ``spec`` says (buffers rule, optional key prefix)."""
    infos = [_model_info(m) for m in members]
    models = {json.dumps({k: i[k] for k in ("segmentor", "overrides")}, sort_keys=True) for i in infos}
    networks = {i["network"] for i in infos}
    if len(models) != 1 or len(networks) != 1:
        raise ValueError(f"merge {name}: members differ in model or saved network: {infos}")
    # Encoder-only variant (paper Table 1, dagger): merge the keys under the prefix and
    # keep each member's own decode head -> one model per member (head<i>/).
    return run_merge({
        "name": name, "members": [str(_checkpoint(m)) for m in members], "network": networks.pop(),
        "fusion": {"method": "linear", "weights": None, "buffers": spec.get("buffers", "pooled"),
                   "prefix": spec.get("prefix")},
        "run_dir": str(Path(cfg.runs_root) / "merge" / f"{cfg.study.name}_{name.replace('+', '-')}_s{seed}"),
        "stand_in": cfg.scale.name == "mini", "model": {k: infos[0][k] for k in ("segmentor", "overrides")},
    })


class Evaluator:
    """Confusion matrices of models on the study's target domains, cached on disk.

    Validation images are decoded once and kept in memory for the whole study.
    """

    def __init__(self, cfg: DictConfig, domains: Sequence[str]):
        self.cfg = cfg
        self.domains = list(domains)
        self.batch_size = cfg.scale.eval_batch_size
        self._data: dict[str, list[dict]] = {}

    def dataset(self, domain: str) -> list[dict]:
        if domain not in self._data:
            spec = dict(self.cfg.scale.domains[domain])
            loaded = datasets.load(spec.pop("dataset"), spec.pop("root"), spec.pop("split"), **spec)
            self._data[domain] = [loaded[i] for i in range(len(loaded))]
        return self._data[domain]

    def build_model(self, run_dir: Path, state: Mapping[str, torch.Tensor]) -> torch.nn.Module:
        info = _model_info(run_dir)
        model = build_segmentor(info["segmentor"], **info.get("overrides", {}))
        model.load_state_dict(state, strict=True)
        return model.eval()

    def _cached(self, run_dir: Path, states: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, np.ndarray]:
        """Evaluate ``states[domain]`` on each domain; cache under runs/evaluate/<name>."""
        out = Path(self.cfg.runs_root) / "evaluate" / run_dir.name
        if is_complete(out) and all((out / "confusion" / f"{d}.npy").exists() for d in self.domains):
            return {d: np.load(out / "confusion" / f"{d}.npy") for d in self.domains}
        start_run(out, "evaluate", {"model": str(run_dir), "domains": self.domains})
        confusions, outputs, models = {}, {}, {}
        for domain in self.domains:
            # One network per distinct state dict (the encoder-only merge has one per head).
            if id(states[domain]) not in models:
                models[id(states[domain])] = self.build_model(run_dir, states[domain])
            model = models[id(states[domain])]
            confusions[domain] = evaluate_model(model, self.dataset(domain), batch_size=self.batch_size,
                                                progress=False)
            path = out / "confusion" / f"{domain}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, confusions[domain])
            outputs[domain] = path
        mious = {d: 100.0 * mean_iou(c) for d, c in confusions.items()}
        finish_run(out, outputs, metrics={"miou": mious, "harmonic_mean": harmonic_mean(list(mious.values()))})
        return confusions

    def checkpoint(self, run_dir: Path) -> dict[str, np.ndarray]:
        state = load_state(run_dir)
        return self._cached(run_dir, {d: state for d in self.domains})

    def merged(self, merge_dir: Path, spec: Mapping, trained: Mapping[str, Path]) -> dict[str, np.ndarray]:
        if not spec.get("prefix"):
            state = fusion.load_checkpoint(merge_dir / "merged.safetensors")
            return self._cached(merge_dir, {d: state for d in self.domains})
        # Encoder-only: domain d is evaluated with the head of the member trained on d.
        members = list(spec["members"])
        states = {}
        for domain in self.domains:
            head = members.index(spec["heads"][domain])
            states[domain] = fusion.load_checkpoint(merge_dir / f"head{head}" / "merged.safetensors")
        return self._cached(merge_dir, states)


def interpolation_curve(cfg: DictConfig, evaluator: Evaluator, name: str, curve: Mapping, seed: int,
                        trained: Mapping[str, Path]) -> Path:
    """mIoU per domain and H along theta(alpha) = (1 - alpha) A + alpha B; one CSV per seed."""
    out = Path(cfg.runs_root) / "curve" / f"{cfg.study.name}_{name}_s{seed}"
    if is_complete(out):
        return out
    a, b = trained[curve["a"]], trained[curve["b"]]
    alphas = np.linspace(0.0, 1.0, int(curve.get("points", 11)))
    start_run(out, "curve", {"name": name, "a": str(a), "b": str(b), "alphas": alphas.tolist()},
              {"a": _checkpoint(a), "b": _checkpoint(b)})
    points = path_state_dicts(load_state(a), load_state(b), alphas, buffers=curve.get("buffers", "pooled_by_weight"))
    model = evaluator.build_model(a, points[0])
    rows = []
    for domain in evaluator.domains:
        confusions = evaluate_path(model, points, evaluator.dataset(domain), batch_size=evaluator.batch_size)
        for alpha, confusion in zip(alphas, confusions):
            rows.append({"alpha": round(float(alpha), 4), "seed": seed, "domain": domain,
                         "miou": 100.0 * mean_iou(confusion)})
    for alpha in alphas:
        values = [r["miou"] for r in rows if r["alpha"] == round(float(alpha), 4)]
        rows.append({"alpha": round(float(alpha), 4), "seed": seed, "domain": "H", "miou": harmonic_mean(values)})
    lines = ["alpha,seed,domain,miou"] + [f"{r['alpha']},{r['seed']},{r['domain']},{r['miou']:.4f}" for r in rows]
    write_text_atomic(out / "curve.csv", "\n".join(lines) + "\n")
    finish_run(out, {"curve": out / "curve.csv"})
    return out


def write_study_outputs(cfg: DictConfig, records: list[dict], domains: Sequence[str], results_dir: Path,
                        note: str) -> list[Path]:
    study = cfg.study
    summaries = summarize_domains(records, domains)
    reference = {}
    if study.get("paper_reference") == "table1":
        for encoder, title in (("resnet101", "paper H (R101)"), ("mit_b5", "paper H (MiT-B5)")):
            reference[title] = {m: paper_table1_harmonic_mean(m, encoder) for m in summaries}
    elif study.get("paper_reference") == "table4":
        reference["paper H (R101 for BN, MiT-B5 for LN)"] = {m: paper_table4_harmonic_mean(m) for m in summaries}
    elif study.get("paper_reference") == "table3":
        reference["paper H (R101)"] = {m: paper_table3_harmonic_mean(m) for m in summaries}
    labels = dict(study.get("labels") or {})
    return domain_table(summaries, domains, labels, results_dir / study.name, study.title, note, reference)


def write_curve_figures(cfg: DictConfig, results_dir: Path, note: str) -> list[Path]:
    """One PDF (+ CSV) per curve, and a table of the H barrier of every curve.

    Barrier = the largest drop of H below the straight line between the endpoints' H
    (``analysis.metrics.interpolation_barrier``), per seed, then mean ± std.
    """
    files: list[Path] = []
    barriers: dict[str, Summary] = {}
    curves = cfg.study.get("curves") or {}
    for name, curve in curves.items():
        rows = []
        barriers[name] = Summary()
        for seed in cfg.seeds:
            run = Path(cfg.runs_root) / "curve" / f"{cfg.study.name}_{name}_s{seed}"
            seed_rows = read_csv_rows(run / "curve.csv")
            path = sorted((float(r["alpha"]), float(r["miou"])) for r in seed_rows if r["domain"] == "H")
            barriers[name].values.append(interpolation_barrier([a for a, _ in path], [h for _, h in path]))
            rows += seed_rows
        reference = list(curve["paper_reference"]) if curve.get("paper_reference") else None
        labels = cfg.study.get("labels") or {}
        files += lmc_figure(rows, results_dir / f"lmc_{name}.pdf", curve["title"],
                            (labels.get(curve["a"], curve["a"]), labels.get(curve["b"], curve["b"])),
                            note, reference, "published: ResNet-101, real data (paper Fig. LMC)")
    if barriers:
        files += write_table(results_dir / "lmc_barriers", ["Curve", "H barrier"],
                             [[curves[n]["title"], s.format(2)] for n, s in barriers.items()],
                             ["curve", "seeds", "barrier_mean", "barrier_std"],
                             [[n, len(s.values), round(s.mean, 4), round(s.std, 4)] for n, s in barriers.items()],
                             "Barrier of each interpolation curve: largest drop of H below the line between its endpoints",
                             note)
    return files
