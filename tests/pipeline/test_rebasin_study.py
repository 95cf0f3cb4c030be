"""The Git Re-Basin study end to end at a tiny budget: snapshots, CSVs, figure, skip on re-run."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

import fusion
from experiments.infra.runs import read_manifest
from experiments.models.segmentors import build_segmentor, normalize, segment
from experiments.pipeline import stages, studies
from experiments.pipeline.rebasin import backbone_permutation_spec
from experiments.selftraining.loop import missing_snapshots, snapshot_path, train

ROOT = Path(__file__).resolve().parents[2]
TINY = ["segmentor=mini_r18", "schedule.max_iters=4", "schedule.val_interval=0", "schedule.val_images=0", "schedule.checkpoint_interval=2",
        "logger.progress=false", "pretrain.steps=2", "pretrain.batch_size=4", "pretrain.crop=32"]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _student(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    return {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}


@pytest.fixture(scope="module")
def study(tmp_path_factory, mini_data):
    tmp = tmp_path_factory.mktemp("rebasin")
    overrides = ["study=rebasin", "scale=smoke", "seeds=[0]", "workers=1", f"runs_root={tmp / 'runs'}",
                 f"results_dir={tmp / 'results'}", f"scale.data_root={mini_data}", "scale.snapshot_iters=[2,4]",
                 "logger.wandb_mode=none"]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("reproduce", overrides=overrides)
        with open_dict(cfg):
            cfg.scale.train_overrides = [*cfg.scale.train_overrides, *TINY]
        stages.ensure_data(cfg)
        # One model trained earlier without snapshots (as reproduce-table1 leaves it).
        plain = stages.compose_train(cfg, ["target=idd"], 0)
        earlier = train(plain)
        assert not (earlier / "snapshots").exists()
        earlier_weights = _student(earlier / "model.pth")
        first = studies.run_study(cfg)
        stamps = {p: p.stat().st_mtime_ns for p in (tmp / "runs").rglob("*") if p.is_file()}
        second = studies.run_study(cfg)
    return {"cfg": cfg, "tmp": tmp, "first": first, "second": second, "stamps": stamps, "earlier": earlier,
            "earlier_weights": earlier_weights}


def test_snapshots_are_saved_and_a_finished_run_lacking_them_is_retrained_to_the_same_weights(study):
    run = study["earlier"]
    for k in (2, 4):
        saved = torch.load(snapshot_path(run, k), map_location="cpu", weights_only=False)
        assert saved["meta"]["iteration"] == k and saved["meta"]["saved_network"] == "student"
        assert any(key.startswith("ema_model.") for key in saved["state_dict"])
    # Training is a function of (seed, iteration): the replay ends at the same weights.
    final, last_snapshot = _student(run / "model.pth"), _student(snapshot_path(run, 4))
    assert final.keys() == study["earlier_weights"].keys()
    assert all(torch.equal(final[k], study["earlier_weights"][k]) for k in final)
    assert all(torch.equal(final[k], last_snapshot[k]) for k in final)
    assert not all(torch.equal(final[k], _student(snapshot_path(run, 2))[k]) for k in final)


def test_snapshot_iterations_outside_the_schedule_are_refused(study):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        bad = compose("train", overrides=["schedule=smoke", "schedule.snapshot_iters=[0,7]"])
    with pytest.raises(ValueError, match=r"snapshot_iters: \[0, 7\] are not iterations in 1\.\.6"):
        missing_snapshots(bad, study["tmp"] / "nowhere")


def test_the_csvs_hold_every_snapshot_method_and_domain(study):
    run = study["tmp"] / "runs" / "rebasin" / "rebasin_s0"
    manifest = read_manifest(run)
    assert manifest["status"] == "complete" and set(manifest["outputs"]) == {"scores", "matching"}
    matching = _rows(run / "matching.csv")
    assert [int(r["iteration"]) for r in matching] == [2, 4]
    for r in matching:
        assert 0.0 <= float(r["nonidentity_fraction"]) <= 1.0
        # Weight matching maximises <A, P(B)>, i.e. minimises ||A - P(B)|| over the matched parameters.
        assert float(r["l2_after"]) <= float(r["l2_before"]) * (1 + 1e-9)
        assert float(r["l2_before"]) > 0
    scores = _rows(run / "scores.csv")
    methods = {"model_a", "model_b", "model_b_permuted", "midpoint", "rebasin"}
    assert {(int(r["iteration"]), r["method"], r["domain"]) for r in scores} == {
        (k, m, d) for k in (2, 4) for m in methods for d in ("cityscapes", "idd", "H")}
    assert len(scores) == 2 * 5 * 3
    value = {(int(r["iteration"]), r["method"], r["domain"]): float(r["miou"]) for r in scores}
    for r in matching:
        k = int(r["iteration"])
        for d in ("cityscapes", "idd"):
            # A permutation does not change what the network computes (up to float rounding).
            assert value[(k, "model_b_permuted", d)] == pytest.approx(value[(k, "model_b", d)], abs=0.5)
            if float(r["nonidentity_fraction"]) == 0.0:
                assert value[(k, "rebasin", d)] == value[(k, "midpoint", d)]
        h = 2 / (1 / value[(k, "midpoint", "cityscapes")] + 1 / value[(k, "midpoint", "idd")])
        assert value[(k, "midpoint", "H")] == pytest.approx(h, abs=1e-3)


def test_the_figure_and_its_csv_are_written(study):
    files = [Path(f) for f in study["first"]["files"]]
    pdf = study["tmp"] / "results" / "rebasin" / "rebasin_vs_midpoint.pdf"
    assert pdf in files and pdf.with_suffix(".csv") in files
    assert pdf.read_bytes()[:5] == b"%PDF-"
    rows = _rows(pdf.with_suffix(".csv"))
    quantities = {r["quantity"] for r in rows}
    assert {"H_midpoint", "H_rebasin", "nonidentity_fraction", "l2_before", "l2_after"} <= quantities


def test_a_second_run_trains_evaluates_and_matches_nothing_again(study):
    changed = [p for p, stamp in study["stamps"].items() if p.stat().st_mtime_ns != stamp]
    assert not changed, f"re-run rewrote {changed[:5]}"
    assert [str(f) for f in study["second"]["files"]] == [str(f) for f in study["first"]["files"]]


@pytest.mark.parametrize("segmentor", ["mini_r18", "mini_lite0"])
def test_the_backbone_spec_permutes_the_backbone_without_changing_its_function(segmentor):
    torch.manual_seed(0)
    model = build_segmentor(segmentor).eval()
    for name, buffer in model.named_buffers():
        if name.endswith("running_var"):
            buffer.uniform_(0.5, 2.0)
    state = model.state_dict()
    spec = backbone_permutation_spec(model, state)
    sizes = {name: state[key].shape[axis] for name, [(key, axis), *_] in spec.perm_to_axes.items()}
    perm = {name: torch.randperm(n) for name, n in sizes.items()}
    permuted = fusion.apply_permutation(spec, perm, state)
    assert fusion.permutation_fraction_nonidentity(perm) > 0.5
    assert all(torch.equal(permuted[k], state[k]) for k in state if k.startswith("decode_head."))
    x = normalize(torch.randint(0, 256, (2, 32, 64, 3), dtype=torch.uint8))
    with torch.inference_mode():
        expected = segment(model, x)
        model.load_state_dict(permuted)
        scale = expected.abs().max()
        assert torch.allclose(segment(model, x), expected, atol=1e-4 * max(1.0, float(scale)), rtol=1e-4)
