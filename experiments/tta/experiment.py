"""The TTA experiment on the miniature benchmark: models x methods x wild streams.

``run_experiment(cfg)`` (Hydra entry ``python -m experiments.adapt``) has two parts:
1. ``norms``: a source-only ``mini_r18`` per normalisation (``cfg.norms``: BN / GN / LN)
   and seed, trained here on the GTA-like source (a short supervised loop, cached in
   ``runs_root/tta/``), in the wild settings (``cfg.settings`` of ``streams.SETTINGS``) on
   the four targets, optionally with a batch-size sweep on the mixed stream: SAR's claims;
2. ``merging``: the study pipeline's models (``cfg.models``: source-only, single-target
   and merged, resolved by ``experiments.tta.pipeline``) on their targets, single and
   mixed streams: does TTA on a merged model beat merging alone and TTA alone?
Streams (``load_stream_samples``): every labelled image of the target's ``cfg.splits``
(train and val by default; ``cfg.images_per_domain`` caps the count, evenly spaced), so
on the miniature a domain's stream is 150 images and the mixed stream 600 (hundreds of
updates at batch 1, tens at batch 8). The merging part reads ``cfg.merging.splits`` (val:
its self-trained models have seen the targets' train images).
Learning rates: SAR's rule for every method (``common.sar_lr``).
Results go to ``records.json`` (every result, its learning rate and stream trace) and the
tables, figures and claims of ``analysis.tta`` under ``cfg.out_dir``.

Cost: methods without state across batches (no TTA, BN-adapt) run each distinct batch
once per seed and model and are read back for the other settings (``runner.Memo``);
the sweep's point at the main batch size is the mixed setting's own result.
"""

from __future__ import annotations

import multiprocessing
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from experiments.data.labels import NUM_CLASSES
from experiments.infra import names, runs
from experiments.infra.threads import usable_threads
from experiments.tta import build_adapter
from experiments.tta.runner import Memo, run_stream
from experiments.tta.streams import DEFAULT_CORRUPTIONS, build_streams, mixed


def _plain(cfg: Any) -> Any:
    try:
        from omegaconf import OmegaConf

        return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg
    except ImportError:
        return cfg


def load_samples(domain: str, root: str | Path, split: str | None, limit: int | None, **options: Any) -> list[dict]:
    """Up to ``limit`` labelled samples, evenly spaced over the split (so ACDC's four
    conditions are all represented)."""
    from experiments.data.domains import load_domain

    data = load_domain(domain, root, split, **options)
    index = range(len(data)) if not limit or limit >= len(data) else np.linspace(0, len(data) - 1, limit).round()
    return [{"image": data[int(i)]["image"], "label": data[int(i)]["label"], "index": int(i)} for i in index]


def train_source(norm: str, seed: int, samples: list[dict], iterations: int, batch_size: int,
                 lr: float, run_dir: Path, segmentor: str = "mini_r18", *, stand_in: bool) -> Path:
    """Supervised source-only training (AdamW, cross-entropy, random horizontal flips);
    reused when ``run_dir`` holds a complete run. Returns the weights file."""
    weights = run_dir / "model.pth"
    if runs.is_complete(run_dir) and weights.is_file():
        return weights
    config = dict(norm=norm, seed=seed, iterations=iterations, batch_size=batch_size, lr=lr,
                  segmentor=segmentor, images=len(samples))
    with runs.stage(run_dir, "tta_source", config, stand_in=stand_in):
        _train_source(norm, seed, samples, iterations, batch_size, lr, run_dir, segmentor, weights)
    return weights


def _train_source(norm: str, seed: int, samples: list[dict], iterations: int, batch_size: int, lr: float,
                  run_dir: Path, segmentor: str, weights: Path) -> None:
    from experiments.models.segmentors import build_segmentor, normalize, segment

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_segmentor(segmentor, norm=norm, decode_head={"dropout_ratio": 0.0}).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1 - i / iterations)  # poly 1.0
    losses = []
    for _ in range(iterations):
        pick = rng.choice(len(samples), batch_size, replace=False)
        flip = rng.random(batch_size) < 0.5
        imgs = np.stack([samples[i]["image"][:, ::-1] if f else samples[i]["image"] for i, f in zip(pick, flip)])
        labels = np.stack([samples[i]["label"][:, ::-1] if f else samples[i]["label"] for i, f in zip(pick, flip)])
        loss = F.cross_entropy(segment(model, normalize(imgs)), torch.as_tensor(labels).long(), ignore_index=255)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    with runs.atomic_path(weights) as tmp:
        torch.save(model.state_dict(), tmp)
    runs.finish_run(run_dir, outputs={"weights": weights},
                    metrics={"final_loss": float(np.mean(losses[-20:])), "iterations": iterations})


