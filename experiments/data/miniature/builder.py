"""Generating the miniature benchmark: every dataset, deterministic by seed, written atomically.

Each sample's random stream is derived from (seed, dataset, split, condition, index) alone,
so the files do not depend on the number of worker processes or their scheduling. Each
dataset is written to a hidden temporary folder and renamed into place when complete: an
interrupted run leaves no half dataset, and a finished one is skipped on the next run.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from experiments.data.miniature import report, writers
from experiments.data.miniature.domains import DOMAINS
from experiments.data.miniature.scenes import render_layout
from experiments.data.miniature.styles import render_image, to_uint8
from experiments.infra.runs import write_json_atomic

# 2.0: Cityscapes focal length, textured game source, calibrated domains; 2.1: one instance per
# class of an object, small objects enlarged (docs/calibration.md)
GENERATOR_VERSION = "2.1"
DATASETS = ("gta", "synthia", "cityscapes", "idd", "acdc", "darkzurich")
SOURCES = ("gta", "synthia")
_PREVIEW = 3  # samples per domain kept for the contact sheet


def render_sample(domain: str, seed: int, split: str, index: int, size: tuple[int, int]):
    """One (image uint8 H x W x 3 RGB, label uint8 H x W trainIds) of ``domain`` (e.g. acdc_fog)."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown miniature domain {domain!r}; known: {sorted(DOMAINS)}")
    spec = DOMAINS[domain]
    rng = np.random.default_rng([seed, zlib.crc32(domain.encode()), zlib.crc32(split.encode()), index])
    width, height = size
    scene = render_layout(spec.layout, rng, width, height)
    image = render_image(scene, spec.style, rng)
    if spec.effect is not None:
        image = spec.effect(image, scene, rng)
    return to_uint8(image, spec.jpeg), scene.label


