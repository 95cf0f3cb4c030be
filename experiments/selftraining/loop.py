"""Single-target self-training (DAFormer recipe) and its baselines: the loop behind
``python -m experiments.train``.

One run = one model: source -> target(s), segmentor, recipe, initialisation, seed. The run
folder ``<runs_root>/train/<name>`` (``experiments.infra.names.train_run``) holds
``checkpoints/latest.pth`` while training, then ``model.pth`` (DAFormer layout: ``model.*``
student, ``ema_model.*`` teacher), ``initial.safetensors`` (the student before its first step,
theta_0 of the task-vector merges), ``metrics.json``, ``log.jsonl`` and a manifest naming the
network meant for merging. ``run_state`` decides whether a run is finished (the one place
that decision is made): a finished run is skipped, an interrupted one resumes from its
latest checkpoint bit-for-bit.

``schedule.snapshot_iters`` asks for ``snapshots/iter_<k>.pth`` (model.pth's layout) when
iteration k completes, for studies across training (Git Re-Basin figure). Snapshots are not
part of the run name: training is a pure function of (seed, iteration), so a run asked for
snapshots it lacks (finished earlier without them) is trained again from iteration 0, writing
them on the way and the same model.pth at the end.

Recipes (``recipe.mode``): ``selftrain`` (DAFormer: EMA teacher, confidence-weighted
pseudo-labels, ClassMix, rare class sampling, ImageNet feature distance), ``source_only``
and ``oracle`` (supervised on target labels). Several targets = data combination.
"""

from __future__ import annotations

import copy
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_file

from experiments.selftraining.batches import BatchMaker
from experiments.data.domains import is_stand_in, missing_data_error
from experiments.infra import names
from experiments.infra.logs import TrainingLogger, quiet_libraries
from experiments.infra.runs import atomic_path, claimed, config_conflicts, finish_run, is_complete, stage
from experiments.infra.threads import usable_threads
from experiments.selftraining import checkpoints as ckpt
from experiments.selftraining import recipe as st
from experiments.selftraining.pretraining import backbone_weights, prepare_backbone

log = logging.getLogger(__name__)

# The student's weights before its first step: theta_0 of task arithmetic, TIES, DARE and the
# other task-vector merges (``fusion.base_network: initial``).
INITIAL_WEIGHTS = "initial.safetensors"

def run_dir_for(cfg: DictConfig) -> Path:
    """The run folder of a resolved ``configs/train.yaml``."""
    return names.run_path(cfg.runs_root, "train", names.train_run_of(cfg))


@dataclass(frozen=True)
class RunState:
    """Where a training run lives and what is left to do: the one skip/resume decision."""

    run_dir: Path
    complete: bool               # model.pth written, manifest complete
    missing_snapshots: list[int]  # requested snapshots not on disk

    @property
    def done(self) -> bool:
        return self.complete and not self.missing_snapshots


def run_state(cfg: DictConfig) -> RunState:
    run_dir = run_dir_for(cfg)
    complete = is_complete(run_dir) and (run_dir / "model.pth").exists()
    return RunState(run_dir, complete, missing_snapshots(cfg, run_dir))


def init_seed(cfg: DictConfig) -> int:
    """Seed of the random initialisation: per training seed, or also per target (different inits)."""
    if cfg.init.seed_mode == "per_target":
        return ckpt.iteration_seed(int(cfg.seed), zlib.crc32("+".join(cfg.target.names).encode()), 7)
    return int(cfg.seed)


def build_networks(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """Student, EMA teacher (or None) and the frozen encoder for the feature distance."""
    from experiments.models.segmentors import build_segmentor

    overrides = OmegaConf.to_container(cfg.segmentor.overrides)
    weights = backbone_weights(cfg)
    if weights is not None and not weights.is_file():
        raise FileNotFoundError(f"pretrained backbone {weights} not found (init={cfg.init.name}, segmentor="
                                f"{cfg.segmentor.name}); prepare_backbone(cfg) makes the miniature's, the "
                                "paper's ImageNet weights are the user's (segmentor.pretrained)")
    torch.manual_seed(init_seed(cfg))
    student = build_segmentor(cfg.segmentor.name, pretrained=weights, **overrides)
    student.to(device)
    recipe = cfg.recipe
    teacher = None
    if recipe.mode == "selftrain" and recipe.ema.enabled and cfg.init.teacher:
        teacher = copy.deepcopy(student)  # alpha_0 = 0: the teacher starts as the student
        for p in teacher.parameters():
            p.requires_grad_(False)
    imagenet = None
    if recipe.mode != "oracle" and recipe.feature_distance.enabled and weights is not None:
        imagenet = build_segmentor(cfg.segmentor.name, pretrained=weights, **overrides).backbone
        imagenet.to(device)
        imagenet.eval()
        for p in imagenet.parameters():
            p.requires_grad_(False)
    return {"student": student, "teacher": teacher, "imagenet": imagenet, "pretrained": weights}


def build_optimizer(cfg: DictConfig, model: torch.nn.Module):
    s = cfg.schedule
    groups = st.param_groups(model, s.lr, s.weight_decay, s.head_lr_mult)
    optimizer = torch.optim.AdamW(groups, lr=s.lr, betas=tuple(s.betas), weight_decay=s.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: st.lr_factor(it, s.max_iters, s.warmup_iters, s.warmup_ratio, s.power))
    return optimizer, scheduler


def _logits(model: torch.nn.Module, x: torch.Tensor, feats=None) -> torch.Tensor:
    logits = model.decode_head(feats if feats is not None else model.extract_feat(x))
    return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)


