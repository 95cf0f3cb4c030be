"""Every study of the paper runs end to end at a tiny budget; finished steps are skipped,
an interrupted training resumes, and the pipeline runs as a Hydra multirun.

Table 1 runs once per module (``table1_run``); every test that builds on it works in its
own copy of that runs folder, so no test depends on which ran before it. Models shared
between studies (same deterministic run name) are trained once: table1's two
single-target models are table4's BatchNorm pair, table3's C and I, and the LMC
study's endpoints. All studies read the session's shared miniature (``mini_data``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import experiments.selftraining.checkpoints as ckpt
import experiments.selftraining.loop as loop
from analysis.figures import read_csv_rows
from analysis.metrics import harmonic_mean
from analysis.report import STAND_IN_NOTE
from experiments.infra.names import train_run
from experiments.infra.runs import is_complete, read_manifest

from tiny_studies import CONFIGS, ITERS, ROOT, TINY_TRAIN, run_tiny_study, study_overrides  # noqa: F401

_overrides = study_overrides


def _run(root: Path, data: Path, study: str, seeds: tuple[int, ...] = (0,)) -> dict:
    return run_tiny_study(root, data, study, seeds)


class _Counter:
    """Counts calls of the recipe's training step (one per iteration) while installed."""

    def __init__(self) -> None:
        self.calls = 0
        self.step = loop.train_step

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.step(*args, **kwargs)


@pytest.fixture
def count_iterations(monkeypatch) -> _Counter:
    counter = _Counter()
    monkeypatch.setattr(loop, "train_step", counter)
    return counter


@pytest.fixture(scope="module")
def table1_run(tmp_path_factory, mini_data) -> dict:
    """Table 1 once, in a fresh workspace: its result, iterations trained, and the workspace."""
    root = tmp_path_factory.mktemp("table1")
    counter = _Counter()
    loop.train_step = counter
    try:
        result = _run(root, mini_data, "table1")
    finally:
        loop.train_step = counter.step
    return {"root": root, "result": result, "iterations": counter.calls}


@pytest.fixture
def after_table1(table1_run, tmp_path) -> Path:
    """A private copy of the runs folder Table 1 left behind (tests may add to it freely)."""
    shutil.copytree(table1_run["root"] / "runs", tmp_path / "runs", symlinks=True)
    return tmp_path


def _to_train(root: Path, models: list[tuple[str, str]]) -> int:
    """How many of these (target, segmentor) seed-0 models have no finished run folder yet."""
    folders = [root / "runs" / "train" / train_run("gta", t, seg, "daformer", "shared", 0) for t, seg in models]
    return sum(not is_complete(f) for f in folders)