def _jobs(dataset: str, n_source: int, n_train: int, n_val: int) -> list[tuple[str, str, int, str | None]]:
    """(domain, split, index, condition) of every sample of ``dataset``."""
    if dataset in SOURCES:
        return [(dataset, "all", i, None) for i in range(n_source)]
    splits = {"train": n_train, "val": n_val}
    if dataset == "acdc":  # the split sizes are shared among the four conditions
        return [(f"acdc_{c}", split, i, c) for c in writers.ACDC_CONDITIONS
                for split, n in splits.items() for i in range(-(-n // len(writers.ACDC_CONDITIONS)))]  # fmt: skip
    return [(dataset, split, i, None) for split, n in splits.items() for i in range(n)]


def sizes_of(size, dataset: str) -> list[tuple[int, int]]:
    """The (width, height) sizes of ``dataset``'s samples: one size for every dataset, or a
    table ``{dataset: [W, H]}`` whose entry may list several sizes, taken in turn by sample
    index (IDD mixes resolutions)."""
    entry = size[dataset] if isinstance(size, Mapping) else size
    entry = [list(e) for e in entry] if entry and isinstance(entry[0], (list, tuple)) else [list(entry)]
    return [(int(w), int(h)) for w, h in entry]


def _work(args) -> tuple[np.ndarray, list]:
    root, dataset, seed, sizes, jobs = args
    counts = np.zeros(256, np.int64)
    previews = []
    for domain, split, index, condition in jobs:
        image, label = render_sample(domain, seed, split, index, sizes[index % len(sizes)])
        writers.write_sample(Path(root), dataset, split, index, image, label, condition)
        counts += np.bincount(label.ravel(), minlength=256)
        if split in ("all", "train") and index < _PREVIEW:
            previews.append((domain, index, image, label))
    return counts, previews


def _params(seed: int, sizes: list[tuple[int, int]], n_source: int, n_train: int, n_val: int) -> dict:
    size = list(sizes[0]) if len(sizes) == 1 else [list(s) for s in sizes]
    return {"seed": seed, "size": size, "n_source": n_source, "n_train": n_train, "n_val": n_val,
            "generator_version": GENERATOR_VERSION}  # fmt: skip


def generate(out: str | os.PathLike, *, size: tuple[int, int], n_train: int, n_val: int, n_source: int,
             seed: int = 0, datasets: list[str] | None = None, force: bool = False,
             workers: int | None = None, preview: bool = True) -> Path:  # fmt: skip
    """Write the miniature benchmark under ``out`` (``out/<dataset>/`` in each real layout).

    ``size`` is (width, height) for every dataset, or a table ``{dataset: [W, H]}`` (an
    entry may list several sizes, used in turn: ``sizes_of``), e.g. each real dataset's
    native resolution for the paper-shaped stand-in. The sizes and counts of each stand-in
    have one home, the ``scale`` configs (``configs/scale/*.yaml``, ``generate:``). Datasets already generated with the same settings are
    skipped; ones generated with other settings are refused unless ``force``. Returns ``out``.
    """
    out = Path(out)
    names = list(DATASETS if datasets is None else datasets)
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise ValueError(f"unknown dataset(s) {unknown}; valid: {', '.join(DATASETS)}")
    sizes = {name: sizes_of(size, name) for name in names}
    if any(w < 16 or h < 16 for s in sizes.values() for w, h in s) or min(n_train, n_val, n_source) < 1:
        raise ValueError(f"sizes must be at least 16x16 and counts >= 1, got size={size}, "
                         f"n_train={n_train}, n_val={n_val}, n_source={n_source}")  # fmt: skip
    manifest = _read_manifest(out)
    workers = workers or min(2, os.cpu_count() or 1)
    all_previews = []
    for name in names:
        params = _params(seed, sizes[name], n_source, n_train, n_val)
        entry = manifest["datasets"].get(name)
        target = out / name
        if target.is_dir() and entry and entry.get("params") == params and not force:
            continue
        if target.exists() and not force:
            why = "with other settings" if entry else "by something else (not in manifest.json)"
            raise FileExistsError(f"{target} exists, written {why}; pass force=True (force=true on the command line) to replace it")
        stats, previews = _generate_dataset(out, name, seed, sizes[name], params, workers)
        manifest["datasets"][name] = {"params": params, **stats}
        all_previews += previews
        _write_manifest(out, manifest)  # after every dataset, so completed ones are recorded
    if all_previews or not (out / "README.md").exists():
        report.write_readme(out, manifest)
    if preview and all_previews:
        report.write_preview(out / "preview.png", all_previews)
    return out


def _generate_dataset(out: Path, name: str, seed: int, sizes: list[tuple[int, int]], params: dict, workers: int):
    jobs = _jobs(name, params["n_source"], params["n_train"], params["n_val"])
    temp = out / f".{name}.partial"  # a leftover from an interrupted run is discarded
    if temp.exists():
        shutil.rmtree(temp)
    temp.mkdir(parents=True)
    chunks = [jobs[i::workers * 4] for i in range(workers * 4) if jobs[i::workers * 4]]
    tasks = [(str(temp), name, seed, sizes, chunk) for chunk in chunks]
    try:
        if workers > 1:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                results = pool.map(_work, tasks)
        else:
            results = [_work(task) for task in tasks]
        counts = sum(r[0] for r in results)
        previews = sorted((p for r in results for p in r[1]), key=lambda p: (p[0], p[1]))
        target = out / name
        if target.exists():
            shutil.rmtree(target)
        os.replace(temp, target)
    finally:
        if temp.exists():
            shutil.rmtree(temp)
    splits: dict[str, int] = {}
    for _, split, _, _ in jobs:
        splits[split] = splits.get(split, 0) + 1
    return {"samples": splits, **report.class_frequencies(counts), "sha256": report.tree_digest(out / name)}, previews


def _read_manifest(out: Path) -> dict:
    path = out / "manifest.json"
    if not path.exists():
        return {"note": report.NOTE, "generator_version": GENERATOR_VERSION, "datasets": {}}
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"corrupt miniature manifest {path}: {error}; delete it or pass --force") from error
    manifest.setdefault("datasets", {})
    return manifest


def _write_manifest(out: Path, manifest: dict) -> None:
    manifest.update(note=report.NOTE, generator_version=GENERATOR_VERSION, stand_in=True)
    write_json_atomic(out / "manifest.json", manifest)


def generate_scale(scale, force: bool = False, datasets: list[str] | None = None,
                   workers: int | None = None) -> Path:
    """The miniature a ``scale`` config describes (``data_root``, ``generate``); nothing to do
    for a scale on real data."""
    from omegaconf import OmegaConf

    scale = scale if OmegaConf.is_config(scale) else OmegaConf.create(dict(scale))
    if not scale.get("generate"):
        raise ValueError(f"scale {scale.name!r} reads real data under {scale.data_root}; it has nothing to generate")
    return generate(scale.data_root, **OmegaConf.to_container(scale.generate, resolve=True), force=force,
                    datasets=datasets, workers=workers)