def _is_hrda(model: torch.nn.Module) -> bool:
    return hasattr(model, "train_outputs")


def _supervised(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None,
                crop_generator: torch.Generator) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The segmentation loss of one batch and the encoder features the feature distance uses.

    DAFormer: cross-entropy of the upsampled logits, the features of the whole input. HRDA:
    the fused multi-resolution prediction and the detail crop's (weighted 1 - lambda_d and
    lambda_d, HRDA Sec. 3.3), the low-resolution context features (``feature_scale``)."""
    if _is_hrda(model):
        from experiments.models.hrda import hrda_loss

        outputs = model.train_outputs(x, crop_generator)
        loss = hrda_loss(outputs, labels, weight, st.weighted_cross_entropy, model.hr_loss_weight)
        return loss, outputs["features"]
    feats = model.extract_feat(x)
    return st.weighted_cross_entropy(_logits(model, x, feats), labels, weight), feats


def predict_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits at the input's resolution: DAFormer whole-image, HRDA fused with slide detail crops."""
    if _is_hrda(model):
        logits = model.inference_logits(x)
        return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)
    return _logits(model, x)


def _imagenet_input(student: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The frozen ImageNet encoder sees what the student's distance features saw (HRDA: LR)."""
    scale = float(getattr(student, "feature_scale", 1.0))
    if scale == 1.0:
        return x
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


def train_step(cfg: DictConfig, nets: dict, batch: dict, generator: torch.Generator,
               crop_generator: torch.Generator | None = None) -> dict[str, float]:
    """One iteration of the recipe; gradients are accumulated, the optimizer step is the caller's.

    ``generator`` draws the mixing and augmentation, ``crop_generator`` HRDA's detail crops
    (default: a generator seeded from ``generator``'s seed; the loop passes its own stream).
    """
    recipe, student = cfg.recipe, nets["student"]
    crop_generator = crop_generator or torch.Generator().manual_seed(generator.initial_seed() + 1)
    student.train()
    out: dict[str, float] = {}
    if recipe.mode == "oracle":
        loss, _ = _supervised(student, st.to_model_input(batch["target"]), batch["target_label"], None,
                              crop_generator)
        loss.backward()
        return {"loss": loss.item(), "loss_target": loss.item()}
    src = st.to_model_input(batch["source"])
    loss, feats = _supervised(student, src, batch["source_label"], None, crop_generator)
    out["loss_source"] = loss.item()
    if nets["imagenet"] is not None:
        with torch.no_grad():
            reference = nets["imagenet"](_imagenet_input(student, src))[-1]
        fd = st.feature_distance(feats[-1], reference, batch["source_label"], recipe.feature_distance.classes,
                                 recipe.feature_distance.scale_min_ratio)
        loss = loss + recipe.feature_distance.weight * fd
        out["loss_feature_distance"] = fd.item()
    loss.backward()
    total = loss.item()
    if recipe.mode == "selftrain":
        # Without an EMA teacher (init=no_ema) the student labels its own target batch; its
        # norm layers then also see target batch statistics, as the teacher's would.
        teacher = nets["teacher"] or student
        st.set_teacher_mode(teacher)
        with torch.no_grad():
            t_logits = predict_logits(teacher, st.to_model_input(batch["target"]))
        student.train()
        rows = batch["target"].shape[2]
        margins = recipe.pseudo_label.margins
        margins = st.scaled_margins(rows) if margins == "auto" else (tuple(margins) if margins else None)
        plabel, pweight, confidence = st.pseudo_labels(t_logits, recipe.pseudo_label.threshold, margins)
        if "target_valid" in batch:  # HRDA: margins masked on the full image before cropping
            pweight = pweight * batch["target_valid"]
        image, label, weight = batch["target"], plabel, pweight
        if recipe.mix.enabled:
            mask = st.class_mix_masks(batch["source_label"], generator)
            image = st.class_mix(mask, batch["source"], batch["target"])
            label = st.class_mix(mask, batch["source_label"].long(), plabel)
            weight = st.class_mix(mask, torch.ones_like(pweight), pweight)
        image = st.color_jitter(image, generator, recipe.color_jitter.strength, recipe.color_jitter.probability)
        image = st.gaussian_blur(image, generator, recipe.blur.probability, tuple(recipe.blur.sigma))
        mix_loss, _ = _supervised(student, st.to_model_input(image), label, weight, crop_generator)
        mix_loss.backward()
        out.update(loss_target=mix_loss.item(), confidence=confidence)
        total += mix_loss.item()
    out["loss"] = total
    return out


def validate(cfg: DictConfig, model: torch.nn.Module, val_sets: dict) -> dict[str, float]:
    """Mean IoU (percent) of ``model`` on the first ``schedule.val_images`` validation images of each
    target under the run's test protocol (``cfg.test``): a progress signal logged during
    training; the scored evaluation is ``experiments.inference.evaluation.evaluate``."""
    from analysis.metrics import mean_iou
    from experiments.inference.evaluation import Protocol, evaluate_model

    protocol = Protocol.of(OmegaConf.to_container(cfg.test, resolve=True) if cfg.get("test") else None)
    scores = {}
    for name, dataset in val_sets.items():
        confusion = evaluate_model(model, dataset, batch_size=cfg.schedule.val_batch_size, progress=False,
                                   **protocol.keywords())
        scores[f"val_miou_{name}"] = 100.0 * float(mean_iou(confusion))
    model.train()
    return scores


def _state(nets: dict, optimizer, scheduler, iteration: int, cfg: DictConfig) -> dict[str, Any]:
    return {"iteration": iteration, "model": nets["student"].state_dict(),
            "teacher": nets["teacher"].state_dict() if nets["teacher"] is not None else None,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "rng": ckpt.rng_state(), "config": OmegaConf.to_container(cfg, resolve=True)}


def save_model(path: Path, cfg: DictConfig, nets: dict, iteration: int) -> None:
    """``model.pth`` in DAFormer's layout, with the network meant for merging named in ``meta``."""
    state = {f"model.{k}": v for k, v in nets["student"].state_dict().items()}
    if nets["teacher"] is not None:
        state.update({f"ema_model.{k}": v for k, v in nets["teacher"].state_dict().items()})
    meta = {"config": OmegaConf.to_container(cfg, resolve=True), "segmentor": cfg.segmentor.name,
            "saved_network": saved_network(cfg, nets), "iteration": iteration}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, "meta": meta}, tmp)


