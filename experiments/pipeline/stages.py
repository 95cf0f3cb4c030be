"""The steps a study is made of, each cached in a run folder under a deterministic name.

- ``train_models``: single-target models (``experiments.selftraining.loop.train``), side by
  side, skipped when ``run_state`` says they are done.
- ``merge_models``: a training-free merge of trained members, configured through the
  ``fusion`` config group (``configs/fusion/*.yaml``) like ``python -m experiments.merge``.
- ``Evaluator``: confusion matrices per target domain through the one evaluation path
  (``experiments.inference.evaluation.evaluate``), cached per model in ``runs/evaluate``.
- ``interpolation_curve``: the LMC path between two models, all alphas in one data pass.
- ``write_study_outputs`` / ``write_curve_figures``: tables and PDFs from the records.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from hydra import compose
from omegaconf import DictConfig

from analysis import reference
from analysis.claims import claims_of, lmc_claims, write_claims
from analysis.figures import lmc_figure
from analysis.io import read_csv_rows, write_json_atomic, write_text_atomic
from analysis.metrics import harmonic_mean, interpolation_barrier, mean_iou
from analysis.figures import qualitative_figure
from analysis.tables import Summary, class_table, domain_table, summarize_domains, write_table
from experiments.data.labels import CLASS_NAMES, PALETTE
from experiments.data.domains import domain_root, is_stand_in, load_domain
from experiments.inference import sources
from experiments.inference.evaluation import evaluate, protocols
from experiments.inference.interpolation import evaluate_path, path_state_dicts
from experiments.infra import names
from experiments.infra.runs import finish_run, is_complete, stage
from experiments.pipeline.merging import run_merge

log = logging.getLogger(__name__)


def ensure_data(cfg: DictConfig) -> None:
    """Generate the miniature benchmark when the study's scale makes one and it is missing."""
    if cfg.scale.get("generate"):
        from experiments.data.miniature import generate_scale

        generate_scale(cfg.scale)


def data_is_stand_in(cfg: DictConfig, domains: Sequence[str]) -> bool:
    """Whether the study's data is the miniature (its own manifest says so)."""
    return is_stand_in(domain_root(cfg.scale.data_root, d) for d in domains)


def row_of(cfg: DictConfig, label: str | None) -> str | None:
    """The paper row a study model trains as at a scale of paper rows (``scale.paper_rows``)."""
    if not cfg.scale.get("paper_rows") or label is None:
        return None
    rows = cfg.study.get("rows") or {}
    if label not in rows:
        raise ValueError(f"study {cfg.study.name}: model {label!r} has no paper row (study.rows) at "
                         f"scale={cfg.scale.name}, whose models train as configs/experiment/paper_<row>.yaml")
    return str(rows[label]).format(backbone=cfg.scale.backbone)


def compose_train(cfg: DictConfig, overrides: Sequence[str], seed: int, label: str | None = None) -> DictConfig:
    """The training config of one model of the study: at a scale of paper rows, the model's row
    (``experiment=paper_<row>``); then the scale's overrides, then the model's own."""
    row = row_of(cfg, label)
    experiment = [f"experiment=paper_{row}"] if row else []
    return compose(config_name="train",
                   overrides=[*experiment, *cfg.scale.train_overrides, *overrides, f"seed={seed}",
                              f"runs_root={cfg.runs_root}"])


def _train_in_worker(train_cfg: DictConfig) -> str:
    from experiments.selftraining.loop import train

    logging.basicConfig(level=logging.WARNING)
    return str(train(train_cfg))


def train_models(cfg: DictConfig, jobs: Mapping[Any, DictConfig]) -> dict[Any, Path]:
    """Train every job (key -> training config) that ``run_state`` does not call done.

    Jobs that resolve to the same run folder (e.g. one model shared by two studies)
    are trained once. With ``workers > 1`` unfinished runs train side by side in
    spawned processes; pretraining runs first, here, so workers never race on it.
    """
    from experiments.selftraining.loop import run_state, train
    from experiments.selftraining.pretraining import prepare_backbone

    states = {key: run_state(job) for key, job in jobs.items()}
    pending = {}
    for key, job in jobs.items():
        if not states[key].done and states[key].run_dir not in pending:
            pending[states[key].run_dir] = job
    for job in pending.values():
        # Each pretrains with the job's own thread count (prepare_backbone sets it): on a busy
        # CPU extra OpenMP threads spin against the training workers and run many times slower.
        prepare_backbone(job)
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
    return {key: state.run_dir for key, state in states.items()}


