"""Generate the miniature stand-in benchmark: ``python -m experiments.miniature [scale=smoke]``.

Writes ``scale.data_root`` with the sizes and counts of ``scale.generate`` (the one home of
both: ``configs/scale/*.yaml``), in the real datasets' folder layouts. Already generated
datasets with the same settings are kept; ``force=true`` replaces them.
"""

from __future__ import annotations

import os
import time

import hydra
from omegaconf import DictConfig

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from experiments.data.miniature import generate_scale  # noqa: E402


@hydra.main(config_path="../configs", config_name="miniature", version_base="1.3")
def main(cfg: DictConfig) -> None:
    start = time.perf_counter()
    out = generate_scale(cfg.scale, cfg.force, list(cfg.datasets) if cfg.datasets else None, cfg.workers)
    print(f"miniature benchmark at {out} ({time.perf_counter() - start:.1f} s); see {out / 'README.md'}")


if __name__ == "__main__":
    main()