def saved_network(cfg: DictConfig, nets: dict) -> str:
    if cfg.save_network not in ("student", "teacher"):
        raise ValueError(f"save_network must be 'student' or 'teacher', got {cfg.save_network!r}")
    return cfg.save_network if nets["teacher"] is not None else "student"


def snapshot_path(run_dir: Path, iteration: int) -> Path:
    return Path(run_dir) / "snapshots" / f"iter_{int(iteration)}.pth"


def missing_snapshots(cfg: DictConfig, run_dir: Path) -> list[int]:
    """Iterations of ``schedule.snapshot_iters`` whose snapshot file does not exist yet."""
    wanted = list(cfg.schedule.get("snapshot_iters") or [])
    bad = [k for k in wanted if not isinstance(k, int) or not 1 <= k <= int(cfg.schedule.max_iters)]
    if bad:
        raise ValueError(f"schedule.snapshot_iters: {bad} are not iterations in 1..{cfg.schedule.max_iters}")
    return sorted(k for k in set(wanted) if not snapshot_path(run_dir, k).exists())


def dataset_roots(cfg: DictConfig) -> list[Path]:
    """The source and target dataset folders a training run reads."""
    roots = dict(cfg.target.get("roots") or {})
    return [Path(cfg.source.root), *(Path(roots.get(n) or f"{cfg.data_root}/{n}") for n in cfg.target.names)]


def train(cfg: DictConfig) -> Path:
    """Train (or resume, or skip when finished) the run ``cfg`` describes; return its folder.

    The run folder is held for the whole call (``runs.claimed``): a second process asked
    for the same run while this one works is refused with ``runs.RunInUse``. A run that
    raises is marked ``failed`` in its manifest (and resumes from its checkpoint next time).
    """
    run_dir = run_dir_for(cfg)
    with claimed(run_dir):
        return _train(cfg, run_state(cfg))