def merge_run_dir(cfg: DictConfig, name: str, seed: int) -> Path:
    return names.run_path(cfg.runs_root, "merge", names.study_run(cfg.study.name, name, seed))


def merge_models(cfg: DictConfig, name: str, seed: int, members: Sequence[Path], spec: Mapping,
                 values: Mapping[str, Any] | None = None) -> Path:
    """Merge trained members with the ``fusion`` option ``spec.fusion`` (default midpoint),
    its parameters overridden by ``spec.fusion_overrides`` (e.g. ``{buffers: first}``) and then
    set to ``values`` (e.g. the statistic files of RegMean, one per member)."""
    run_dir = merge_run_dir(cfg, name, seed)
    extra = [f"fusion.{key}={value}" for key, value in (spec.get("fusion_overrides") or {}).items()]
    merge_cfg = compose(config_name="merge", overrides=[
        f"fusion={spec.get('fusion', 'midpoint')}", *extra, f"name={run_dir.name}",
        f"runs_root={cfg.runs_root}", "members=[]"])
    merge_cfg.members = [str(m) for m in members]
    for key, value in (values or {}).items():
        if key not in merge_cfg.fusion.keys():  # a ??? value is "not in" a DictConfig
            raise ValueError(f"fusion={spec.get('fusion')} has no parameter {key!r}")
        merge_cfg.fusion[key] = value
    return run_merge(merge_cfg)


class Evaluator:
    """Confusion matrices of models on the study's target domains, cached on disk.

    Validation images are decoded once and kept in memory for the whole study; every
    evaluation goes through ``experiments.inference.evaluation.evaluate`` into
    ``runs/evaluate/<model run name>`` under the scale's test protocol.
    """

    def __init__(self, cfg: DictConfig, domains: Sequence[str]):
        self.cfg = cfg
        self.domains = list(domains)
        self.batch_size = cfg.scale.eval_batch_size
        self.protocols = protocols(cfg.scale.get("test"), self.domains)
        self.stand_in = data_is_stand_in(cfg, self.domains)
        # Models are scored on the GPU when there is one (paper scale), else on the CPU.
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._data: dict[str, list[dict]] = {}

    def dataset(self, domain: str) -> list[dict]:
        if domain not in self._data:
            loaded = load_domain(domain, self.cfg.scale.data_root)
            self._data[domain] = [loaded[i] for i in range(len(loaded))]
        return self._data[domain]

    def scores(self, run_dir: Path) -> dict[str, np.ndarray]:
        """Confusion matrix per domain of the model of a training or merge run folder."""
        source = sources.from_run(run_dir)
        out = names.run_path(self.cfg.runs_root, "evaluate", names.evaluation_run(run_dir))
        return self.score_source(source, out)

    def score_source(self, source, out: Path) -> dict[str, np.ndarray]:
        """Confusion matrix per domain of any model source (e.g. an output ensemble), cached in ``out``."""
        return evaluate(source, {d: self.dataset(d) for d in self.domains}, out, self.protocols,
                        stand_in=self.stand_in, batch_size=self.batch_size, progress=False, device=self.device)


def prediction_maps(cfg: DictConfig, evaluator: Evaluator, models: Mapping[str, Path], images: int,
                    seed: int) -> Path:
    """Predictions of ``models`` on the first ``images`` validation images of each domain, as
    trainId PNGs beside the images and ground truths: ``runs/pictures/<study>_s<seed>``, whose
    ``pictures.json`` lists every file (the qualitative figure reads only that)."""
    from PIL import Image

    from experiments.inference.evaluation import predict_map

    out = names.run_path(cfg.runs_root, "pictures", names.study_run(cfg.study.name, "predictions", seed))
    if is_complete(out):
        return out
    with stage(out, "pictures", {"models": {k: str(v) for k, v in models.items()}, "images": images},
               {m: sources.from_run(p).weights[0].path for m, p in models.items()}, stand_in=evaluator.stand_in):
        listing: dict[str, Any] = {"methods": list(models), "domains": {}, "class_names": list(CLASS_NAMES),
                                   "palette": PALETTE.tolist()}
        for domain in evaluator.domains:
            samples = evaluator.dataset(domain)[:images]
            entries = []
            for index, sample in enumerate(samples):
                entry = {"image": f"{domain}/{index}_image.png", "label": f"{domain}/{index}_label.png",
                         "source": sample.get("path"), "predictions": {}}
                (out / domain).mkdir(parents=True, exist_ok=True)
                Image.fromarray(sample["image"]).save(out / entry["image"])
                Image.fromarray(sample["label"]).save(out / entry["label"])
                entries.append(entry)
            for method, run_dir in models.items():
                source = sources.from_run(run_dir)
                network = source.build(source.state(source.weights_for(domain)))
                for index, (entry, sample) in enumerate(zip(entries, samples)):
                    prediction = predict_map(network, sample["image"], sample["label"].shape,
                                             evaluator.protocols[domain])
                    path = f"{domain}/{index}_{method}.png"
                    Image.fromarray(prediction).save(out / path)
                    entry["predictions"][method] = path
            listing["domains"][domain] = entries
        write_json_atomic(out / "pictures.json", listing)
        finish_run(out, {"pictures": out / "pictures.json"})
    return out


