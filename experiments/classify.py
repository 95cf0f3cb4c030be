"""Hydra entry point of the classification check: ``python -m experiments.classify``.

The work is done by :func:`experiments.classification.run_classification`, which tests
call directly with a plain dict.
"""

from __future__ import annotations

import os

import hydra
from omegaconf import DictConfig, OmegaConf

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


@hydra.main(version_base=None, config_path="../configs", config_name="classify")
def main(cfg: DictConfig) -> None:
    from experiments.classification import run_classification

    metrics = run_classification(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))
    for panel, values in metrics["summary"].items():
        print(f"{panel:>18}: A {values['accuracy_a']['mean']:.1f}  B {values['accuracy_b']['mean']:.1f}  "
              f"merged {values['accuracy_merged']['mean']:.1f}  barrier {values['barrier']['mean']:.3f}")


if __name__ == "__main__":
    main()
