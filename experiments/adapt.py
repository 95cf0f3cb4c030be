"""``python -m experiments.adapt``: test-time adaptation of source (and optionally STDA or
merged) models in wild test streams; configs/adapt.yaml. A thin Hydra wrapper over
``experiments.tta.experiment.run_experiment``."""

from __future__ import annotations

from pathlib import Path


def main() -> None:
    import hydra

    from experiments.tta.experiment import run_experiment

    config_dir = str(Path(__file__).resolve().parents[1] / "configs")

    @hydra.main(version_base="1.3", config_path=config_dir, config_name="adapt")
    def _main(cfg) -> None:
        run_experiment(cfg)

    _main()


if __name__ == "__main__":
    main()
