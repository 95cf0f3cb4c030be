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
instead trains / merges it through the pipeline (``experiments.pipeline.stages``) from the
entry's ``build`` recipe: ``{train: [train-config overrides]}`` or
``{merge: {study, name, members: [labels], fusion, fusion_overrides}}``. Entries name their
run folders with the ``${run:...}`` resolver (``experiments.infra.names``), the same rules
the pipeline writes them by. The folder the pipeline would
write must be the entry's ``run_dir``; a mismatch is an error naming both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from experiments.inference import sources
from experiments.infra.runs import is_complete

def norm_of(model: sources.ModelSource) -> str:
    """The normalisation variant of a model (``norm`` build override; BatchNorm by default)."""
    return str(model.overrides.get("norm", "bn"))


def factory(model: sources.ModelSource) -> Callable[[], torch.nn.Module]:
    """A constructor of the model with its weights loaded (read from disk once)."""
    state = model.state()
    return lambda: model.build(state)


def run_folder(entry: Mapping[str, Any], seed: int, runs_root: str | Path) -> Path:
    """The run folder an entry names for ``seed`` (``{seed}`` substituted)."""
    path = Path(str(entry["run_dir"]).format(seed=seed))
    return path if path.is_absolute() else Path(runs_root) / path


def _check_entry(entry: Mapping[str, Any]) -> None:
    if "label" not in entry:
        raise ValueError(f"models: entry {dict(entry)} has no 'label'")
    if ("run_dir" in entry) == ("checkpoint" in entry):
        raise ValueError(f"models: entry {entry['label']!r} needs exactly one of 'run_dir' or 'checkpoint'")


def resolve(entry: Mapping[str, Any], seed: int, runs_root: str | Path) -> sources.ModelSource | Path:
    """The model an entry names for ``seed``, or the missing run folder (or file) itself."""
    _check_entry(entry)
    if "checkpoint" in entry:
        path = Path(str(entry["checkpoint"]).format(seed=seed))
        if not path.is_file():
            return path
        return sources.from_checkpoint(path, entry.get("segmentor", "mini_r18"), entry.get("overrides") or {},
                                       entry.get("network", "student"), label=entry["label"])
    folder = run_folder(entry, seed, runs_root)
    if not is_complete(folder):
        return folder
    model = sources.from_run(folder, network=entry.get("network"), label=entry["label"])
    if len(model.weights) > 1:
        raise ValueError(f"{folder} is an encoder-only merge with one model per head; name one head "
                         f"folder as run_dir ({', '.join(str(w.path.parent) for w in model.weights)})")
    return model


def resolve_all(entries: Sequence[Mapping[str, Any]], seeds: Sequence[int], runs_root: str | Path
                ) -> tuple[dict[int, list[sources.ModelSource]], list[Path]]:
    """Seed -> the models found, and every missing run folder or file (in order)."""
    found: dict[int, list[sources.ModelSource]] = {}
    missing: list[Path] = []
    for seed in seeds:
        found[seed] = []
        for entry in entries:
            model = resolve(entry, seed, runs_root)
            if isinstance(model, sources.ModelSource):
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
                  overrides: Sequence[str] = (), train_overrides: Sequence[str] | None = None) -> None:
    """Train / merge the entries' missing run folders through the pipeline (``experiments.pipeline.stages``).

    ``overrides`` go to the pipeline's configs/reproduce.yaml (e.g. ``scale=smoke``);
    ``train_overrides`` replace its scale's training overrides (tests use a tiny budget).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

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
                cfg = compose("reproduce", overrides=[f"runs_root={runs_root}", f"study={study}", "workers=1",
                                                      *overrides])
                if train_overrides is not None:
                    cfg.scale.train_overrides = list(train_overrides)
                _build_one(cfg, entry, recipe, seed, runs_root, folder_of)
    finally:
        if context is not None:
            context.__exit__(None, None, None)


def _build_one(cfg, entry: Mapping[str, Any], recipe: Mapping[str, Any], seed: int, runs_root: str | Path,
               folder_of: Callable[[str], Path]) -> None:
    from experiments.pipeline import stages
    from experiments.selftraining.loop import run_dir_for

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
        got = stages.merge_run_dir(cfg, name, seed)
        # an encoder-only merge's model is one of its head<i>/ folders
        if want.resolve() != got.resolve() and want.parent.resolve() != got.resolve():
            raise ValueError(f"models: {entry['label']!r} build.merge writes {got}, not its run_dir {want}")
        stages.merge_models(cfg, name, seed, members, spec)
        if not is_complete(want):
            raise ValueError(f"models: {entry['label']!r}: the merge wrote {got}, which has no run folder {want}")
    else:
        raise ValueError(f"models: {entry['label']!r} is missing ({want}) and has no build recipe "
                         "(build: {train: [...]} or build: {merge: {...}})")