def _train(cfg: DictConfig, state: RunState) -> Path:
    run_dir, missing = state.run_dir, state.missing_snapshots
    conflicts = config_conflicts(cfg, run_dir)
    if conflicts:
        raise ValueError(f"{run_dir} was started with another config; delete it or use another "
                         f"runs_root. Differences: " + "; ".join(conflicts[:8]))
    if state.done:
        log.info("%s is complete; skipping", run_dir)
        return run_dir
    roots = dataset_roots(cfg)
    if cfg.scale.get("generate") and Path(cfg.data_root) == Path(cfg.scale.data_root) and \
            not all(root.is_dir() for root in roots):
        from experiments.data.miniature import generate_scale

        generate_scale(cfg.scale)  # the default data root of a stand-in scale: made on demand
    for root in roots:
        if not root.is_dir():
            raise missing_data_error(root)
    prepare_backbone(cfg)
    quiet_libraries()
    res = cfg.resources
    torch.set_num_threads(usable_threads(res.threads))
    device = torch.device(res.device if res.device != "cuda" or torch.cuda.is_available() else "cpu")
    ckpt.seed_everything(int(cfg.seed))
    nets = build_networks(cfg, device)
    # The data is checked before the run folder is touched: layouts, image/label pairs, every
    # source label's values (counted for rare class sampling), the first label of each split.
    batches = BatchMaker(cfg, device)
    batches.check_labels()
    inputs = {"pretrained_backbone": nets["pretrained"]} if nets["pretrained"] else {}
    with stage(run_dir, "train", cfg, inputs=inputs, stand_in=is_stand_in(dataset_roots(cfg))):
        return _run(cfg, run_dir, nets, batches, missing)


def _run(cfg: DictConfig, run_dir: Path, nets: dict, batches: BatchMaker, missing: list[int]) -> Path:
    optimizer, scheduler = build_optimizer(cfg, nets["student"])
    start = 0
    state = ckpt.load_checkpoint(run_dir / "checkpoints")
    if state is not None and missing and missing[0] <= int(state["iteration"]):
        # Only the latest state is kept: an earlier snapshot needs the run replayed from 0.
        log.warning("%s: snapshots %s requested after iteration %d; training again from 0", run_dir,
                    missing, int(state["iteration"]))
        state = None
    if state is not None:
        nets["student"].load_state_dict(state["model"])
        if nets["teacher"] is not None:
            nets["teacher"].load_state_dict(state["teacher"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(state["rng"])
        start = int(state["iteration"])
        log.info("resuming %s at iteration %d (%s)", run_dir.name, start, state["loaded_from"])
    initial = run_dir / INITIAL_WEIGHTS
    if start == 0 and not initial.exists():
        # theta_0 of the task-vector merges: the student before its first step (the pretrained
        # backbone and the seeded head), written once, atomically.
        with atomic_path(initial) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in nets["student"].state_dict().items()}, str(tmp))
    stream = batches.batches(start, int(cfg.schedule.max_iters))
    s = cfg.schedule
    logger = TrainingLogger(run_dir, run_dir.name, OmegaConf.to_container(cfg, resolve=True),
                            wandb_mode=cfg.logger.wandb_mode, project=cfg.logger.project, total=s.max_iters,
                            start=start, progress=cfg.logger.progress)
    evaluated = saved_network(cfg, nets)
    try:
        for it in range(start, s.max_iters):
            # Every iteration draws from its own seeds: resuming replays nothing (checkpointing.py).
            torch.manual_seed(ckpt.iteration_seed(int(cfg.seed), it, 0))
            if nets["teacher"] is not None and it > 0:
                st.ema_update(nets["teacher"], nets["student"], it, cfg.recipe.ema.alpha)
            optimizer.zero_grad(set_to_none=True)
            batch = next(stream)
            metrics = train_step(cfg, nets, batch, ckpt.iteration_generator(int(cfg.seed), it, 2),
                                 ckpt.iteration_generator(int(cfg.seed), it, 3))
            optimizer.step()
            scheduler.step()
            logger.advance()
            done = it + 1
            if done % s.log_interval == 0 or done == s.max_iters:
                logger.log(done, dict(metrics, lr=min(scheduler.get_last_lr())))
            if s.val_interval and done % s.val_interval == 0 and done < s.max_iters:
                logger.log(done, validate(cfg, nets[evaluated], batches.val_sets))
            if done in missing:
                save_model(snapshot_path(run_dir, done), cfg, nets, done)
            if done % s.checkpoint_interval == 0 or done == s.max_iters:
                ckpt.save_checkpoint(run_dir / "checkpoints", _state(nets, optimizer, scheduler, done, cfg))
        scores = validate(cfg, nets[evaluated], batches.val_sets) if batches.val_sets else {}
        logger.log(s.max_iters, scores)
    finally:
        logger.close()
    save_model(run_dir / "model.pth", cfg, nets, s.max_iters)
    overrides = OmegaConf.to_container(cfg.segmentor.overrides)
    outputs = {"model": run_dir / "model.pth"}
    if initial.exists():
        outputs["initial"] = initial
    finish_run(run_dir, outputs=outputs,
               metrics={**scores, "network": evaluated, "iterations": s.max_iters},
               model={"segmentor": cfg.segmentor.name, "overrides": overrides, "network": evaluated},
               targets=list(cfg.target.names))
    return run_dir