def _by_method(records: list[dict]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for r in records:
        out.setdefault(r["method"], {})[r["domain"]] = r["miou"]
    return out


def _check_table(results: Path, study: str, methods: set[str], domains: list[str]) -> None:
    stem = results / study / study
    markdown = stem.with_suffix(".md").read_text()
    assert STAND_IN_NOTE in markdown
    assert "\\toprule" in stem.with_suffix(".tex").read_text() and "\\bottomrule" in stem.with_suffix(".tex").read_text()
    rows = read_csv_rows(stem.with_suffix(".csv"))
    assert {r["method"] for r in rows} == methods
    for row in rows:
        assert row["seeds"] == "1"
        means = [float(row[f"{d}_mean"]) for d in domains]
        assert all(0.0 <= m <= 100.0 for m in means)
        # H column = harmonic mean of the per-domain mIoUs (one seed: no averaging in between).
        assert float(row["H_mean"]) == pytest.approx(harmonic_mean(means), abs=1e-3)
    report = (results / "README.md").read_text()
    assert f"## {study}" in report and "stand-in (miniature)" in report


def _check_curve(results: Path, study: str, curve: str, domains: list[str]) -> list[dict]:
    pdf = results / study / f"lmc_{curve}.pdf"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    rows = read_csv_rows(pdf.with_suffix(".csv"))
    assert sorted({float(r["alpha"]) for r in rows}) == pytest.approx([i / 10 for i in range(11)])
    assert {r["domain"] for r in rows} == {*domains, "H"} and len(rows) == 11 * (len(domains) + 1)
    return rows


def test_table1_runs_and_writes_tables_figures_and_report(table1_run):
    result, results = table1_run["result"], table1_run["root"] / "results"
    methods = {"stda_cityscapes", "stda_idd", "data_combination", "merged_first_buffers", "merged_pooled",
               "merged_encoder_only"}
    mious = _by_method(result["records"])
    assert set(mious) == methods and all(set(m) == {"cityscapes", "idd"} for m in mious.values())
    assert table1_run["iterations"] == 3 * ITERS
    _check_table(results, "table1", methods, ["cityscapes", "idd"])
    rows = _check_curve(results, "table1", "shared_pretraining", ["cityscapes", "idd"])
    # The curve's endpoints are the two trained models themselves (alpha=0: stda_idd).
    for alpha, model in ((0.0, "stda_idd"), (1.0, "stda_cityscapes")):
        for domain in ("cityscapes", "idd"):
            [point] = [float(r["miou"]) for r in rows if float(r["alpha"]) == alpha and r["domain"] == domain]
            assert point == pytest.approx(mious[model][domain], abs=1e-3)
    assert {Path(f).name for f in result["files"]} >= {"table1.md", "table1.tex", "table1.csv",
                                                       "lmc_shared_pretraining.pdf", "lmc_shared_pretraining.csv"}
    # Every evaluation went through the one path: one metrics.json schema per model.
    for method in methods:
        folder = table1_run["root"] / "runs" / "evaluate"
        name = next(p.name for p in folder.iterdir() if p.name.endswith(f"{method}_s0")) if method.startswith(
            "merged") else train_run("gta", {"stda_cityscapes": "cityscapes", "stda_idd": "idd",
                                             "data_combination": "cityscapes+idd"}[method],
                                     "mini_r18", "daformer", "shared", 0)
        metrics = json.loads((folder / name / "metrics.json").read_text())
        assert set(metrics["domains"]) == {"cityscapes", "idd"} and metrics["stand_in"] is True
        for domain in ("cityscapes", "idd"):
            assert metrics["domains"][domain]["miou"] == pytest.approx(mious[method][domain], abs=1e-4)


def _manifest_times(runs: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in runs.rglob("manifest.json")}


def test_a_finished_study_is_skipped_step_by_step(table1_run, after_table1, mini_data, monkeypatch):
    before = _manifest_times(after_table1 / "runs")

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished step ran again")

    # Training, merging and both evaluators must all come from the run folders now.
    monkeypatch.setattr(loop, "_run", forbidden)
    monkeypatch.setattr("experiments.pipeline.merging.merge_states", forbidden)
    monkeypatch.setattr("experiments.inference.evaluation.evaluate_model", forbidden)
    monkeypatch.setattr("experiments.pipeline.stages.evaluate_path", forbidden)
    second = _run(after_table1, mini_data, "table1")
    assert second["records"] == table1_run["result"]["records"]
    assert _manifest_times(after_table1 / "runs") == before


class Interrupted(Exception):
    """Stands for the job being killed right after it saved a checkpoint."""


def test_an_interrupted_training_is_resumed_not_restarted(after_table1, mini_data, monkeypatch, count_iterations):
    save = ckpt.save_checkpoint

    def save_then_die(directory, state):
        path = save(directory, state)
        if state["iteration"] == 1:
            raise Interrupted(directory)
        return path

    monkeypatch.setattr(ckpt, "save_checkpoint", save_then_die)
    with pytest.raises(Interrupted) as info:
        _run(after_table1, mini_data, "table1", seeds=(1,))
    run_dir = Path(str(info.value)).parent
    assert not is_complete(run_dir) and not (run_dir / "model.pth").exists()
    assert read_manifest(run_dir)["status"] == "failed" and "Interrupted" in read_manifest(run_dir)["error"]
    assert ckpt.load_checkpoint(run_dir / "checkpoints")["iteration"] == 1
    monkeypatch.setattr(ckpt, "save_checkpoint", save)
    count_iterations.calls = 0
    result = _run(after_table1, mini_data, "table1", seeds=(1,))
    # Three models of two iterations; the interrupted one only needed its second.
    assert count_iterations.calls == 3 * ITERS - 1
    assert is_complete(run_dir) and json.loads((run_dir / "metrics.json").read_text())["iterations"] == ITERS
    assert {r["seed"] for r in result["records"]} == {1}


@pytest.mark.slow
def test_table4_reuses_table1_models_and_merges_both_backbones(after_table1, mini_data, count_iterations):
    # bn_* are table1's STDA models (same run names): after table1 only the LayerNorm pair trains.
    models = [(t, seg) for seg in ("mini_r18", "mini_mitb0") for t in ("cityscapes", "idd")]
    assert _to_train(after_table1, models) == 2
    result = _run(after_table1, mini_data, "table4")
    methods = {f"{n}_{m}" for n in ("bn", "ln") for m in ("cityscapes", "idd", "midpoint", "pooled")}
    assert set(_by_method(result["records"])) == methods
    assert count_iterations.calls == 2 * ITERS
    _check_table(after_table1 / "results", "table4", methods, ["cityscapes", "idd"])
    ln = read_manifest(after_table1 / "runs" / "merge" / "table4_ln_pooled_s0")
    assert ln["status"] == "complete"


@pytest.mark.slow
def test_table3_merges_every_subset_of_four_models(after_table1, mini_data, count_iterations):
    assert _to_train(after_table1, [(t, "mini_r18") for t in ("cityscapes", "idd", "acdc", "darkzurich")]) == 2
    result = _run(after_table1, mini_data, "table3")
    assert count_iterations.calls == 2 * ITERS  # C and I are table1's models
    domains = ["cityscapes", "idd", "acdc", "darkzurich"]
    mious = _by_method(result["records"])
    assert len(mious) == 4 + 11 and all(set(m) == set(domains) for m in mious.values())
    assert {"C", "I", "A", "D", "C+I+A+D", "I+D"} <= set(mious)
    _check_table(after_table1 / "results", "table3", set(mious), domains)


@pytest.mark.slow
def test_lmc_study_draws_every_panel(after_table1, mini_data):
    _run(after_table1, mini_data, "lmc")
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        curves = compose("reproduce", overrides=["study=lmc"]).study.curves
    for name in curves:
        _check_curve(after_table1 / "results", "lmc", name, ["cityscapes", "idd"])


@pytest.mark.slow
def test_rebasin_study_runs_across_training_snapshots(after_table1, mini_data):
    result = _run(after_table1, mini_data, "rebasin")
    [pdf] = [Path(f) for f in result["files"] if Path(f).suffix == ".pdf"]
    assert pdf.read_bytes()[:5] == b"%PDF-"
    rows = read_csv_rows(pdf.with_suffix(".csv"))
    value = {(int(r["iteration"]), r["quantity"]): float(r["value"]) for r in rows}
    assert {i for i, _ in value} == {1, 2}  # scale.snapshot_iters above
    for iteration in (1, 2):
        for method in ("model_a", "model_b", "model_b_permuted", "midpoint", "rebasin"):
            assert 0.0 <= value[iteration, f"H_{method}"] <= 100.0
        # Permuting B's hidden units is a reparametrisation: the function, hence H, is unchanged.
        assert value[iteration, "H_model_b_permuted"] == pytest.approx(value[iteration, "H_model_b"], abs=1e-3)
        fraction = value[iteration, "nonidentity_fraction"]
        assert 0.0 <= fraction <= 1.0
        if fraction == 0.0:  # the identity permutation: re-basin is the midpoint merge itself
            assert value[iteration, "H_rebasin"] == value[iteration, "H_midpoint"]
            assert value[iteration, "l2_after"] == value[iteration, "l2_before"]
        else:  # matching exists to bring B closer to A
            assert value[iteration, "l2_after"] < value[iteration, "l2_before"]


@pytest.mark.slow
def test_studies_run_as_a_hydra_multirun(after_table1, mini_data, tmp_path):
    """``-m study=table1,table4`` with the basic launcher; trained models are reused."""
    before = {p: t for p, t in _manifest_times(after_table1 / "runs").items() if "/train/" in p}
    assert len(before) == 3  # table1's models, which table4 shares two of
    train_list = "[" + ",".join(f"'{o}'" for o in TINY_TRAIN) + "]"
    overrides = _overrides(after_table1, mini_data, "table1,table4", (0,), results=str(tmp_path / "sweep_results"))
    argv = [sys.executable, "-m", "experiments.reproduce", "-m", *overrides, f"scale.train_overrides={train_list}",
            f"hydra.sweep.dir={tmp_path / 'multirun'}"]
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for study in ("table1", "table4"):
        assert (tmp_path / "sweep_results" / study / f"{study}.md").exists()
        assert json.loads((tmp_path / "sweep_results" / study / "artifacts.json").read_text())["study"] == study
    after = {p: t for p, t in _manifest_times(after_table1 / "runs").items() if "/train/" in p}
    assert {p: after[p] for p in before} == before  # reused, not retrained
    assert len(after) == len(before) + 2  # table4's LayerNorm pair
