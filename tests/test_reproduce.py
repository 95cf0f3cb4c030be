"""Every study of the paper runs end to end at a tiny budget; finished steps are skipped,
an interrupted training resumes, and the pipeline runs as a Hydra multirun.

One miniature and one runs folder serve the whole module, so models shared between
studies (same deterministic run name) are trained once: table1's two single-target
models are table4's BatchNorm pair, table3's C and I, and the LMC study's endpoints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import experiments.checkpointing as ckpt
import experiments.train as train_module
from analysis.figures import read_csv_rows
from analysis.metrics import harmonic_mean
from experiments.reproduce import run_study
from experiments.runs import STAND_IN_NOTE, is_complete, read_manifest
from experiments.train import run_name

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
# Two iterations of the full recipe from a two-step pretraining: runs everything, learns nothing.
TINY_TRAIN = ["schedule=smoke", "schedule.max_iters=2", "schedule.val_interval=0", "schedule.val_images=2",
              "schedule.checkpoint_interval=1", "segmentor=${scale.segmentors.main}",
              "data_root=${scale.data_root}", "logger=none", "logger.progress=false", "resources=cpu_mini",
              "pretrain.steps=2", "pretrain.batch_size=4", "pretrain.crop=32"]
ITERS = 2


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reproduce")


def _overrides(root: Path, study: str, seeds: tuple[int, ...], results: str = "results") -> list[str]:
    return [f"study={study}", "scale=smoke", f"seeds=[{','.join(map(str, seeds))}]",
            f"runs_root={root / 'runs'}", f"results_dir={root / results}", f"scale.data_root={root / 'data'}",
            "scale.generate.n_val=4", "scale.snapshot_iters=[1,2]", "workers=1"]


def _run(root: Path, study: str, seeds: tuple[int, ...] = (0,)) -> dict:
    """run_study as ``python -m experiments.reproduce`` would, with the tiny training budget."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("reproduce", overrides=_overrides(root, study, seeds))
        cfg.scale.train_overrides = TINY_TRAIN
        return run_study(cfg)


