"""The paper's studies end to end: ``python -m experiments.reproduce study=table1``.

A thin Hydra entry point (``configs/reproduce.yaml``; studies in ``configs/study/``, the
data and sizes in ``configs/scale/``) over ``experiments.pipeline.studies.run_study``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from experiments.infra import names  # noqa: F401  (registers the ${run:...} resolver)
from experiments.pipeline.studies import run_study

log = logging.getLogger(__name__)


@hydra.main(config_path="../configs", config_name="reproduce", version_base="1.3")
def main(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO)
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    if cfg.logger.group is None and hydra_cfg.mode == RunMode.MULTIRUN:
        with open_dict(cfg):  # the runs of one sweep share a wandb group
            cfg.logger.group = Path(hydra_cfg.sweep.dir).name
    log.info("\n%s", OmegaConf.to_yaml(cfg))
    result = run_study(cfg)
    for path in result["files"]:
        print(path)


if __name__ == "__main__":
    main()
