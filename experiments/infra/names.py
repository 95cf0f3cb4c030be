"""Every run folder's name, built here and nowhere else.

Stages find each other by these names (``<runs_root>/<stage>/<name>``), so a finished
step is found and skipped when a study runs again. Short domain aliases appear only in
run names; code and configs use the full names.

YAML reaches the same rules through the ``run`` resolver, registered when this module is
imported (every command imports it): ``${run:train,gta,cityscapes,mini_r18,srconly,shared}``
is ``train/gta2cs_mini_r18_srconly_shared_s{seed}`` and ``${run:merge,table1,merged_pooled}``
is ``merge/table1_merged_pooled_s{seed}``, with ``{seed}`` left for the caller to fill in;
``${statistic_run:<model run>,regmean,cityscapes,32}`` names a merge statistic's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf

DOMAIN_ALIASES = {"gta": "gta", "synthia": "syn", "cityscapes": "cs", "idd": "idd", "acdc": "acdc",
                  "darkzurich": "dz"}
SEED = "{seed}"  # placeholder the resolver leaves in a name


def train_run(source: str, targets: Sequence[str] | str, segmentor: str, recipe: str, init: str,
              seed: int | str) -> str:
    """``<source>2<target[+target]>_<segmentor>_<recipe>_<init>_s<seed>``, e.g. gta2cs_mini_r18_daformer_shared_s0."""
    targets = targets.split("+") if isinstance(targets, str) else list(targets)
    for name in [source, *targets]:
        if name not in DOMAIN_ALIASES:
            raise ValueError(f"unknown domain {name!r}; known: {sorted(DOMAIN_ALIASES)}")
    target = "+".join(DOMAIN_ALIASES[t] for t in targets)
    return f"{DOMAIN_ALIASES[source]}2{target}_{segmentor}_{recipe}_{init}_s{seed}"


def train_run_of(cfg: Any) -> str:
    """The training run name of a resolved ``configs/train.yaml``."""
    return train_run(cfg.source.name, list(cfg.target.names), cfg.segmentor.name, cfg.recipe.name,
                     cfg.init.name, int(cfg.seed))


def study_run(study: str, name: str, seed: int | str) -> str:
    """A step of a study for one seed (a merge, a curve): ``<study>_<name>_s<seed>``; '+' -> '-'."""
    return f"{study}_{name.replace('+', '-')}_s{seed}"


def rebasin_run(study: str, seed: int | str) -> str:
    return f"{study}_s{seed}"


def pretrain_run(arch: str, seed: int | str, overrides: dict | None = None) -> str:
    extra = "".join(f"_{k}-{v}" for k, v in sorted((overrides or {}).items()))
    return f"{arch}{extra}_s{seed}"


def tta_source_run(norm: str, seed: int | str) -> str:
    return f"source_{norm}_s{seed}"


def digits_pretrain_run(model: str, image_size: int, epochs: int, seed: int) -> str:
    """The classification check's digits pretraining: the settings that change its checkpoint."""
    return f"pretrain-digits_{model}_{image_size}px_e{epochs}_s{seed}"


def statistic_run(model_run: str | Path, kind: str, domain: str, images: int | str) -> str:
    """One domain's merge statistic of one model: ``<model run>_<kind>_<domain alias>_n<images>``."""
    if domain not in DOMAIN_ALIASES:
        raise ValueError(f"unknown domain {domain!r}; known: {sorted(DOMAIN_ALIASES)}")
    return f"{Path(str(model_run)).name}_{kind}_{DOMAIN_ALIASES[domain]}_n{images}"


def evaluation_run(model_run: str | Path) -> str:
    """The evaluation of a model run is named after the run (its folder name)."""
    return Path(model_run).name


def run_path(runs_root: str | Path, stage: str, name: str) -> Path:
    return Path(runs_root) / stage / name


def _resolve(stage: str, *parts: Any) -> str:
    builders = {"train": (train_run, 5), "merge": (study_run, 2), "curve": (study_run, 2),
                "rebasin": (rebasin_run, 1), "pretrain": (pretrain_run, 1), "tta": (tta_source_run, 1)}
    if stage not in builders:
        raise ValueError(f"${{run:{stage},...}}: unknown stage; known: {sorted(builders)}")
    builder, count = builders[stage]
    if len(parts) != count:
        raise ValueError(f"${{run:{stage},...}} takes {count} arguments before the seed, got {list(parts)}")
    folder = "tta" if stage == "tta" else stage
    return f"{folder}/{builder(*[str(p) for p in parts], SEED)}"


if not OmegaConf.has_resolver("run"):
    OmegaConf.register_new_resolver("run", _resolve)
if not OmegaConf.has_resolver("statistic_run"):
    OmegaConf.register_new_resolver("statistic_run", lambda *parts: statistic_run(*[str(p) for p in parts]))
