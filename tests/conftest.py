import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mini_data(tmp_path_factory) -> Path:
    """The smoke scale's miniature (sizes and counts of configs/scale/smoke.yaml), generated
    once per test session and shared read-only: a test that changes data copies it first."""
    from omegaconf import OmegaConf

    from experiments.data.miniature import generate

    settings = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "scale" / "smoke.yaml").generate)
    return generate(tmp_path_factory.mktemp("mini_data") / "mini", **settings, preview=False)
