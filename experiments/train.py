"""Single-target self-training and its baselines: ``python -m experiments.train``.

A thin Hydra entry point (``configs/train.yaml``) over ``experiments.selftraining.loop.train``,
which tests and the study pipeline call directly. One paper row = one file in
``configs/experiment/`` (``experiment=smoke``).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from experiments.infra import names  # noqa: F401  (registers the ${run:...} resolver)
from experiments.selftraining.loop import train


# An absolute path: the entry point below runs this function from the importable module.
@hydra.main(config_path=str(Path(__file__).resolve().parents[1] / "configs"), config_name="train",
            version_base="1.3")
def main(cfg: DictConfig) -> None:
    print(train(cfg))


if __name__ == "__main__":
    # Run the importable module's main, not __main__'s: submitit then pickles this module's
    # functions by reference. By value (as __main__) cloudpickle fails on torch.classes.
    from experiments.train import main as importable_main

    importable_main()
