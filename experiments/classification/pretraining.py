"""A second, different pretraining of the same architecture, made here.

The paper contrasts ImageNet-supervised and DINO-self-supervised ResNet-50s: two
pretrainings from independent random starts, whose fine-tuned descendants do not merge.
Offline there is only one real pretrained EfficientNet-Lite0 (ImageNet). The second is
therefore trained here from a random start on a different real dataset, scikit-learn's
handwritten digits. It is far weaker than ImageNet or DINO pretraining; what matters for
the check is that it is a different starting point reached by training, not a copy of
the first. The checkpoint lives in its own run folder and is reused on later runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from experiments.infra import names
from experiments.infra.runs import finish_run, is_complete, stage

from .data import load_digits, to_tensors
from .models import build_classifier
from .training import Recipe, evaluate, save_state, train_classifier

CHECKPOINT = "model.pt"


def pretrain_on_digits(run_dir: str | Path, model_name: str, image_size: int, recipe: Recipe,
                       seed: int, bn_momentum: float = 0.1) -> Path:
    """Train ``model_name`` from a random start on all 1,797 digits; return its checkpoint.

    A complete run folder (same name, hence same settings) is reused as it is.
    """
    run_dir = Path(run_dir)
    checkpoint = run_dir / CHECKPOINT
    if is_complete(run_dir) and checkpoint.is_file():
        return checkpoint
    config = {"model": model_name, "image_size": image_size, "recipe": vars(recipe),
              "seed": seed, "bn_momentum": bn_momentum, "dataset": "sklearn digits (1,797 images)"}
    with stage(run_dir, "classify-pretrain-digits", config, stand_in=False):
        images, labels = to_tensors(load_digits(), image_size)
        torch.manual_seed(seed)
        model = build_classifier(model_name, 10, image_size, None, bn_momentum)
        stats = train_classifier(model, images, labels, recipe, seed)
        stats.update({f"digits_train_{k}": v for k, v in evaluate(model, images, labels).items()})
        save_state(model.state_dict(), checkpoint)
        finish_run(run_dir, outputs={"checkpoint": checkpoint}, metrics=stats)
    return checkpoint


def digits_run_name(cfg: Mapping) -> str:
    """Deterministic folder name: the settings that change the checkpoint.

    The pretraining uses the experiment's recipe (its own epoch count), so the recipe and
    the BatchNorm momentum are part of the name: a changed learning rate must not reuse a
    checkpoint made with another.
    """
    recipe = cfg["recipe"]
    tag = (f"_lr{recipe['lr']:g}_b{recipe['batch_size']}_m{recipe['momentum']:g}"
           f"_wd{recipe['weight_decay']:g}_bn{cfg['model']['bn_momentum']:g}")
    return names.digits_pretrain_run(cfg["model"]["name"], cfg["data"]["image_size"],
                                     cfg["pretraining"]["epochs"], cfg["pretraining"]["seed"]) + tag
