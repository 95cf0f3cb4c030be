"""The pieces of the merging-methods study: per-domain statistics, the output ensemble,
merge cost measurement, the study's rules and its verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import fusion
from analysis.claims import method_claims
from experiments.inference import sources
from experiments.infra.measure import measured
from experiments.infra.runs import finish_run, start_run
from experiments.models.segmentors import build_segmentor, decoder_logits
from experiments.pipeline import methods
from experiments.pipeline.statistics import image_indices, run_statistic, statistic_file, unlabelled_batches


def _run_folder(root: Path, name: str, seed: int, target: str = "cityscapes", segmentor: str = "mini_r18") -> Path:
    """A complete training-run folder of a randomly initialised segmentor (student network)."""
    torch.manual_seed(seed)
    model = build_segmentor(segmentor)
    run = root / name
    start_run(run, "train", {"seed": seed}, stand_in=True)
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, run / "model.pth")
    finish_run(run, {"model": run / "model.pth"}, targets=[target],
               model={"segmentor": segmentor, "overrides": {}, "network": "student"})
    return run


def test_image_indices_spread_over_the_split():
    assert image_indices(10, 3) == [0, 4, 9] or image_indices(10, 3) == [0, 5, 9]
    assert image_indices(4, 10) == [0, 1, 2, 3]
    assert image_indices(0, 3) == []


def test_unlabelled_batches_read_the_training_split_without_labels(mini_data):
    batches, paths = unlabelled_batches("cityscapes", mini_data, images=5, batch_size=2)
    assert sum(b.shape[0] for b in batches) == 5 and [b.shape[0] for b in batches] == [2, 2, 1]
    assert all("/train/" in p and "leftImg8bit" in p for p in paths)
    assert all(b.dtype == torch.float32 and b.shape[1] == 3 for b in batches)
    with pytest.raises(ValueError, match="images and batch_size"):
        unlabelled_batches("cityscapes", mini_data, images=0, batch_size=2)


@pytest.mark.parametrize("kind, stored, segmentor", [("regmean", "regmean_gram", "mini_r18"),
                                                     ("fisher", "fisher", "mini_r18"),
                                                     ("regmean", "regmean_gram", "mini_lite0"),
                                                     ("fisher", "fisher", "mini_lite0")])
def test_a_statistic_is_computed_on_its_domain_and_its_size_recorded(tmp_path, mini_data, kind, stored, segmentor):
    # mini_lite0 carries non-persistent buffers (its fixed input normalisation)
    run = _run_folder(tmp_path, "member", 0, segmentor=segmentor)
    cfg = {"model": str(run), "domain": "cityscapes", "kind": kind, "images": 3, "batch_size": 2,
           "data_root": str(mini_data), "run_dir": str(tmp_path / "statistic"), "fisher": {"labels": "argmax"}}
    out = run_statistic(cfg)
    statistic = fusion.load_statistic(statistic_file(out), stored)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["statistic_bytes"] == fusion.statistic_bytes(statistic) > 0
    assert len(manifest["images"]) == 3 and manifest["domain"] == "cityscapes"
    state = sources.from_run(run).state()
    assert set(statistic) <= set(state)
    if kind == "fisher":  # one entry per trainable parameter, same shape, non-negative
        assert all(statistic[k].shape == state[k].shape and bool((statistic[k] >= 0).all()) for k in statistic)
    else:  # one d x d Gram matrix per conv/linear weight, symmetric
        gram = statistic["decode_head.conv_seg.weight"]
        assert gram.shape[0] == gram.shape[1] == state["decode_head.conv_seg.weight"][0].numel()
        torch.testing.assert_close(gram, gram.T)
    with pytest.raises(ValueError, match="kind"):
        run_statistic({**cfg, "kind": "gram", "run_dir": str(tmp_path / "other")})


def test_the_output_ensemble_averages_the_members_probabilities():
    torch.manual_seed(0)
    members = [build_segmentor("mini_r18").eval() for _ in range(2)]
    x = torch.randn(2, 3, 32, 64)
    ensemble = sources.OutputEnsemble(members).eval()
    with torch.no_grad():
        expected = torch.stack([decoder_logits(m, x).softmax(1) for m in members]).mean(0)
        got = decoder_logits(ensemble, x)
        torch.testing.assert_close(got.exp(), expected, rtol=1e-5, atol=1e-6)
        single = decoder_logits(sources.OutputEnsemble(members[:1]), x)
        torch.testing.assert_close(single, decoder_logits(members[0], x).log_softmax(1), rtol=1e-4, atol=1e-5)


def test_the_ensemble_source_scores_every_domain_with_all_members(tmp_path):
    runs = [_run_folder(tmp_path, f"m{i}", i) for i in range(2)]
    source = sources.ensemble_of(runs)
    assert set(source.inputs().values()) == {r / "model.pth" for r in runs}
    assert isinstance(source.build(source.state(source.weights_for("idd"))), sources.OutputEnsemble)


def test_measured_sees_what_the_step_allocates():
    before = torch.ones(8 * 2 ** 20)  # 32 MiB held before the step: not the step's
    with measured() as cost:
        inside = torch.ones(16 * 2 ** 20)  # 64 MiB
        inside += 1
    assert cost.seconds > 0
    if cost.peak_bytes is not None:  # Linux: measured
        assert 56 * 2 ** 20 <= cost.peak_bytes <= 140 * 2 ** 20
    del before, inside


def test_study_rules():
    assert methods.resolve_overrides({"scale": "1/K", "seed": 3}, 4) == {"scale": 0.25, "seed": 3}
    assert methods.applies({"members": 2}, 2) and not methods.applies({"members": 2}, 4)
    assert methods.applies({}, 4)
    assert methods.kind_of({"fusion": "ties"}) == "nothing"
    assert methods.kind_of({"fusion": "regmean", "statistic": "regmean"}) == "statistic"
    assert methods.kind_of({"fusion": "adamerging"}) == "images"
    assert methods.kind_of({"ensemble": True}) == "ensemble"


def test_method_claims_pair_each_method_with_the_baseline_per_seed():
    records = []
    for seed in range(3):
        for method, shift in (("midpoint", 0.0), ("better", 5.0), ("same", 0.1 * (seed - 1))):
            for domain, value in (("cityscapes", 40.0 + seed), ("idd", 30.0 + seed)):
                records.append({"setting": "two", "method": method, "seed": seed, "domain": domain,
                                "miou": value + shift})
    verdicts = method_claims(records, {"two": ["cityscapes", "idd"]}, "midpoint", {"better": "Better"})
    assert set(verdicts) == {("better", "two"), ("same", "two")}
    assert verdicts[("better", "two")].verdict == "held" and "Better H beats" in verdicts[("better", "two")].claim
    assert verdicts[("same", "two")].verdict == "inconclusive"
