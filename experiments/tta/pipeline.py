"""Models of the study pipeline (``python -m experiments.reproduce``) for the TTA experiment.

The ``models`` list of configs/adapt.yaml names each model by where it lives:

- ``run_dir``: a run folder of the pipeline, relative to ``runs_root`` (or absolute);
  ``{seed}`` is replaced by the seed, so seed s adapts the seed-s models. The folder's
  ``manifest.json`` says how to rebuild the network (its ``model`` entry: segmentor,
  build overrides, saved network) and must say ``status: complete``;
- ``checkpoint``: a weights file with ``segmentor`` (default ``mini_r18``), ``overrides``
  and ``network`` given in the entry itself.
``network`` in an entry overrides the manifest's (e.g. ``teacher``).

A missing run folder is skipped with a message naming it, so ``make reproduce-tta``
works before ``make reproduce-table1``; with ``build_missing: true`` the experiment
instead trains / merges it through the pipeline (``experiments.stages``) from the
entry's ``build`` recipe: ``{train: [train-config overrides]}`` or
``{merge: {study, name, members: [labels], buffers}}``. The folder the pipeline would
write must be the entry's ``run_dir``; a mismatch is an error naming both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from experiments.runs import is_complete, read_manifest

CHECKPOINT_NAMES = ("model.pth", "merged.safetensors")


@dataclass
class ResolvedModel:
    """One model of one seed, ready to build: ``build()`` returns a fresh copy."""

    label: str
    checkpoint: Path
    segmentor: str
    overrides: dict[str, Any] = field(default_factory=dict)
    network: str = "student"

    def load_state(self) -> dict[str, torch.Tensor]:
        import fusion

        # a merge run's manifest says "merged": its file holds that one network, read whole
        network = "student" if self.network == "merged" else self.network
        return fusion.load_checkpoint(self.checkpoint, network=network)

    def factory(self) -> Callable[[], torch.nn.Module]:
        """A constructor of the model with its weights loaded (read from disk once)."""
        from experiments.models import build_segmentor

        state = self.load_state()

        def build() -> torch.nn.Module:
            model = build_segmentor(self.segmentor, **self.overrides)
            model.load_state_dict(state, strict=True)
            return model.eval()
        return build

    @property
    def norm(self) -> str:
        return str(self.overrides.get("norm", "bn"))


def run_folder(entry: Mapping[str, Any], seed: int, runs_root: str | Path) -> Path:
    """The run folder an entry names for ``seed`` (``{seed}`` substituted)."""
    path = Path(str(entry["run_dir"]).format(seed=seed))
    return path if path.is_absolute() else Path(runs_root) / path


def _check_entry(entry: Mapping[str, Any]) -> None:
    if "label" not in entry:
        raise ValueError(f"models: entry {dict(entry)} has no 'label'")
    if ("run_dir" in entry) == ("checkpoint" in entry):
        raise ValueError(f"models: entry {entry['label']!r} needs exactly one of 'run_dir' or 'checkpoint'")


def resolve(entry: Mapping[str, Any], seed: int, runs_root: str | Path) -> ResolvedModel | Path:
    """The model an entry names for ``seed``, or the missing run folder (or file) itself."""
    _check_entry(entry)
    if "checkpoint" in entry:
        path = Path(str(entry["checkpoint"]).format(seed=seed))
        if not path.is_file():
            return path
        return ResolvedModel(entry["label"], path, entry.get("segmentor", "mini_r18"),
                             dict(entry.get("overrides") or {}), entry.get("network", "student"))
    folder = run_folder(entry, seed, runs_root)
    if not is_complete(folder):
        return folder
    info = (read_manifest(folder) or {}).get("model")
    if not info or "segmentor" not in info:
        raise ValueError(f"{folder}/manifest.json has no 'model' entry with a segmentor; "
                         "give the entry a 'checkpoint' with 'segmentor' instead")
    weights = next((folder / n for n in CHECKPOINT_NAMES if (folder / n).is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"{folder}: complete, but holds none of {', '.join(CHECKPOINT_NAMES)} "
                                "(an encoder-only merge has one model per head; name head<i>/ as run_dir)")
    return ResolvedModel(entry["label"], weights, info["segmentor"], dict(info.get("overrides") or {}),
                         entry.get("network") or info.get("network", "student"))


def resolve_all(entries: Sequence[Mapping[str, Any]], seeds: Sequence[int], runs_root: str | Path
                ) -> tuple[dict[int, list[ResolvedModel]], list[Path]]:
    """Seed -> the models found, and every missing run folder or file (in order)."""
    found: dict[int, list[ResolvedModel]] = {}
    missing: list[Path] = []
    for seed in seeds:
        found[seed] = []
        for entry in entries:
            model = resolve(entry, seed, runs_root)
            if isinstance(model, ResolvedModel):
                found[seed].append(model)
            else:
                missing.append(model)
    return found, missing


def missing_message(missing: Sequence[Path]) -> str:
    return ("test-time adaptation skips these models, whose run folders are missing or unfinished: "
            + ", ".join(str(p) for p in missing)
            + ". Run `make reproduce-table1` (same runs_root) first, or set build_missing=true to "
              "train and merge them through the pipeline.")


def build_missing(entries: Sequence[Mapping[str, Any]], seeds: Sequence[int], runs_root: str | Path,
                  data_root: str | Path, overrides: Sequence[str] = (), train_overrides: Sequence[str] | None = None
                  ) -> None:
    """Train / merge the entries' missing run folders through the pipeline (``experiments.stages``).

    ``overrides`` go to the pipeline's configs/reproduce.yaml (e.g. ``scale=smoke``);
    ``train_overrides`` replace its scale's training overrides (tests use a tiny budget).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from experiments import stages
    from experiments.train import run_dir_for

    by_label = {e["label"]: e for e in entries}
    config_dir = str(Path(__file__).resolve().parents[2] / "configs")
    fresh = not GlobalHydra.instance().is_initialized()
    context = initialize_config_dir(config_dir=config_dir, version_base="1.3") if fresh else None
    try:
        if context is not None:
            context.__enter__()
        for seed in seeds:
            def folder_of(label: str) -> Path:
                if label not in by_label:
                    raise ValueError(f"models: merge member {label!r} is not a label of the models list")
                return run_folder(by_label[label], seed, runs_root)

            for entry in entries:
                _check_entry(entry)
                if "run_dir" not in entry or is_complete(run_folder(entry, seed, runs_root)):
                    continue
                recipe = entry.get("build") or {}
                study = (recipe.get("merge") or {}).get("study", "table1")
                cfg = compose("reproduce", overrides=[f"runs_root={runs_root}", f"scale.data_root={data_root}",
                                                      f"study={study}", "workers=1", *overrides])
                if train_overrides is not None:
                    cfg.scale.train_overrides = list(train_overrides)
                _build_one(cfg, entry, recipe, seed, runs_root, folder_of, stages, run_dir_for)
    finally:
        if context is not None:
            context.__exit__(None, None, None)


