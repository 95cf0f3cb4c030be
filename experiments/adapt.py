"""Test-time adaptation in wild test streams: ``python -m experiments.adapt``.

A thin Hydra entry point (``configs/adapt.yaml``) over
``experiments.tta.experiment.run_experiment``: source models per normalisation, and the
study pipeline's STDA and merged models, with BN-adapt, Tent, EATA and SAR.
"""

from __future__ import annotations

from pathlib import Path

import hydra

from experiments.infra import names  # noqa: F401  (registers the ${run:...} resolver used by adapt.yaml)
from experiments.tta.experiment import run_experiment


@hydra.main(version_base="1.3", config_path=str(Path(__file__).resolve().parents[1] / "configs"),
            config_name="adapt")
def main(cfg) -> None:
    run_experiment(cfg)


if __name__ == "__main__":
    main()
