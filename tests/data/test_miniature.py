"""The miniature benchmark: written in the real layouts, read back exactly by the real loaders."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from experiments.data import datasets
from experiments.data.miniature import NOTE, generate, render_sample, writers
from experiments.data.miniature import builder as G
from experiments.data.miniature.classes import IGNORE, RIDER, TRAFFIC_LIGHT, TRAFFIC_SIGN
from experiments.data.miniature.domains import DOMAINS
from experiments.data.miniature.scenes import render_layout
from experiments.data.miniature.report import tree_digest

SIZE = (64, 32)
TINY = dict(seed=0, size=SIZE, n_train=4, n_val=4, n_source=4, workers=1, preview=False)


@pytest.fixture(scope="module")
def mini(mini_data) -> Path:
    """The session's miniature (configs/scale/smoke.yaml's settings); read only here."""
    return mini_data


def _settings(mini: Path, name: str) -> dict:
    return json.loads((mini / "manifest.json").read_text())["datasets"][name]["params"]


def _splits(name: str) -> list[tuple[str, dict]]:
    if name in G.SOURCES:
        return [("all", {})]
    if name == "acdc":
        return [(s, {"condition": c}) for c in writers.ACDC_CONDITIONS for s in ("train", "val")]
    return [("train", {}), ("val", {})]


@pytest.mark.parametrize("name", G.DATASETS)
def test_loaders_read_back_the_generated_labels_and_images(mini, name):
    seen_ignore = False
    for split, kw in _splits(name):
        dataset = datasets.load(name, mini / name, split, **kw)
        p = _settings(mini, name)
        jobs = [j for j in G._jobs(name, p["n_source"], p["n_train"], p["n_val"])
                if j[1] == split and j[3] == kw.get("condition")]
        assert len(dataset) == len(jobs) > 0
        expected = {str(mini / name / writers.sample_paths(name, split, i, c)[0]): (d, i) for d, _, i, c in jobs}
        for item in dataset:
            domain, index = expected.pop(item["path"])
            image, label = render_sample(domain, 0, split, index, SIZE)
            np.testing.assert_array_equal(item["label"], label)  # ids mapped exactly, ignore included
            np.testing.assert_array_equal(item["image"], image)
            seen_ignore |= bool((label == 255).any())
        assert not expected
    if name in ("cityscapes", "idd"):  # ego bonnet / clutter: the ignore encoding is exercised
        assert seen_ignore


def test_synthia_file_is_16bit_with_the_class_in_the_red_channel(mini):
    raw = cv2.imread(str(mini / "synthia" / "GT" / "LABELS" / "0000000.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (SIZE[1], SIZE[0], 3)
    _, label = render_sample("synthia", 0, "all", 0, SIZE)
    np.testing.assert_array_equal(raw[:, :, 2], writers.TO_SYNTHIA_ID[label])  # cv2 order B, G, R
    for item in datasets.load("synthia", mini / "synthia", "all"):
        assert not np.isin(item["label"], (9, 14, 16)).any()  # no terrain, truck, train


def test_cityscapes_labels_are_label_ids_not_train_ids(mini):
    path = next((mini / "cityscapes" / "gtFine" / "train").rglob("*_gtFine_labelIds.png"))
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert 7 in raw and raw.max() > 18  # road is id 7, sky 23: label ids, not trainIds
    assert set(np.unique(raw)) <= {0, 7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33}


def test_same_seed_gives_identical_files_whatever_the_worker_count(tmp_path):
    kw = dict(TINY, datasets=["gta", "acdc"])
    a = generate(tmp_path / "a", **kw)
    b = generate(tmp_path / "b", **{**kw, "workers": 2})
    c = generate(tmp_path / "c", **{**kw, "seed": 1})
    for name in kw["datasets"]:
        assert tree_digest(a / name) == tree_digest(b / name)
        assert tree_digest(a / name) != tree_digest(c / name)
    assert json.loads((a / "manifest.json").read_text()) == json.loads((b / "manifest.json").read_text())


def _mean_rgb(root: Path, name: str, **kw) -> tuple[float, float]:
    images = np.stack([item["image"] for item in datasets.load(name, root / name, "train", **kw)]).astype(float)
    return images.mean(), (images.max(axis=-1) - images.min(axis=-1)).mean()  # brightness, chroma


def test_domains_differ_in_their_statistics(mini):
    cs_bright, cs_chroma = _mean_rgb(mini, "cityscapes")
    dz_bright, _ = _mean_rgb(mini, "darkzurich")
    fog_bright, fog_chroma = _mean_rgb(mini, "acdc", condition="fog")
    gta = np.stack([item["image"] for item in datasets.load("gta", mini / "gta", "all")]).astype(float)
    gta_chroma = (gta.max(axis=-1) - gta.min(axis=-1)).mean()
    assert dz_bright < 0.5 * cs_bright  # night
    assert gta_chroma > 1.5 * cs_chroma  # saturated rendering vs muted photographs
    assert fog_bright > cs_bright and fog_chroma < cs_chroma  # fog veils the scene
    # SYNTHIA's higher camera puts the horizon (and so the sky) higher in the frame.
    def sky_row(name):
        rows = [np.nonzero(item["label"] == 10)[0].mean() for item in datasets.load(name, mini / name, "all")]
        return float(np.mean(rows))
    assert sky_row("synthia") < sky_row("gta")


def test_stand_in_note_and_statistics_are_recorded(mini):
    manifest = json.loads((mini / "manifest.json").read_text())
    assert manifest["note"] == NOTE and manifest["stand_in"] is True
    assert "NOT the real data" in (mini / "README.md").read_text()
    for name in G.DATASETS:
        entry = manifest["datasets"][name]
        assert entry["params"]["seed"] == 0 and entry["params"]["size"] == list(SIZE)
        assert entry["sha256"] == tree_digest(mini / name)
        assert abs(sum(entry["class_pixel_frequency"].values()) - 1.0) < 1e-3


def test_rerun_is_a_no_op_and_other_settings_are_refused(mini, monkeypatch):
    before = {p: p.stat().st_mtime_ns for p in mini.rglob("*") if p.is_file()}

    def fail(*args, **kwargs):
        raise AssertionError("a complete dataset was regenerated")

    monkeypatch.setattr(G, "_generate_dataset", fail)
    same = _settings(mini, "gta")
    settings = dict(seed=0, size=SIZE, n_train=same["n_train"], n_val=same["n_val"], n_source=same["n_source"],
                    preview=False)
    generate(mini, **settings)
    assert {p: p.stat().st_mtime_ns for p in mini.rglob("*") if p.is_file()} == before
    with pytest.raises(FileExistsError, match="force"):
        generate(mini, **{**settings, "seed": 3})


def test_interrupted_generation_leaves_no_half_dataset(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = writers.write_sample

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(writers, "write_sample", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path / "mini", **{**TINY, "datasets": ["gta"]})
    assert not (tmp_path / "mini" / "gta").exists()
    assert not any((tmp_path / "mini").glob(".gta*"))
    monkeypatch.setattr(writers, "write_sample", real)
    out = generate(tmp_path / "mini", **{**TINY, "datasets": ["gta"]})
    assert len(datasets.load("gta", out / "gta", "all")) == 4


def test_each_pixel_is_coloured_from_its_own_class():
    """An object made of several classes (a sign on its pole, a rider on a bicycle) is one
    instance per class, so each part takes its colour from its own class's palette."""
    seen = set()
    for seed, name in enumerate(["cityscapes", "idd"] * 4):
        scene = render_layout(DOMAINS[name].layout, np.random.default_rng(seed), 256, 128)
        owner = np.asarray(scene.instance_class)[scene.instance]
        labelled = scene.label != IGNORE
        assert (owner[labelled] == scene.label[labelled]).all()
        seen |= set(np.unique(scene.label[labelled]).tolist())
    assert {RIDER, TRAFFIC_LIGHT, TRAFFIC_SIGN} <= seen  # the multi-class objects were drawn