@pytest.fixture
def count_iterations(monkeypatch) -> list[int]:
    """Training iterations run from now on (one entry per call of the recipe's step)."""
    calls: list[int] = []
    step = train_module.train_step

    def counted(*args, **kwargs):
        calls.append(1)
        return step(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", counted)
    return calls


def _to_train(root: Path, models: list[tuple[str, str]]) -> int:
    """How many of these (target, segmentor) seed-0 models have no finished run folder yet."""
    folders = [root / "runs" / "train" / run_name("gta", t, seg, "daformer", "shared", 0) for t, seg in models]
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


def test_table1_runs_and_writes_tables_figures_and_report(workspace, count_iterations):
    result = _run(workspace, "table1")
    methods = {"stda_cityscapes", "stda_idd", "data_combination", "merged_first_buffers", "merged_pooled",
               "merged_encoder_only"}
    mious = _by_method(result["records"])
    assert set(mious) == methods and all(set(m) == {"cityscapes", "idd"} for m in mious.values())
    assert len(count_iterations) == 3 * ITERS
    results = workspace / "results"
    _check_table(results, "table1", methods, ["cityscapes", "idd"])
    rows = _check_curve(results, "table1", "shared_pretraining", ["cityscapes", "idd"])
    # The curve's endpoints are the two trained models themselves (alpha=0: stda_idd).
    for alpha, model in ((0.0, "stda_idd"), (1.0, "stda_cityscapes")):
        for domain in ("cityscapes", "idd"):
            [point] = [float(r["miou"]) for r in rows if float(r["alpha"]) == alpha and r["domain"] == domain]
            assert point == pytest.approx(mious[model][domain], abs=1e-3)
    assert {Path(f).name for f in result["files"]} >= {"table1.md", "table1.tex", "table1.csv",
                                                       "lmc_shared_pretraining.pdf", "lmc_shared_pretraining.csv"}


def _manifest_times(runs: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in runs.rglob("manifest.json")}


def test_a_finished_study_is_skipped_step_by_step(workspace, monkeypatch):
    first = _run(workspace, "table1")  # table1 already ran in this module (or runs now)
    before = _manifest_times(workspace / "runs")

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished step ran again")

    # Training, merging and both evaluators must all come from the run folders now.
    monkeypatch.setattr(train_module, "train", forbidden)
    monkeypatch.setattr("experiments.merge.merge_states", forbidden)
    monkeypatch.setattr("experiments.stages.evaluate_model", forbidden)
    monkeypatch.setattr("experiments.stages.evaluate_path", forbidden)
    second = _run(workspace, "table1")
    assert second["records"] == first["records"]
    assert _manifest_times(workspace / "runs") == before


class Interrupted(Exception):
    """Stands for the job being killed right after it saved a checkpoint."""


def test_an_interrupted_training_is_resumed_not_restarted(workspace, monkeypatch, count_iterations):
    save = ckpt.save_checkpoint

    def save_then_die(directory, state):
        path = save(directory, state)
        if state["iteration"] == 1:
            raise Interrupted(directory)
        return path

    monkeypatch.setattr(ckpt, "save_checkpoint", save_then_die)
    with pytest.raises(Interrupted) as info:
        _run(workspace, "table1", seeds=(1,))
    run_dir = Path(str(info.value)).parent
    assert not is_complete(run_dir) and not (run_dir / "model.pth").exists()
    assert ckpt.load_checkpoint(run_dir / "checkpoints")["iteration"] == 1
    monkeypatch.setattr(ckpt, "save_checkpoint", save)
    count_iterations.clear()
    result = _run(workspace, "table1", seeds=(1,))
    # Three models of two iterations; the interrupted one only needed its second.
    assert len(count_iterations) == 3 * ITERS - 1
    assert is_complete(run_dir) and json.loads((run_dir / "metrics.json").read_text())["iterations"] == ITERS
    assert {r["seed"] for r in result["records"]} == {1}


@pytest.mark.slow
def test_table4_reuses_table1_models_and_merges_both_backbones(workspace, count_iterations):
    # bn_* are table1's STDA models (same run names): after table1 only the LayerNorm pair trains.
    models = [(t, seg) for seg in ("mini_r18", "mini_mitb0") for t in ("cityscapes", "idd")]
    untrained = _to_train(workspace, models)
    result = _run(workspace, "table4")
    methods = {f"{n}_{m}" for n in ("bn", "ln") for m in ("cityscapes", "idd", "midpoint", "pooled")}
    assert set(_by_method(result["records"])) == methods
    assert len(count_iterations) == untrained * ITERS
    _check_table(workspace / "results", "table4", methods, ["cityscapes", "idd"])
    ln = read_manifest(workspace / "runs" / "merge" / "table4_ln_pooled_s0")
    assert ln["status"] == "complete"


@pytest.mark.slow
def test_table3_merges_every_subset_of_four_models(workspace, count_iterations):
    untrained = _to_train(workspace, [(t, "mini_r18") for t in ("cityscapes", "idd", "acdc", "darkzurich")])
    result = _run(workspace, "table3")
    assert len(count_iterations) == untrained * ITERS  # C and I are table1's models
    domains = ["cityscapes", "idd", "acdc", "darkzurich"]
    mious = _by_method(result["records"])
    assert len(mious) == 4 + 11 and all(set(m) == set(domains) for m in mious.values())
    assert {"C", "I", "A", "D", "C+I+A+D", "I+D"} <= set(mious)
    _check_table(workspace / "results", "table3", set(mious), domains)


@pytest.mark.slow
def test_lmc_study_draws_every_panel(workspace):
    _run(workspace, "lmc")
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        curves = compose("reproduce", overrides=["study=lmc"]).study.curves
    for name in curves:
        _check_curve(workspace / "results", "lmc", name, ["cityscapes", "idd"])


@pytest.mark.slow
@pytest.mark.skipif(not (CONFIGS / "study" / "rebasin.yaml").exists(), reason="no rebasin study config")
def test_rebasin_study_runs_across_training_snapshots(workspace):
    result = _run(workspace, "rebasin")
    [pdf] = [Path(f) for f in result["files"] if Path(f).suffix == ".pdf"]
    assert pdf.read_bytes()[:5] == b"%PDF-"
    rows = read_csv_rows(pdf.with_suffix(".csv"))
    value = {(int(r["iteration"]), r["quantity"]): float(r["value"]) for r in rows}
    assert {i for i, _ in value} == {1, 2}  # scale.snapshot_iters above
    for iteration in (1, 2):
        # Permuting B's hidden units is a reparametrisation: the function, hence H, is unchanged.
        assert value[iteration, "H_model_b_permuted"] == pytest.approx(value[iteration, "H_model_b"], abs=1e-3)
        assert 0.0 <= value[iteration, "nonidentity_fraction"] <= 1.0


@pytest.mark.slow
def test_studies_run_as_a_hydra_multirun(workspace, tmp_path):
    """``-m study=table1,table4`` with the basic launcher; trained models are reused."""
    before = {p: t for p, t in _manifest_times(workspace / "runs").items() if "/train/" in p}
    train_list = "[" + ",".join(f"'{o}'" for o in TINY_TRAIN) + "]"
    overrides = _overrides(workspace, "table1,table4", (0,), results=str(tmp_path / "results"))
    argv = [sys.executable, "-m", "experiments.reproduce", "-m", *overrides, f"scale.train_overrides={train_list}",
            f"hydra.sweep.dir={tmp_path / 'multirun'}"]
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for study in ("table1", "table4"):
        assert (tmp_path / "results" / study / f"{study}.md").exists()
        assert json.loads((tmp_path / "results" / study / "artifacts.json").read_text())["study"] == study
    after = {p: t for p, t in _manifest_times(workspace / "runs").items() if "/train/" in p}
    if before:  # earlier tests trained these models: the sweep must not have touched them
        assert {p: after[p] for p in before} == before
