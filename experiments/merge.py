"""Merge trained models without data: ``python -m experiments.merge``.

A thin Hydra entry point (``configs/merge.yaml``; the method is the ``fusion`` group) over
``experiments.pipeline.merging.run_merge``, which studies and tests call directly.

    python -m experiments.merge members=[runs/train/a,runs/train/b] name=cs_idd
    python -m experiments.merge fusion=encoder_only members=[...] name=cs_idd_enc
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from experiments.infra import names  # noqa: F401  (registers the ${run:...} resolver)
from experiments.pipeline.merging import run_merge


@hydra.main(version_base="1.3", config_path="../configs", config_name="merge")
def main(cfg: DictConfig) -> None:
    print(run_merge(cfg))


if __name__ == "__main__":
    main()
