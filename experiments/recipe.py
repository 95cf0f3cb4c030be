"""Print the resolved STDA recipe of a paper row: ``python -m experiments.recipe <row>``.

A row is one file ``configs/experiment/paper_<row>.yaml`` transcribing the authors' HRDA
config of that row (``--list`` lists them). The JSON shows what a training run of the row
will do, field by field in the authors' terms, so it can be checked against their config:
resizes as mmseg ``[W, H]`` img_scales, crops ``[H, W]``, margins ``[top, bottom, left, right]``.

    python -m experiments.recipe gta2cs_r101
    python -m experiments.recipe --list
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PREFIX = "paper_"


def rows() -> list[str]:
    return sorted(p.stem[len(PREFIX):] for p in (CONFIGS / "experiment").glob(f"{PREFIX}*.yaml"))


def compose_row(row: str, overrides: list[str] = ()):
    """The training config of ``row`` (``configs/train.yaml`` with ``experiment=paper_<row>``)."""
    from hydra import compose, initialize_config_dir

    from experiments.infra import names  # noqa: F401  (the ${run:...} resolver)

    if row not in rows():
        raise KeyError(f"unknown paper row {row!r}; rows: {', '.join(rows())}")
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=[f"experiment={PREFIX}{row}", *overrides])


def recipe(cfg) -> dict[str, Any]:
    """The audit fields of a resolved training config."""
    from experiments.models.segmentors import describe

    c = OmegaConf.to_container(cfg, resolve=True)
    r, s, data, test = c["recipe"], c["schedule"], c["data"], c.get("test") or {}
    model = describe(c["segmentor"]["name"], **(c["segmentor"].get("overrides") or {}))
    pseudo = r["pseudo_label"]
    out = {
        "source": c["source"]["name"], "target": "+".join(c["target"]["names"]),
        "method": model["method"], "backbone": model["backbone"], "decode_head": model["decode_head"],
        "source_resize": c["source"]["resize"], "target_resize": c["target"]["resize"],
        "crop": data["crop"], "hr_crop": model.get("hr_crop"), "scales": model.get("scales"),
        "hr_loss_weight": model.get("hr_loss_weight"), "feature_scale": model.get("feature_scale"),
        "ema_alpha": r["ema"]["alpha"] if r["ema"]["enabled"] else None,
        "pseudo_threshold": pseudo["threshold"],
        "pseudo_margins": pseudo.get("crop_margins") or pseudo.get("margins"),
        "rcs_min_pixels": r["rcs"]["min_pixels"] if r["rcs"]["enabled"] else None,
        "rcs_temperature": r["rcs"]["temperature"] if r["rcs"]["enabled"] else None,
        "rcs_min_crop_ratio": r["rcs"]["min_crop_ratio"] if r["rcs"]["enabled"] else None,
        "cat_max_ratio": data.get("cat_max_ratio"),
        "fd_lambda": r["feature_distance"]["weight"] if r["feature_distance"]["enabled"] else 0.0,
        "fd_classes": r["feature_distance"]["classes"],
        "fd_scale_min_ratio": r["feature_distance"]["scale_min_ratio"],
        "lr": s["lr"], "weight_decay": s["weight_decay"], "head_lr_mult": s["head_lr_mult"],
        "max_iters": s["max_iters"], "warmup_iters": s["warmup_iters"], "warmup_ratio": s["warmup_ratio"],
        "poly_power": s["power"], "batch_source": data["source_batch"], "batch_target": data["target_batch"],
        "test_mode": test.get("mode"), "test_crop": test.get("crop"), "test_stride": test.get("stride"),
        "test_resize": test.get("resize"),
        "mix": "class" if r["mix"]["enabled"] else None,
        "color_jitter": r["color_jitter"], "blur": r["blur"]["probability"] > 0,
    }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("row", nargs="?", help="a paper row (see --list)")
    parser.add_argument("--list", action="store_true", help="list the rows")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of configs/train.yaml")
    args = parser.parse_args(argv)
    if args.list or not args.row:
        print("\n".join(rows()))
        return
    print(json.dumps(recipe(compose_row(args.row, args.overrides)), indent=2))


if __name__ == "__main__":
    main()