def write_pictures(cfg: DictConfig, picture_dir: Path, results_dir: Path, note: str) -> list[Path]:
    labels = dict(cfg.study.get("labels") or {})
    return list(qualitative_figure(picture_dir / "pictures.json", results_dir / "predictions.pdf", labels, note))


def curve_run_dir(cfg: DictConfig, name: str, seed: int) -> Path:
    return names.run_path(cfg.runs_root, "curve", names.study_run(cfg.study.name, name, seed))


def interpolation_curve(cfg: DictConfig, evaluator: Evaluator, name: str, curve: Mapping, seed: int,
                        trained: Mapping[str, Path]) -> Path:
    """mIoU per domain and H along theta(alpha) = (1 - alpha) A + alpha B; one CSV per seed."""
    out = curve_run_dir(cfg, name, seed)
    if is_complete(out):
        return out
    a, b = sources.from_run(trained[curve["a"]]), sources.from_run(trained[curve["b"]])
    alphas = np.linspace(0.0, 1.0, int(curve.get("points", 11)))
    config = {"name": name, "a": str(a.run_dir), "b": str(b.run_dir), "alphas": alphas.tolist()}
    with stage(out, "curve", config, {"a": a.weights[0].path, "b": b.weights[0].path},
               stand_in=evaluator.stand_in):
        points = path_state_dicts(a.state(), b.state(), alphas,
                                  buffers=curve.get("buffers", "pooled_by_weight"))
        model = a.build(points[0])
        rows = []
        for domain in evaluator.domains:
            confusions = evaluate_path(model, points, evaluator.dataset(domain), batch_size=evaluator.batch_size,
                                       device=evaluator.device)
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
                        note: str, per_class: Sequence[dict] = ()) -> list[Path]:
    study = cfg.study
    summaries = summarize_domains(records, domains)
    columns = reference.columns(study.get("paper_reference"), list(summaries))
    labels = dict(study.get("labels") or {})
    files = domain_table(summaries, domains, labels, results_dir / study.name, study.title, note, columns)
    if per_class:
        files += class_table(per_class, domains, CLASS_NAMES, labels, results_dir / f"{study.name}_per_class",
                             f"{study.title}: IoU (%) per class, mean over seeds", note)
    if study.get("claims"):
        verdicts = claims_of(study.claims, records, domains)
        files += write_claims(verdicts, results_dir / "claims", note)
    return files


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
            seed_rows = read_csv_rows(curve_run_dir(cfg, name, seed) / "curve.csv")
            path = sorted((float(r["alpha"]), float(r["miou"])) for r in seed_rows if r["domain"] == "H")
            barriers[name].values.append(interpolation_barrier([a for a, _ in path], [h for _, h in path]))
            rows += seed_rows
        paper = reference.lmc_curve(curve["paper_reference"]) if curve.get("paper_reference") else None
        labels = cfg.study.get("labels") or {}
        files += lmc_figure(rows, results_dir / f"lmc_{name}.pdf", curve["title"],
                            (labels.get(curve["a"], curve["a"]), labels.get(curve["b"], curve["b"])),
                            note, paper, "published: ResNet-101, real data (paper Fig. LMC)")
    if barriers:
        files += write_table(results_dir / "lmc_barriers", ["Curve", "H barrier"],
                             [[curves[n]["title"], s.format(2)] for n, s in barriers.items()],
                             ["curve", "seeds", "barrier_mean", "barrier_std"],
                             [[n, len(s.values), round(s.mean, 4), round(s.std, 4)] for n, s in barriers.items()],
                             "Barrier of each interpolation curve: largest drop of H below the line between its endpoints",
                             note)
        verdicts = lmc_claims({n: s.values for n, s in barriers.items()},
                              {n: curves[n]["title"] for n in curves})
        if verdicts:
            files += write_claims(verdicts, results_dir / "lmc_claims", note)
    return files