def _build_one(cfg, entry, recipe, seed, runs_root, folder_of, stages, run_dir_for) -> None:
    want = run_folder(entry, seed, runs_root)
    if "train" in recipe:
        job = stages.compose_train(cfg, list(recipe["train"]), seed)
        got = run_dir_for(job)
        if got.resolve() != want.resolve():
            raise ValueError(f"models: {entry['label']!r} build.train writes {got}, not its run_dir {want}")
        stages.train_models(cfg, {entry["label"]: job})
    elif "merge" in recipe:
        spec = dict(recipe["merge"])
        members = [folder_of(m) for m in spec["members"]]
        for member in members:
            if not is_complete(member):
                raise ValueError(f"models: merge {entry['label']!r} needs {member}; list its member first")
        name = spec.get("name", entry["label"])
        got = Path(runs_root) / "merge" / f"{cfg.study.name}_{name.replace('+', '-')}_s{seed}"
        if got.resolve() != want.resolve():
            raise ValueError(f"models: {entry['label']!r} build.merge writes {got}, not its run_dir {want}")
        stages.merge_models(cfg, name, seed, members, {"buffers": spec.get("buffers", "pooled")})
    else:
        raise ValueError(f"models: {entry['label']!r} is missing ({want}) and has no build recipe "
                         "(build: {train: [...]} or build: {merge: {...}})")
