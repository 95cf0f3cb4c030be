"""Git Re-Basin against midpoint merging across training (paper Fig. "Git Re-Basin vs mid-point").

The paper merges two single-target models by plain averaging and reports that Git
Re-Basin weight matching (Ainsworth et al., ICLR 2023, Sec. 3.2) finds (near-)identity
permutations between them, i.e. degenerates to the midpoint merge, because both models
are fine-tuned from one pretrained backbone (docs/method.md). This study tests that
at several points of training: for each snapshot iteration k of models A and B
(``schedule.snapshot_iters``, saved by ``experiments.train``) it

1. merges A and B at the midpoint (``fusion.merge_linear``, pooled BatchNorm statistics);
2. aligns B to A by weight matching on the backbone (stage outputs unpermuted, so the
   decode head is untouched) and merges A with the permuted B the same way;
3. evaluates A, B, permuted B (a check: same function as B) and both merges on the
   study's domains in one data pass, and records the fraction of non-identity
   permutations and the L2 distance of the backbone parameters before/after matching.

Results are cached per seed in ``runs/rebasin/<study>_s<seed>/`` (``scores.csv``,
``matching.csv``); ``analysis.figures.rebasin_figure`` draws H against the training iteration.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Mapping

import torch
from omegaconf import DictConfig, OmegaConf

import fusion
from analysis.io import write_csv
from analysis.metrics import harmonic_mean, mean_iou
from experiments.inference import sources
from experiments.inference.interpolation import evaluate_path
from experiments.infra import names
from experiments.infra.runs import finish_run, is_complete, stage
from experiments.pipeline.stages import Evaluator
from experiments.selftraining.loop import snapshot_path

log = logging.getLogger(__name__)

METHODS = ("model_a", "model_b", "model_b_permuted", "midpoint", "rebasin")
_STATISTICS = (".running_mean", ".running_var", ".num_batches_tracked")


def snapshot_iterations(run_a: Path, run_b: Path) -> list[int]:
    """Iterations both runs were asked to snapshot (their resolved training configs)."""
    found = []
    for run in (run_a, run_b):
        config = Path(run) / "config.yaml"
        if not config.exists():
            raise FileNotFoundError(f"{config} is missing: is {run} a training run?")
        found.append(set(OmegaConf.load(config).schedule.get("snapshot_iters") or []))
    common = sorted(found[0] & found[1])
    if not common:
        raise ValueError(f"rebasin: {run_a} and {run_b} share no schedule.snapshot_iters; add "
                         "'schedule.snapshot_iters=[...]' to both models' overrides in the study config")
    return common


def backbone_permutation_spec(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> fusion.PermutationSpec:
    """Weight-matching spec for a segmentor's backbone (ResNet-V1c or EfficientNet-Lite0); every
    other entry (the decode head, the backbone's returned stage outputs) unpermuted."""
    backbone = model.backbone
    kind = type(backbone).__name__
    if kind == "EfficientNetLite0":
        spec = fusion.efficientnet_lite_permutation_spec(prefix="backbone.")
    elif kind in ("ResNetV1c", "ResNetV1d", "ResNet") and getattr(backbone, "deep_stem", 0) == 1:
        layer1_downsample = "backbone.layer1.0.downsample.0.weight" in state
        spec = fusion.resnet_v1c_permutation_spec(backbone.depth, layer1_downsample=layer1_downsample,
                                                  prefix="backbone.")
    else:
        raise ValueError(f"rebasin: weight matching is implemented for ResNet-V1c and EfficientNet-Lite0 "
                         f"backbones, not {kind}")
    return spec.with_unpermuted({k: v for k, v in state.items() if k not in spec.axes_to_perm})


def parameter_distance(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor],
                       prefix: str = "backbone.") -> float:
    """L2 norm of the difference of the float parameters under ``prefix`` (statistics excluded)."""
    total = 0.0
    for key, value in a.items():
        if key.startswith(prefix) and value.is_floating_point() and not key.endswith(_STATISTICS):
            total += float(((value.double() - b[key].double()) ** 2).sum())
    return math.sqrt(total)