def _source_factory(weights: Path, norm: str, segmentor: str = "mini_r18"):
    from experiments.models.segmentors import build_segmentor

    state = torch.load(weights, map_location="cpu", weights_only=True)

    def build() -> torch.nn.Module:
        model = build_segmentor(segmentor, norm=norm, decode_head={"dropout_ratio": 0.0})
        model.load_state_dict(state, strict=True)
        return model.eval()
    return build


def _run(build, method: str, samples: list[dict], batch_size: int, cfg: Mapping[str, Any],
         fisher: list[torch.Tensor], memo: Memo | None = None, cache: dict | None = None) -> dict:
    from experiments.models.segmentors import normalize, segment

    options = dict(cfg["method_options"].get(method) or {})
    if method == "eata" and cache is not None:
        if "fisher" not in cache:  # EATA's Fisher depends on the source model only
            from experiments.tta.common import configure_model
            from experiments.tta.eata import fisher_information

            model = build()
            configure_model(model, adapt=True)
            cache["fisher"] = fisher_information(model, segment, fisher)
        options["fisher"] = cache["fisher"]
    if method in ("tent", "eata", "sar") and cfg.get("lr_multiplier", 1.0) != 1.0:
        from experiments.tta.common import sar_lr
        options["lr"] = sar_lr(batch_size, method) * cfg["lr_multiplier"]
    adapter = build_adapter(method, build(), NUM_CLASSES, segment, batch_size=batch_size,
                            fisher_batches=fisher if method == "eata" else None, **options)
    result = run_stream(adapter, samples, batch_size, NUM_CLASSES, normalize, memo=memo)
    result.pop("confusion")
    result["lr"] = getattr(adapter, "lr", None)
    result["recoveries"] = getattr(adapter, "recoveries", 0)
    result["kept_fraction"] = adapter.kept / adapter.seen if getattr(adapter, "seen", 0) else None
    return result


def _memos(build, methods: list[str]) -> dict[str, Memo]:
    """Memos for the methods without state across batches. No TTA predicts per image; on a
    model without BatchNorm BN-adapt is exactly no TTA, so it shares that memo."""
    from torch.nn.modules.batchnorm import _BatchNorm

    has_bn = any(isinstance(m, _BatchNorm) for m in build().modules())
    memos = {"source": Memo(per_image=True)}
    memos["bn_adapt"] = Memo(per_image=False) if has_bn else memos["source"]
    return {m: memos[m] for m in methods if m in memos}


def run_grid(part: str, seed: int, models: Mapping[str, tuple[str, Any]], domains: Mapping[str, list[dict]],
             settings: list[str], methods: list[str], sweep_batch_sizes: list[int], cfg: Mapping[str, Any],
             fisher: list[torch.Tensor], started: float) -> list[dict]:
    """Every model x stream setting x method (and the batch-size sweep on the mixed stream)
    of one seed. Stateless methods run each distinct batch once (``runner.Memo``); the
    sweep's point at the main batch size is the ``mixed`` setting's result."""
    import warnings

    records = []
    for model_name, (norm, build) in models.items():
        memos, cache = _memos(build, methods), {}
        base = dict(seed=seed, model=model_name, norm=norm, part=part)
        for setting in settings:
            streams = build_streams(setting, domains, cfg["batch_size"], seed, float(cfg["imbalance_ratio"]),
                                    cfg.get("corruptions") or DEFAULT_CORRUPTIONS, int(cfg.get("severity", 3)))
            for method in methods:
                for stream_name, samples, batch_size in streams:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        result = _run(build, method, samples, batch_size, cfg, fisher, memos.get(method), cache)
                    records.append(dict(result, **base, setting=setting, method=method, stream=stream_name,
                                        batch_size=batch_size, warnings=sorted({str(w.message) for w in caught})))
                    print(f"[{time.perf_counter() - started:6.0f}s] s{seed} {model_name} {setting:9s} "
                          f"{method:8s} {stream_name:10s} mIoU {result['metric']:5.1f}", flush=True)
        sweep_stream = mixed(domains, seed)
        for batch_size in sweep_batch_sizes:
            for method in methods:
                same = [r for r in records if r["model"] == model_name and r["setting"] == "mixed"
                        and r["method"] == method and r["batch_size"] == batch_size]
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    result = same[0] if same else _run(build, method, sweep_stream, batch_size, cfg, fisher,
                                                       memos.get(method), cache)
                records.append(dict(result, **base, setting="sweep", method=method, stream="mixed",
                                    batch_size=batch_size, warnings=sorted({str(w.message) for w in caught})))
    return records


