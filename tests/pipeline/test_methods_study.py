"""study=methods end to end at the tiny budget: every method on both settings, what crosses
each domain's boundary, costs, verdicts, the figure and the LMC panel with alignment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import fusion
from analysis.figures import read_csv_rows
from analysis.metrics import harmonic_mean
from analysis.report import STAND_IN_NOTE
from experiments.infra.runs import read_manifest

from tiny_studies import CONFIGS, run_tiny_study

pytestmark = pytest.mark.slow
LITE0 = ["scale.segmentors.main=mini_lite0", "scale.segmentors.batchnorm=mini_lite0"]


@pytest.fixture(scope="module")
def study(tmp_path_factory, mini_data):
    root = tmp_path_factory.mktemp("methods")
    # The miniature's default segmentor (EfficientNet-Lite0: TF "SAME" padding convs and
    # non-persistent input-normalisation buffers, which the statistics and REPAIR must read).
    result = run_tiny_study(root, mini_data, "methods", extra=LITE0)
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("reproduce", overrides=["study=methods", "scale=smoke", *LITE0])
    return {"root": root, "result": result, "cfg": cfg}


def test_every_method_is_scored_on_every_setting_it_applies_to(study):
    cfg, records = study["cfg"], study["result"]["records"]
    for setting, spec in cfg.study.settings.items():
        expected = {m for m, s in cfg.study.methods.items() if s.get("members") in (None, len(spec.members))}
        scored = {r["method"] for r in records if r["setting"] == setting}
        assert scored == expected
        for method in scored:
            assert {r["domain"] for r in records if r["setting"] == setting and r["method"] == method} == set(spec.domains)
    assert "slerp" not in {r["method"] for r in records if r["setting"] == "four_targets"}


def test_the_table_says_what_crosses_each_boundary_and_what_it_cost(study):
    results = study["root"] / "results" / "methods"
    assert STAND_IN_NOTE in (results / "methods.md").read_text()
    rows = {r["method"]: r for r in read_csv_rows(results / "methods.csv")}
    assert rows["ties"]["kind"] == "nothing" and rows["regmean"]["kind"] == "statistic"
    assert rows["adamerging"]["kind"] == "images" and rows["ensemble"]["kind"] == "ensemble"
    runs = study["root"] / "runs"
    for kind in ("regmean", "fisher"):
        files = sorted((runs / "statistics").glob(f"*_{kind}_*"))
        assert len(files) == 4  # one per member of the four-target setting (the two-target ones shared)
        sizes = [read_manifest(f)["statistic_bytes"] for f in files]
        stored = "regmean_gram" if kind == "regmean" else "fisher"
        assert sizes == [fusion.statistic_bytes(fusion.load_statistic(f / "statistic.safetensors", stored))
                         for f in files]
        assert int(rows[kind]["four_targets_statistic_bytes"]) == int(sum(sizes) / len(sizes))
    ada = read_manifest(runs / "merge" / "methods_four_targets_adamerging_s0")
    per_domain = study["cfg"].scale.methods.merge_images
    assert len(ada["merge_images"]) == 4 * per_domain and all("/train/" in p for p in ada["merge_images"])
    assert int(rows["adamerging"]["four_targets_images"]) == 4 * per_domain
    for method in ("midpoint", "tsv_merge", "regmean", "adamerging"):
        assert float(rows[method]["two_targets_merge_seconds"]) > 0
    # H in the table is the harmonic mean of the per-domain records
    per_domain_rows = {r["method"]: r for r in read_csv_rows(results / "methods_four_targets.csv")}
    domains = list(study["cfg"].study.settings.four_targets.domains)
    for method, row in per_domain_rows.items():
        assert float(row["H_mean"]) == pytest.approx(harmonic_mean([float(row[f"{d}_mean"]) for d in domains]), abs=1e-3)
        assert float(rows[method]["four_targets_h_mean"]) == pytest.approx(float(row["H_mean"]), abs=1e-3)


def test_every_method_is_judged_against_the_baseline(study):
    claims = read_csv_rows(study["root"] / "results" / "methods" / "claims.csv")
    records = study["result"]["records"]
    pairs = {(r["setting"], r["method"]) for r in records if r["method"] != "midpoint"}
    assert len(claims) == len(pairs)
    assert {c["verdict"] for c in claims} <= {"held", "not held", "inconclusive"}
    assert all(c["seeds"] == "1" and c["verdict"] == "inconclusive" for c in claims)  # one seed: no SE


def test_the_figure_and_the_alignment_panel_are_written(study):
    results = study["root"] / "results" / "methods"
    assert (results / "methods_h.pdf").read_bytes()[:5] == b"%PDF-"
    rows = read_csv_rows(results / "lmc_alignment.csv")
    assert {r["variant"] for r in rows} == {"plain", "weight_matching", "weight_matching_repair"}
    assert len(rows) == 3 * 11 * 3  # variants x alphas x (two domains and H)
    ends = {(r["variant"], r["alpha"], r["domain"]): float(r["miou"]) for r in rows}
    for domain in ("cityscapes", "idd"):  # every path starts at A; weight matching ends at B's function
        assert ends[("plain", "0.0", domain)] == pytest.approx(ends[("weight_matching", "0.0", domain)], abs=1e-6)
        assert ends[("plain", "1.0", domain)] == pytest.approx(ends[("weight_matching", "1.0", domain)], abs=0.5)
    barriers = read_csv_rows(results / "lmc_alignment_barriers.csv")
    assert [b["variant"] for b in barriers] == ["plain", "weight_matching", "weight_matching_repair"]


def test_a_second_run_merges_and_computes_nothing_again(study, mini_data, monkeypatch):
    import experiments.pipeline.methods as methods

    def refuse(*args, **kwargs):
        raise AssertionError("a finished merge or statistic ran again")

    stamps = {p: p.stat().st_mtime_ns for p in (study["root"] / "runs").glob("*/*/manifest.json")}
    monkeypatch.setattr(methods.fusion, "adamerging", refuse)
    monkeypatch.setattr(methods.fusion, "repair", refuse)
    monkeypatch.setattr(methods, "run_statistic", lambda cfg: __import__("pathlib").Path(cfg["run_dir"]))
    again = run_tiny_study(study["root"], mini_data, "methods", extra=LITE0)
    assert json.dumps(again["records"], sort_keys=True) == json.dumps(study["result"]["records"], sort_keys=True)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items() if p.exists())


def test_seeds_side_by_side_give_the_records_of_a_serial_run(tmp_path, mini_data):
    """workers=2 runs each seed's merges in its own spawned process (Hydra composed there,
    resources.threads threads): from the same trained models, the records are those of a
    run in this process, in seed order."""
    import shutil

    from experiments.pipeline.studies import run_study
    from tiny_studies import TINY_TRAIN, study_overrides

    def run(root: Path, workers: int) -> list[dict]:
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            cfg = compose("reproduce", overrides=[*study_overrides(root, mini_data, "methods", (0, 1)),
                                                  f"workers={workers}", "study.alignment=null"])
            cfg.scale.train_overrides = TINY_TRAIN
            cfg.study.methods = {"midpoint": {"fusion": "midpoint"}, "ties": {"fusion": "ties"},
                                 "regmean": {"fusion": "regmean", "statistic": "regmean"},
                                 "ensemble": {"ensemble": True}}
            return run_study(cfg)["records"]

    serial = run(tmp_path / "a", 1)
    (tmp_path / "b" / "runs").mkdir(parents=True)
    for folder in (tmp_path / "a" / "runs").iterdir():  # the trained models (and their pretraining), not the merges
        if folder.name not in ("merge", "evaluate", "statistics"):
            shutil.copytree(folder, tmp_path / "b" / "runs" / folder.name)
    parallel = run(tmp_path / "b", 2)
    assert [r["seed"] for r in serial] == [r["seed"] for r in parallel] and {r["seed"] for r in serial} == {0, 1}
    assert parallel == serial
