"""One domain's statistic for RegMean or Fisher merging: ``python -m experiments.statistics``.

A thin Hydra entry point (``configs/statistics.yaml``) over
``experiments.pipeline.statistics.run_statistic``: the model's own domain's unlabelled images
in, one safetensors file out (its size in the run's manifest), to hand to the merge as
``fusion.grams=[...]`` or ``fusion.fishers=[...]``.

    python -m experiments.statistics model=runs/train/<run> domain=cityscapes kind=regmean
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from experiments.infra import names  # noqa: F401  (registers the ${statistic_run:...} resolver)
from experiments.pipeline.statistics import run_statistic, statistic_file


@hydra.main(version_base="1.3", config_path="../configs", config_name="statistics")
def main(cfg: DictConfig) -> None:
    print(statistic_file(run_statistic(cfg)))


if __name__ == "__main__":
    main()