def load_stream_samples(domain: str, root: str | Path, splits: list[str], limit: int | None = None
                        ) -> tuple[list[dict], dict[str, int]]:
    """The labelled samples of ``splits`` of ``domain`` (in split order), up to ``limit`` of
    them evenly spaced over the whole list (``None``: all), each with a unique ``id``
    (domain/split/index). Images without a label file (the published Dark Zurich train
    split has none) cannot be scored and are left out. Returns the samples and the count
    taken from each split."""
    from experiments.data.domains import load_domain

    if not splits:
        raise ValueError(f"{domain}: no splits to build a stream from")
    found = []
    for split in splits:
        data = load_domain(domain, root, split)
        found += [(data, split, i) for i in range(len(data)) if data.label_paths[i] is not None]
    if not found:
        raise ValueError(f"{domain}: no labelled images in splits {list(splits)} under {root}")
    if limit and limit < len(found):
        found = [found[int(i)] for i in np.linspace(0, len(found) - 1, limit).round()]
    samples, counts = [], {split: 0 for split in splits}
    for data, split, i in found:
        item = data[i]
        samples.append({"image": item["image"], "label": item["label"], "index": i, "split": split,
                        "id": f"{domain}/{split}/{i}", "domain": domain})
        counts[split] += 1
    return samples, counts


def _domains(root: Path, names: list[str], limit: int | None, splits: list[str]
             ) -> tuple[dict[str, list[dict]], dict[str, dict[str, int]]]:
    """Domain name -> its stream samples (``load_stream_samples``), and the counts per split."""
    out, counts = {}, {}
    for name in names:
        out[name], counts[name] = load_stream_samples(name, root, list(splits), limit)
    return out, counts


def _seed_records(cfg: Mapping[str, Any], seed: int, source: list[dict], fisher: list[torch.Tensor],
                  domains: Mapping[str, list[dict]], merge_domains: Mapping[str, list[dict]],
                  pipeline_found: list, stand_in: bool, started: float) -> list[dict]:
    """Both parts for one seed: its source models per normalisation (trained or read back)
    in the wild settings, then the pipeline's models of that seed on the merging targets.
    Nothing carries over from one seed to the next, so seeds may run in any order or side
    by side (``cfg.workers``)."""
    from experiments.tta import pipeline

    torch.set_num_threads(usable_threads(cfg.get("threads") or torch.get_num_threads()))
    models = {}
    for norm in cfg.get("norms") or []:
        run_dir = names.run_path(cfg["runs_root"], "tta", names.tta_source_run(norm, seed))
        weights = train_source(norm, seed, source[:-cfg["fisher_images"]], cfg["source_iterations"],
                               cfg["source_batch_size"], cfg["source_lr"], run_dir, stand_in=stand_in)
        models[f"source_{norm}"] = (norm, _source_factory(weights, norm))
    records = run_grid("norms", seed, models, domains, cfg["settings"], cfg["methods"],
                       cfg["sweep_batch_sizes"], cfg, fisher, started)
    pipeline_models = {m.label: (pipeline.norm_of(m), pipeline.factory(m)) for m in pipeline_found}
    if pipeline_models:
        merging = cfg.get("merging") or {}
        records += run_grid("merging", seed, pipeline_models, merge_domains, merging["settings"],
                            merging.get("methods") or cfg["methods"], [], cfg, fisher, started)
    return records


def _seed_records_job(job: tuple) -> list[dict]:
    return _seed_records(*job)