def compare_at(evaluator: Evaluator, source: sources.ModelSource, a: dict, b: dict, seed: int
               ) -> tuple[dict, dict]:
    """Scores (method -> domain -> confusion) and matching statistics for one pair of weights."""
    model = source.build(a)
    spec = backbone_permutation_spec(model, a)
    started = time.perf_counter()
    perm = fusion.weight_matching(spec, a, b, seed=seed)
    seconds = time.perf_counter() - started
    b_permuted = fusion.apply_permutation(spec, perm, b)
    points = {"model_a": a, "model_b": b, "model_b_permuted": b_permuted,
              "midpoint": fusion.merge_linear([a, b], buffers="pooled"),
              "rebasin": fusion.merge_linear([a, b_permuted], buffers="pooled")}
    confusions: dict[str, dict] = {m: {} for m in METHODS}
    for domain in evaluator.domains:  # one pass over each domain's images for all five
        stacked = evaluate_path(model, [points[m] for m in METHODS], evaluator.dataset(domain),
                                batch_size=evaluator.batch_size)
        for method, confusion in zip(METHODS, stacked):
            confusions[method][domain] = confusion
    matching = {"nonidentity_fraction": fusion.permutation_fraction_nonidentity(perm),
                "l2_before": parameter_distance(a, b), "l2_after": parameter_distance(a, b_permuted),
                "permutations": len(perm), "units": sum(p.numel() for p in perm.values()),
                "matching_seconds": seconds}
    return confusions, matching


def rebasin_comparison(cfg: DictConfig, evaluator: Evaluator, spec: Mapping, seed: int,
                       trained: Mapping[str, Path]) -> Path:
    """Midpoint vs re-basin merge of ``spec.a`` and ``spec.b`` at each common snapshot; cached per seed."""
    out = rebasin_run_dir(cfg, seed)
    if is_complete(out):
        return out
    for role in ("a", "b"):
        if spec.get(role) not in trained:
            raise ValueError(f"study.rebasin.{role} = {spec.get(role)!r} is not a model of the study "
                             f"({sorted(trained)})")
    run_a, run_b = Path(trained[spec["a"]]), Path(trained[spec["b"]])
    info_a, info_b = sources.model_info(run_a), sources.model_info(run_b)
    if info_a != info_b:
        raise ValueError(f"rebasin: {run_a} and {run_b} differ in model or saved network: {info_a} vs {info_b}")
    iterations = snapshot_iterations(run_a, run_b)
    files = {f"{role}_iter_{k}": snapshot_path(run, k) for k in iterations
             for role, run in (("a", run_a), ("b", run_b))}
    absent = [str(p) for p in files.values() if not p.exists()]
    if absent:
        raise FileNotFoundError(f"rebasin: snapshots missing: {absent[:4]}; train the runs with "
                                "schedule.snapshot_iters (experiments.train writes them)")
    config = {"a": str(run_a), "b": str(run_b), "iterations": iterations, "seed": seed, "domains": evaluator.domains}
    with stage(out, "rebasin", config, files, stand_in=evaluator.stand_in):
        _compare_snapshots(evaluator, out, run_a, files, iterations, info_a, info_b, seed)
    return out


def _compare_snapshots(evaluator: Evaluator, out: Path, run_a: Path, files: dict, iterations: list[int],
                       info_a: dict, info_b: dict, seed: int) -> None:
    source = sources.from_run(run_a)
    scores, matching = [], []
    for k in iterations:
        a = fusion.load_checkpoint(files[f"a_iter_{k}"], network=info_a.get("network", "student"))
        b = fusion.load_checkpoint(files[f"b_iter_{k}"], network=info_b.get("network", "student"))
        confusions, stats = compare_at(evaluator, source, a, b, seed)
        for method in METHODS:
            mious = {d: 100.0 * mean_iou(c) for d, c in confusions[method].items()}
            mious["H"] = harmonic_mean(list(mious.values()))
            scores += [[k, seed, method, domain, f"{value:.4f}"] for domain, value in mious.items()]
        matching.append([k, seed, f"{stats['nonidentity_fraction']:.6f}", f"{stats['l2_before']:.6f}",
                         f"{stats['l2_after']:.6f}", stats["permutations"], stats["units"],
                         f"{stats['matching_seconds']:.3f}"])
        log.info("rebasin %s iteration %d: non-identity fraction %.4f", out.name, k, stats["nonidentity_fraction"])
    write_csv(out / "scores.csv", ["iteration", "seed", "method", "domain", "miou"], scores)
    write_csv(out / "matching.csv", ["iteration", "seed", "nonidentity_fraction", "l2_before", "l2_after",
                                      "permutations", "units", "matching_seconds"], matching)
    finish_run(out, {"scores": out / "scores.csv", "matching": out / "matching.csv"},
               metrics={"nonidentity_fraction": {str(r[0]): float(r[2]) for r in matching}})


def rebasin_run_dir(cfg: DictConfig, seed: int) -> Path:
    return names.run_path(cfg.runs_root, "rebasin", names.rebasin_run(cfg.study.name, seed))
