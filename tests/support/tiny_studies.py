"""Studies at a tiny training budget, as ``python -m experiments.reproduce`` would run them."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

from experiments.pipeline.studies import run_study

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
# Two iterations of the full recipe from a two-step pretraining: runs everything, learns nothing.
TINY_TRAIN = ["schedule=smoke", "schedule.max_iters=2", "schedule.val_interval=0", "schedule.val_images=2",
              "schedule.checkpoint_interval=1", "segmentor=${scale.segmentors.main}",
              "data_root=${scale.data_root}", "logger=none", "logger.progress=false", "resources=cpu_mini",
              "pretrain.steps=2", "pretrain.batch_size=4", "pretrain.crop=32"]
ITERS = 2


def study_overrides(root: Path, data: Path, study: str, seeds: tuple[int, ...], results: str = "results") -> list[str]:
    return [f"study={study}", "scale=smoke", f"seeds=[{','.join(map(str, seeds))}]",
            f"runs_root={root / 'runs'}", f"results_dir={root / results}", f"scale.data_root={data}",
            "scale.snapshot_iters=[1,2]", "workers=1"]


def run_tiny_study(root: Path, data: Path, study: str, seeds: tuple[int, ...] = (0,), extra: list[str] = ()) -> dict:
    """run_study with the tiny training budget, in ``root`` (runs/, results/)."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("reproduce", overrides=[*study_overrides(root, data, study, seeds), *extra])
        cfg.scale.train_overrides = TINY_TRAIN
        return run_study(cfg)
