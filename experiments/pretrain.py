"""Pretrain a miniature segmentor's backbone on real photos: ``python -m experiments.pretrain``.

The miniature's stand-in for ImageNet pretraining (``experiments.selftraining.pretraining``);
training runs it on demand, this command runs it ahead of time, e.g.
``python -m experiments.pretrain arch=mini_mitb0 seed=1``. Settings: ``configs/pretrain/``.
"""

from __future__ import annotations


import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from experiments.infra import names  # noqa: F401  (registers the ${run:...} resolver)
from experiments.infra.threads import usable_threads
from experiments.selftraining.pretraining import ensure_pretrained


@hydra.main(config_path="../configs", config_name="pretrain", version_base="1.3")
def main(cfg: DictConfig) -> None:
    torch.set_num_threads(usable_threads(cfg.threads))
    print(ensure_pretrained(cfg.arch, cfg.seed, cfg.runs_root, dict(cfg.overrides),
                            **OmegaConf.to_container(cfg.pretrain)))


if __name__ == "__main__":
    main()