def run_experiment(cfg: Mapping[str, Any]) -> dict:
    """Run both parts described by ``cfg`` (configs/adapt.yaml) and write the report.

    ``norms``: source models per normalisation on the four targets in every wild setting
    (SAR's claims); ``merging``: the pipeline's models (``cfg.models``) on their targets.
    """
    from analysis.report import STAND_IN_NOTE, record_artifacts
    from analysis.tta import REPORT_INPUTS, write_report
    from experiments.data.domains import domain_root, is_stand_in
    from experiments.data.miniature import generate_scale
    from experiments.models.segmentors import normalize
    from experiments.tta import pipeline

    if cfg["scale"].get("generate"):
        generate_scale(cfg["scale"])  # the same miniature every other stage of this scale reads
    cfg = _plain(cfg)
    torch.set_num_threads(usable_threads(cfg.get("threads") or torch.get_num_threads()))
    out_dir = Path(cfg["out_dir"])
    root = Path(cfg["scale"]["data_root"])
    stand_in = is_stand_in(domain_root(root, d) for d in ["gta", *cfg["domains"]])
    started, cpu_started = time.perf_counter(), time.process_time()
    entries = list(cfg.get("models") or [])
    if entries and cfg.get("build_missing"):
        pipeline.build_missing(entries, cfg["seeds"], cfg["runs_root"],
                               [f"scale={cfg['scale']['name']}", *(cfg.get("pipeline_overrides") or [])],
                               cfg.get("pipeline_train_overrides"))
    found, missing = pipeline.resolve_all(entries, cfg["seeds"], cfg["runs_root"])
    if missing:
        warnings.warn(pipeline.missing_message(missing), stacklevel=2)
        print(pipeline.missing_message(missing), flush=True)
    source = load_samples("gta", root, None, cfg["source_images"])
    fisher = [normalize(np.stack([s["image"] for s in source[-cfg["fisher_images"]:]]))]
    splits = list(cfg.get("splits") or ["val"])
    domains, counts = (_domains(root, cfg["domains"], cfg.get("images_per_domain"), splits)
                       if cfg.get("norms") else ({}, {}))
    merging = cfg.get("merging") or {}
    unknown = sorted(set(merging.get("domains") or []) - set(cfg["domains"]))
    if entries and unknown:
        raise ValueError(f"merging.domains {unknown} are not among domains ({cfg['domains']})")
    merge_domains, merge_counts = (_domains(root, [d for d in cfg["domains"] if d in merging["domains"]],
                                            merging.get("images_per_domain"), list(merging.get("splits") or splits))
                                   if entries else ({}, {}))
    jobs = [(cfg, seed, source, fisher, domains, merge_domains, found.get(seed, []), stand_in, started)
            for seed in cfg["seeds"]]
    workers = max(1, min(usable_threads(cfg.get("workers") or 1), len(jobs)))
    if workers == 1:
        per_seed = [_seed_records(*job) for job in jobs]
    else:  # seeds side by side, one process each; every seed's records are those of a serial run
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            per_seed = list(pool.map(_seed_records_job, jobs))
    records = [r for part in per_seed for r in part]
    out_dir.mkdir(parents=True, exist_ok=True)
    runs.write_json_atomic(out_dir / "records.json", records)
    seconds = time.perf_counter() - started
    stream_sizes = {"norms": counts, "merging": merge_counts if found and any(found.values()) else {}}
    inputs = {"cfg": {**cfg, "classes": NUM_CLASSES, "stream_images": stream_sizes},
              "note": STAND_IN_NOTE if stand_in else "", "missing": [str(p) for p in missing],
              "timing": {"wall_s": seconds, "cpu_s": time.process_time() - cpu_started}}
    runs.write_json_atomic(out_dir / REPORT_INPUTS, inputs)  # python -m analysis.tta OUT_DIR re-renders
    outputs = write_report(records, inputs["cfg"], out_dir, inputs["note"], missing=inputs["missing"],
                           timing=inputs["timing"])
    record_artifacts(out_dir.parent, out_dir.name, [
        {"title": "Test-time adaptation in wild test streams", "files": [str(f) for f in outputs],
         "stand_in": stand_in, "runs": [str(m.run_dir) for ms in found.values() for m in ms if m.run_dir],
         "summary": f"seeds {list(cfg['seeds'])}; see README.md"}])
    print(f"TTA experiment finished in {seconds:.0f}s wall, {time.process_time() - cpu_started:.0f}s CPU; "
          f"outputs in {out_dir}")
    return {"records": records, "outputs": outputs, "missing": missing}
