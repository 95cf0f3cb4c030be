"""Every config in configs/ composes through Hydra and resolves, at every scale.

Primary configs compose with their own defaults; every option of every config group
composes into the primary config that uses it; every model of every study composes
into a training config the way ``experiments.pipeline.stages.compose_train`` builds it. All
interpolations are resolved, so a dangling ``${...}`` fails here, not hours into a run.
Only ``hydra.*`` keys that exist solely inside a running app (job number, runtime
output folder) are left unresolved.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import experiments.infra.names  # noqa: F401  (the ${run:...} resolver, as every command registers it)

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"

# Values a primary config leaves mandatory (``???``) and interpolates elsewhere.
REQUIRED = {
    "merge": ["name=check", "members=[a.pth,b.pth]"],
    "statistics": ["model=runs/train/gta2cs_mini_lite0_daformer_shared_s0", "domain=cityscapes"],
}
# Groups that no defaults list names: they are appended on the command line (``+group=``).
APPENDED = {"classify": "classify"}
# Keys of the hydra node that compose() can resolve (others need the running app).
HYDRA_KEYS = ("launcher", "run.dir", "sweep.dir")


def _primaries() -> list[str]:
    return sorted(p.stem for p in CONFIGS.glob("*.yaml"))


def _defaults(primary: str) -> list:
    return (yaml.safe_load((CONFIGS / f"{primary}.yaml").read_text()) or {}).get("defaults") or []


def _groups_of(primary: str) -> list[str]:
    """Config groups named by a primary config's defaults list (``optional`` ones too)."""
    groups = []
    for entry in _defaults(primary):
        if isinstance(entry, dict):
            key = next(iter(entry))
            name = key.removeprefix("optional ").removeprefix("override ").strip("/")
            if name != "_self_" and (CONFIGS / name).is_dir():
                groups.append(name)
    return groups


def _group_options() -> list[tuple[str, str, str]]:
    """(primary, group, option) for every yaml file of every group folder in configs/."""
    owner = {g: p for p in _primaries() for g in _groups_of(p)}
    cases = []
    for folder in sorted(p for p in CONFIGS.iterdir() if p.is_dir()):
        options = sorted(f.stem for f in folder.glob("*.yaml"))
        if not options:
            continue  # e.g. local/: only a README until a user adds their overrides
        primary = owner.get(folder.name) or APPENDED.get(folder.name)
        cases += [(primary, folder.name, o) for o in options]
    return cases


def _is_global(group: str, option: str) -> bool:
    """True if the option's header puts it at the config root (``# @package _global_``)."""
    header = (CONFIGS / group / f"{option}.yaml").read_text().split("\n", 1)[0]
    return header.strip() == "# @package _global_"


def _compose(primary: str, overrides: list[str] = (), hydra_node: bool = False) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(primary, overrides=[*REQUIRED.get(primary, []), *overrides],
                      return_hydra_config=hydra_node)
        if hydra_node:
            # ${hydra:...} resolvers read the global HydraConfig, as in a running app.
            HydraConfig.instance().set_config(cfg)
            for key in HYDRA_KEYS:
                node = OmegaConf.select(cfg.hydra, key)
                if isinstance(node, DictConfig):
                    OmegaConf.to_container(node, resolve=True)
                else:
                    OmegaConf.select(cfg.hydra, key, throw_on_missing=True)
        return cfg


def _resolved(cfg: DictConfig) -> dict:
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]) if "hydra" in cfg else cfg
    return OmegaConf.to_container(job, resolve=True)


def test_the_config_tree_is_covered():
    """Every group belongs to a primary config, so none is silently left out below."""
    assert {"train", "reproduce", "merge", "evaluate", "pretrain"} <= set(_primaries())
    unowned = sorted({g for p, g, _ in _group_options() if p is None})
    assert not unowned, f"config groups that no primary config uses: {unowned} (add them to APPENDED)"
    assert {"scale", "study", "fusion", "launcher", "resources", "experiment"} <= {g for _, g, _ in _group_options()}


@pytest.mark.parametrize("primary", _primaries())
def test_primary_config_composes_and_resolves(primary):
    cfg = _compose(primary, hydra_node=True)
    resolved = _resolved(cfg)
    assert resolved, f"configs/{primary}.yaml composed to nothing"
    for entry in _defaults(primary):
        # Every group chosen by the defaults list lands under its own key.
        if isinstance(entry, dict) and entry.get(group := next(iter(entry)).strip("/")) \
                and group in _groups_of(primary) and not _is_global(group, entry[group]):
            assert group in resolved, f"{primary}: group {group!r} missing after compose"


@pytest.mark.parametrize("primary, group, option", _group_options(),
                         ids=[f"{p}:{g}={o}" for p, g, o in _group_options()])
def test_every_group_option_composes(primary, group, option):
    prefix = "+" if group in APPENDED else ""
    cfg = _compose(primary, [f"{prefix}{group}={option}"], hydra_node=True)
    resolved = _resolved(cfg)
    if not _is_global(group, option):
        assert group in resolved, f"{group}={option} did not land under {group!r}"
        return
    # A global option (an experiment, a launcher) is exactly its group choices composed on their
    # own, with the values it sets on top: nothing else changes, nothing it sets is lost.
    text = yaml.safe_load((CONFIGS / group / f"{option}.yaml").read_text()) or {}
    chosen = [next(iter(e.items())) for e in text.pop("defaults", []) if isinstance(e, dict)]
    for key, _ in chosen:
        if key.startswith("override hydra/"):
            assert OmegaConf.select(cfg, "hydra." + key.split("/", 1)[1]) is not None, f"{group}={option}: {key}"
    plain = [f"{k.removeprefix('override ').strip('/')}={v}" for k, v in chosen if "hydra/" not in k]
    expected = OmegaConf.merge(OmegaConf.create(_resolved(_compose(primary, plain))),
                               {k: v for k, v in text.items() if k != "hydra"})
    assert resolved == _resolved(expected), f"{group}={option} composes to something else"
    for key, value in _leaves(text):
        if key.startswith("hydra.") or value == "???" or (isinstance(value, str) and "${" in value):
            continue
        assert OmegaConf.select(OmegaConf.create(resolved), key) == value, f"{group}={option}: {key}"


