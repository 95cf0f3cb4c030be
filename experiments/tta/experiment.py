"""The TTA experiment on the miniature benchmark: source models x methods x wild streams.

``run_experiment(cfg)`` (Hydra entry ``python -m experiments.adapt``):
1. generates the miniature if its root is missing;
2. trains (or reuses, by manifest) a source-only ``mini_r18`` per normalisation and seed
   on the GTA-like source: a short supervised loop, enough for a stand-in source model;
   optional further models (STDA or merged checkpoints) come from ``cfg.extra_models``;
3. runs every model x method over the four target domains in each stream setting
   (``streams.SETTINGS``), plus a batch-size sweep on the mixed stream;
4. writes ``records.json`` (every result and stream trace) and the tables and figures
   (``experiments.tta.report``) under ``cfg.out_dir``.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from experiments import runs
from experiments.tta import build_adapter
from experiments.tta.runner import run_stream
from experiments.tta.streams import build_streams, mixed


def _plain(cfg: Any) -> Any:
    try:
        from omegaconf import OmegaConf

        return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg
    except ImportError:
        return cfg


def ensure_data(root: str | Path, size: tuple[int, int]) -> Path:
    """The miniature at ``root``; generated with its default settings when missing (the same
    data every other stage uses)."""
    root = Path(root)
    if not (root / "gta").is_dir():
        from experiments.miniature import generate

        generate(root, seed=0, size=tuple(size))
    return root


def load_samples(dataset: str, root: str | Path, split: str, limit: int | None, **options: Any) -> list[dict]:
    """Up to ``limit`` labelled samples, evenly spaced over the split (so ACDC's four
    conditions are all represented)."""
    from experiments.datasets import load

    data = load(dataset, root, split, **options)
    index = range(len(data)) if not limit or limit >= len(data) else np.linspace(0, len(data) - 1, limit).round()
    return [{"image": data[int(i)]["image"], "label": data[int(i)]["label"]} for i in index]


def train_source(norm: str, seed: int, samples: list[dict], iterations: int, batch_size: int,
                 lr: float, run_dir: Path, segmentor: str = "mini_r18") -> Path:
    """Supervised source-only training (AdamW, cross-entropy, random horizontal flips);
    reused when ``run_dir`` holds a complete run. Returns the weights file."""
    from experiments.models import build_segmentor, normalize, segment

    weights = run_dir / "model.pth"
    if runs.is_complete(run_dir) and weights.is_file():
        return weights
    config = dict(norm=norm, seed=seed, iterations=iterations, batch_size=batch_size, lr=lr,
                  segmentor=segmentor, images=len(samples))
    runs.start_run(run_dir, "tta_source", config)
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
    return weights


def _model_factory(entry: Mapping[str, Any]):
    from experiments.evaluate import load_into, load_weights
    from experiments.models import build_segmentor

    state = (torch.load(entry["checkpoint"], map_location="cpu", weights_only=True)
             if entry.get("plain") else load_weights(entry["checkpoint"], entry.get("network", "student")))
    overrides = {"norm": entry["norm"]} if entry.get("norm") else {}

    def build() -> torch.nn.Module:
        model = build_segmentor(entry.get("segmentor", "mini_r18"), decode_head={"dropout_ratio": 0.0},
                                **overrides)
        return load_into(model, state, str(entry["checkpoint"]))
    return build


def _run(build, method: str, samples: list[dict], batch_size: int, cfg: Mapping[str, Any],
         fisher: list[torch.Tensor]) -> dict:
    from experiments.models import normalize, segment

    options = dict(cfg["method_options"].get(method) or {})
    if method in ("tent", "eata", "sar") and cfg.get("lr_multiplier", 1.0) != 1.0:
        from experiments.tta.common import scaled_lr
        from experiments.tta.tent import BASE_LR
        options["lr"] = scaled_lr(BASE_LR, batch_size) * cfg["lr_multiplier"]
    adapter = build_adapter(method, build(), cfg["num_classes"], segment, batch_size=batch_size,
                            fisher_batches=fisher if method == "eata" else None, **options)
    result = run_stream(adapter, samples, batch_size, cfg["num_classes"], normalize)
    result.pop("confusion")
    result["recoveries"] = getattr(adapter, "recoveries", 0)
    result["kept_fraction"] = adapter.kept / adapter.seen if getattr(adapter, "seen", 0) else None
    return result


def run_experiment(cfg: Mapping[str, Any]) -> dict:
    """Run the whole grid described by ``cfg`` (configs/adapt.yaml) and write the report."""
    import warnings

    from experiments.models import normalize
    from experiments.tta.report import write_report

    cfg = _plain(cfg)
    torch.set_num_threads(int(cfg.get("threads") or torch.get_num_threads()))
    out_dir = Path(cfg["out_dir"])
    root = ensure_data(cfg["data_root"], cfg["image_size"])
    source = load_samples("gta", root / "gta", "all", cfg["source_images"])
    fisher_images = source[-cfg["fisher_images"]:]
    fisher = [normalize(np.stack([s["image"] for s in fisher_images]))]
    domains = {d["name"]: load_samples(d["dataset"], root / d["dataset"], d["split"], cfg["images_per_domain"],
                                       **d.get("options", {})) for d in cfg["domains"]}
    records, started = [], time.perf_counter()
    for seed in cfg["seeds"]:
        models = {}
        for norm in cfg["norms"]:
            run_dir = Path(cfg["runs_root"]) / "tta" / f"source_{norm}_s{seed}"
            weights = train_source(norm, seed, source[:-cfg["fisher_images"]], cfg["source_iterations"],
                                   cfg["source_batch_size"], cfg["source_lr"], run_dir)
            models[f"source_{norm}"] = (norm, _model_factory({"checkpoint": weights, "plain": True, "norm": norm}))
        for entry in cfg.get("extra_models") or []:
            models[entry["name"]] = (entry.get("norm") or "bn", _model_factory(entry))
        for model_name, (norm, build) in models.items():
            for setting in cfg["settings"]:
                streams = build_streams(setting, domains, cfg["batch_size"], seed, float(cfg["imbalance_ratio"]))
                for method in cfg["methods"]:
                    for stream_name, samples, batch_size in streams:
                        with warnings.catch_warnings(record=True) as caught:
                            warnings.simplefilter("always")
                            result = _run(build, method, samples, batch_size, cfg, fisher)
                        records.append(dict(result, seed=seed, model=model_name, norm=norm, setting=setting,
                                            method=method, stream=stream_name, batch_size=batch_size,
                                            warnings=sorted({str(w.message) for w in caught})))
                        print(f"[{time.perf_counter() - started:6.0f}s] s{seed} {model_name} {setting:9s} "
                              f"{method:8s} {stream_name:10s} mIoU {result['metric']:5.1f}", flush=True)
            sweep_stream = mixed({n: [dict(s, domain=n) for s in v] for n, v in domains.items()}, seed)
            for batch_size in cfg["sweep_batch_sizes"]:
                for method in cfg["methods"]:
                    result = _run(build, method, sweep_stream, batch_size, cfg, fisher)
                    records.append(dict(result, seed=seed, model=model_name, norm=norm, setting="sweep",
                                        method=method, stream="mixed", batch_size=batch_size, warnings=[]))
    out_dir.mkdir(parents=True, exist_ok=True)
    runs.write_json_atomic(out_dir / "records.json", records)
    outputs = write_report(records, cfg, out_dir)
    print(f"TTA experiment finished in {time.perf_counter() - started:.0f}s; outputs in {out_dir}")
    return {"records": records, "outputs": outputs}