def _leaves(tree, prefix: str = ""):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, f"{prefix}{key}.")
    elif prefix:
        yield prefix[:-1], tree


def test_train_configs_resolve_the_pieces_training_reads():
    """The smoke experiment and the paper rows set what their headers promise."""
    smoke = _resolved(_compose("train", ["experiment=smoke"]))
    assert smoke["schedule"]["name"] == "smoke" and smoke["logger"]["wandb_mode"] == "none"
    assert smoke["data_root"] == "data/mini_smoke"
    paper = _resolved(_compose("train", ["experiment=paper_gta2cs_mitb5"]))
    assert paper["segmentor"]["name"] == "hrda_mitb5" and paper["schedule"]["name"] == "paper"
    assert paper["recipe"]["name"] == "hrda" and paper["data_root"] == "data/real"
    assert paper["resources"]["device"] == "cuda" and paper["data"]["crop"] == [1024, 1024]


def test_slurm_launcher_takes_its_sizes_from_resources():
    cfg = _compose("train", ["launcher=slurm", "resources=gpu_train", "resources.slurm.partition=gpu"],
                   hydra_node=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    slurm = OmegaConf.to_container(cfg.resources.slurm)
    assert {k: launcher[k] for k in slurm} == slurm
    assert launcher["submitit_folder"].startswith(OmegaConf.select(cfg, "hydra.sweep.dir"))


def _study_names() -> list[str]:
    return sorted(p.stem for p in (CONFIGS / "study").glob("*.yaml"))


def _scale_names() -> list[str]:
    return sorted(p.stem for p in (CONFIGS / "scale").glob("*.yaml"))


@pytest.mark.parametrize("scale", _scale_names())
@pytest.mark.parametrize("study", _study_names())
def test_every_study_model_composes_into_a_training_config_at_every_scale(study, scale):
    """The training configs a study builds (as stages.compose_train does) compose and resolve."""
    cfg = _compose("reproduce", [f"study={study}", f"scale={scale}", "seeds=[0]"], hydra_node=True)
    resolved = _resolved(cfg)
    from experiments.data.domains import DOMAINS

    spec = resolved["study"]
    assert spec["name"] == study
    assert set(spec["domains"]) <= set(DOMAINS), "a study domain is not in experiments/data/domains.py"
    models = spec["models"]
    for merge in (spec.get("merges") or {}).values():
        assert set(merge["members"]) <= set(models), f"{study}: merge of untrained models {merge}"
        assert (CONFIGS / "fusion" / f"{merge.get('fusion', 'midpoint')}.yaml").exists(), merge
    for curve in (spec.get("curves") or {}).values():
        assert {curve["a"], curve["b"]} <= set(models), f"{study}: curve between untrained models {curve}"
    if spec.get("subsets"):
        assert set(spec["subsets"]["members"]) <= set(models)
    for setting in (spec.get("settings") or {}).values():  # the methods study
        assert set(setting["members"]) <= set(models) and set(setting["domains"]) <= set(spec["domains"])
    for method in (spec.get("methods") or {}).values():
        assert method.get("ensemble") or (CONFIGS / "fusion" / f"{method['fusion']}.yaml").exists(), method
    if spec.get("alignment"):
        assert {spec["alignment"]["a"], spec["alignment"]["b"]} <= set(models)
    from experiments.pipeline.stages import row_of

    for label, overrides in models.items():
        row = row_of(cfg, label)  # at a scale of paper rows every model has one
        experiment = [f"experiment=paper_{row}"] if row else []
        train = _resolved(_compose("train", [*experiment, *resolved["scale"]["train_overrides"], *overrides,
                                             "seed=0"]))
        schedule = [o.split("=", 1)[1] for o in resolved["scale"]["train_overrides"] if o.startswith("schedule=")]
        assert [train["schedule"]["name"]] == (schedule or ["paper"]), label
        assert train["data_root"] == resolved["scale"]["data_root"], label
        assert set(train["target"]["names"]) <= set(DOMAINS), label
        if row:  # the row's recipe, the scale's data, the model's own overrides on top
            own_recipe = any(o.startswith("recipe=") for o in overrides)
            assert own_recipe or train["recipe"]["name"] == "hrda", label
            assert train["segmentor"]["name"].startswith("hrda_"), label
            assert train["scale"]["name"] == scale, label


def test_adapt_names_its_pipeline_models_by_the_rules_the_pipeline_writes_them_by():
    from experiments.infra import names

    resolved = _resolved(_compose("adapt"))
    run_dirs = {m["label"]: m["run_dir"] for m in resolved["models"]}
    segmentor = resolved["scale"]["segmentors"]["main"]
    assert run_dirs["stda_idd"] == "train/" + names.train_run("gta", "idd", segmentor, "daformer", "shared", "{seed}")
    assert run_dirs["source_only"].format(seed=2) == "train/" + names.train_run(
        "gta", ["cityscapes"], segmentor, "srconly", "shared", 2)
    assert run_dirs["merged"] == "merge/" + names.study_run("table1", "merged_pooled", "{seed}")
