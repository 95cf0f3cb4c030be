"""Test-time adaptation: exact identities of BN-adapt, what Tent / EATA / SAR may touch,
SAR's filter and recovery, batch size 1 per normalisation, streams and the runner."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from experiments.tta import (EATA, SAR, BNAdapt, NoAdaptation, Tent, build_adapter,
                             collect_norm_params, entropy, entropy_margin)
from experiments.tta.corruptions import CORRUPTIONS, corrupt
from experiments.tta.runner import run_stream
from experiments.tta.sar import reliable_entropy
from experiments.tta.streams import build_streams, label_imbalanced, mixed

C = 5


def norm(kind: str, channels: int) -> nn.Module:
    return {"bn": nn.BatchNorm2d(channels), "gn": nn.GroupNorm(2, channels),
            "ln": nn.GroupNorm(1, channels)}[kind]


def classifier(kind: str, pooled_bn: bool = False, seed: int = 0) -> nn.Module:
    """A small CNN; ``pooled_bn`` adds a BatchNorm1d after global pooling (one value per
    channel per image), ``kind == "ln"`` also uses nn.LayerNorm on the pooled features."""
    torch.manual_seed(seed)
    tail = [nn.BatchNorm1d(8)] if pooled_bn else [nn.LayerNorm(8)] if kind == "ln" else []
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), norm(kind, 8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, stride=2, padding=1), norm(kind, 8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), *tail, nn.Linear(8, C))
    with torch.no_grad():  # non-trivial affine params and source statistics
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        model[-1].weight.mul_(30)
    return model


def images(n: int, seed: int = 1, size: int = 8) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 1.5 + 0.3


def frozen_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every state entry except the norm affine parameters."""
    _, names = collect_norm_params(model)
    return {k: v.clone() for k, v in model.state_dict().items() if k not in names}


# --- BN-adapt -----------------------------------------------------------------------------

def test_bn_adapt_equals_forward_with_batch_statistics():
    model = classifier("bn")
    reference = copy.deepcopy(model).train()  # BatchNorm in train mode = batch statistics
    buffers = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    x = images(6)
    expected = reference(x)
    adapter = BNAdapt(model)
    out = adapter(x)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    for k, v in buffers.items():  # the source statistics are not touched
        assert torch.equal(model.state_dict()[k], v), k
    assert not torch.allclose(out, classifier("bn").eval()(x), atol=1e-3)  # differs from source
    # layer by layer: the adapted BN computes F.batch_norm(training=True)
    layer, h = model[1], model[0](x)
    torch.testing.assert_close(layer(h), F.batch_norm(h, None, None, layer.weight, layer.bias, True,
                                                      0.0, layer.eps), rtol=0, atol=0)


def test_bn_adapt_prior_blends_source_and_batch_statistics():
    model = classifier("bn")
    layer = model[1]
    h = torch.randn(4, 8, 5, 5)
    mu_s, var_s = layer.running_mean.clone(), layer.running_var.clone()
    BNAdapt(model, prior=12.0)
    a = 12.0 / (12.0 + 4)
    mu = a * mu_s + (1 - a) * h.mean((0, 2, 3))
    var = a * var_s + (1 - a) * h.var((0, 2, 3), unbiased=False)
    expected = (h - mu.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + layer.eps)
    expected = expected * layer.weight.view(1, -1, 1, 1) + layer.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(layer(h), expected, rtol=1e-5, atol=1e-5)
    source = classifier("bn").eval()
    far = classifier("bn")
    BNAdapt(far, prior=1e12)
    x = images(4)
    torch.testing.assert_close(far(x), source(x), rtol=1e-4, atol=1e-4)


# --- what the gradient methods may change --------------------------------------------------

@pytest.mark.parametrize("method", ["tent", "eata", "sar"])
@pytest.mark.parametrize("kind", ["bn", "gn", "ln"])
def test_only_norm_affine_parameters_change(method, kind):
    model = classifier(kind)
    before = frozen_state(model)
    params, names = collect_norm_params(model)
    affine_before = [p.detach().clone() for p in params]
    adapter = build_adapter(method, model, C, batch_size=8, lr=0.05,
                            fisher_batches=[images(4, seed=9)] if method == "eata" else None,
                            **({"reset_threshold": None} if method == "sar" else {}))
    for seed in range(3):
        adapter(images(8, seed=seed))
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), f"{method} changed {k}"
    moved = [not torch.equal(p, q) for p, q in zip(params, affine_before)]
    assert any(moved), f"{method} did not update any norm affine parameter"


# --- SAR --------------------------------------------------------------------------------------

def test_sar_filter_keeps_exactly_the_low_entropy_samples():
    logits = torch.tensor([[9.0, 0, 0, 0, 0], [0.1, 0, 0, 0, 0], [4.0, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    ent, keep = reliable_entropy(logits, entropy_margin(C))
    assert entropy_margin(C) == pytest.approx(0.4 * math.log(C))
    assert keep.tolist() == (ent < 0.4 * math.log(C)).tolist() == [True, False, True, False]


def test_sar_update_ignores_high_entropy_samples():
    """An update on a batch with unreliable samples equals the update on its reliable part
    alone (GroupNorm: per-sample outputs do not depend on the rest of the batch)."""
    model = classifier("gn")
    x = torch.cat([images(16, seed=3), images(16, seed=4) * 0.02])  # small inputs -> flat logits
    margin = entropy_margin(C)
    with torch.no_grad():
        ent = entropy(model.eval()(x))
    low = ent < margin
    assert 0 < int(low.sum()) < len(x), "need both reliable and unreliable samples"
    full, part = copy.deepcopy(model), copy.deepcopy(model)
    SAR(full, C, lr=0.1, reset_threshold=None)(x)
    SAR(part, C, lr=0.1, reset_threshold=None)(x[low])
    for (k, a), b in zip(full.state_dict().items(), part.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)
    assert not all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), model.state_dict().values()))


def test_sar_recovery_restores_source_weights_bit_for_bit():
    model = classifier("bn")
    source = copy.deepcopy(model.state_dict())
    adapter = SAR(model, C, lr=0.5, reset_threshold=1e9)  # any loss EMA is below: reset every step
    adapter(images(8))
    assert adapter.recoveries == 1 and adapter.ema is None
    for k, v in source.items():
        assert torch.equal(model.state_dict()[k], v), k
    assert adapter.optimizer.state_dict()["state"] == {}
    never = SAR(classifier("bn"), C, lr=0.5, reset_threshold=None)
    for seed in range(3):
        never(images(8, seed=seed))
    assert never.recoveries == 0 and never.ema is not None


def test_sar_reset_threshold_is_compared_with_the_loss_ema():
    adapter = SAR(classifier("gn"), C, lr=1e-4, reset_threshold=0.0)
    losses = []
    for seed in range(3):
        adapter(images(8, seed=seed))
        losses.append(adapter.last_loss)
    expected = losses[0]
    for value in losses[1:]:
        expected = 0.9 * expected + 0.1 * value
    assert adapter.ema == pytest.approx(expected)
    adapter.reset_threshold = adapter.ema + 1e-6
    adapter(images(8, seed=7))
    assert adapter.recoveries == 1


# --- EATA -------------------------------------------------------------------------------------

def test_eata_skips_redundant_batches():
    model = classifier("ln")
    adapter = EATA(model, C, lr=0.1, redundancy_eps=0.05)
    x = images(1, seed=2).repeat(4, 1, 1, 1)
    adapter(x)
    after_first = copy.deepcopy(model.state_dict())
    adapter(x)  # cosine similarity ~1 with the moving average: every sample is redundant
    for k, v in after_first.items():
        assert torch.equal(model.state_dict()[k], v), k


# --- batch size 1 -----------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["source", "bn_adapt", "tent", "eata", "sar"])
@pytest.mark.parametrize("kind", ["gn", "ln"])
def test_batch_size_one_works_on_batch_free_norms(method, kind):
    adapter = build_adapter(method, classifier(kind), C, batch_size=1,
                            fisher_batches=[images(1, seed=5)] if method == "eata" else None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for seed in range(3):
            out = adapter(images(1, seed=seed))
    assert out.shape == (1, C) and torch.isfinite(out).all()


@pytest.mark.filterwarnings("ignore:.*statistics of one image")
@pytest.mark.parametrize("method", ["bn_adapt", "tent", "eata", "sar"])
def test_batch_size_one_fails_clearly_with_pooled_batchnorm(method):
    adapter = build_adapter(method, classifier("bn", pooled_bn=True), C, batch_size=1)
    with pytest.raises(ValueError, match=r"BatchNorm layer '8'.*one value per channel"):
        adapter(images(1))


def test_batch_size_one_batchnorm_warns_on_feature_maps_and_prior_makes_it_defined():
    adapter = BNAdapt(classifier("bn"))  # BatchNorm2d on 8x8 maps: 64 values per channel
    with pytest.warns(UserWarning, match="statistics of one image"):
        adapter(images(1))
    blended = BNAdapt(classifier("bn", pooled_bn=True), prior=16.0)  # prior > 0: defined
    assert torch.isfinite(blended(images(1))).all()


def test_segmentor_bn_adapt_and_batch_size_one():
    from experiments.models.segmentors import build_segmentor, segment

    torch.manual_seed(0)
    model = build_segmentor("mini_r18", decode_head={"dropout_ratio": 0.0})
    batch = torch.randn(3, 3, 32, 64)
    expected = segment(copy.deepcopy(model).train(), batch)  # BatchNorm on batch statistics
    torch.testing.assert_close(BNAdapt(model, segment)(batch), expected, rtol=0, atol=1e-5)
    x = torch.randn(1, 3, 32, 64)
    gn = SAR(build_segmentor("mini_r18", norm="gn"), 19, segment, batch_size=1)
    assert gn(x).shape == (1, 19, 32, 64)
    bn = Tent(build_segmentor("mini_r18"), segment, batch_size=1)
    with pytest.warns(UserWarning, match="batch size 1 with BatchNorm"):
        assert torch.isfinite(bn(x)).all()


# --- streams, corruptions, runner ------------------------------------------------------------

def test_label_imbalanced_stream_orders_by_class():
    samples = [{"image": None, "label": c, "i": i} for i, c in enumerate([2, 0, 1] * 10)]
    ordered = [s["label"] for s in label_imbalanced(samples, math.inf)]
    assert ordered == sorted(ordered)
    drift = [s["label"] for s in label_imbalanced(samples, 50.0, seed=1)]
    assert sorted(drift) == sorted(ordered) and np.mean(drift[:10]) < np.mean(drift[-10:])
    assert sorted(s["i"] for s in mixed({"a": samples[:5], "b": samples[5:]}, 0)) == list(range(30))
    streams = build_streams("batch1", {"a": samples[:4], "b": samples[4:6]}, batch_size=8)
    assert [(n, len(s), b) for n, s, b in streams] == [("a", 4, 1), ("b", 2, 1)]


def test_corruptions_keep_shape_are_deterministic_and_grow_with_severity():
    x = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    assert len(CORRUPTIONS) == 15
    for name in CORRUPTIONS:
        out = corrupt(x, name, 3, rng=4)
        assert out.shape == x.shape and out.dtype == np.uint8
        assert np.array_equal(out, corrupt(x, name, 3, rng=4)), name
    flat = np.full((32, 48, 3), 128, np.uint8)
    noise = [np.abs(corrupt(flat, "gaussian_noise", s, 0).astype(int) - 128).mean() for s in range(1, 6)]
    assert noise == sorted(noise)
    with pytest.raises(ValueError, match="severity"):
        corrupt(x, "fog", 6)


def test_runner_scores_match_a_direct_evaluation():
    model = classifier("gn")
    rng = np.random.default_rng(0)
    samples = [{"image": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), "label": int(rng.integers(C)),
                "domain": "d"} for _ in range(10)]
    prepare = lambda a: torch.as_tensor(a).permute(0, 3, 1, 2).float() / 64 - 2  # noqa: E731
    result = run_stream(NoAdaptation(model), samples, 4, C, prepare)
    with torch.no_grad():
        pred = model(prepare(np.stack([s["image"] for s in samples]))).argmax(1).numpy()
    accuracy = 100 * np.mean(pred == np.array([s["label"] for s in samples]))
    assert result["metric"] == pytest.approx(accuracy)
    assert [t["images"] for t in result["trace"]] == [4, 8, 10]
    assert result["trace"][-1]["running"] == pytest.approx(accuracy)


@pytest.mark.parametrize("method,kind", [("source", "bn"), ("bn_adapt", "bn"), ("bn_adapt", "gn")])
def test_memo_reuses_predictions_without_changing_results(method, kind):
    """A memo shared between streams gives the results of running the adapter afresh, and
    reads back exactly the batches (no TTA: images) it has already seen."""
    from experiments.tta.runner import Memo

    rng = np.random.default_rng(1)
    samples = [{"image": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), "label": int(rng.integers(C)),
                "id": i} for i in range(12)]
    prepare = lambda a: torch.as_tensor(a).permute(0, 3, 1, 2).float() / 64 - 2  # noqa: E731
    shuffled = [samples[i] for i in rng.permutation(12)]
    memo = Memo(per_image=method == "source")
    for stream, batch_size in ((samples, 4), (shuffled, 3), (samples, 4)):
        fresh = run_stream(build_adapter(method, classifier(kind), C), stream, batch_size, C, prepare)
        hits = memo.hits
        cached = run_stream(build_adapter(method, classifier(kind), C), stream, batch_size, C, prepare, memo=memo)
        assert cached["metric"] == fresh["metric"] and cached["trace"] == fresh["trace"]
    # no TTA: every image of the 2nd and 3rd streams was known; BN-adapt: only the 3rd's batches
    assert memo.hits == (24 if method == "source" else hits + 3)


def test_eata_with_a_shared_fisher_equals_eata_computing_its_own():
    batches = [images(4, seed=s) for s in (2, 3)]
    fisher_model = classifier("bn")
    from experiments.tta.common import configure_model
    from experiments.tta.eata import fisher_information

    configure_model(fisher_model)
    shared = fisher_information(fisher_model, lambda m, x: m(x), [images(4, seed=9)])
    own = EATA(classifier("bn"), C, fisher_batches=[images(4, seed=9)], lr=0.05)
    reused = EATA(classifier("bn"), C, fisher=shared, lr=0.05)
    for x in batches:
        assert torch.equal(own(x), reused(x))
    assert all(torch.equal(a, b) for a, b in zip(own.model.state_dict().values(), reused.model.state_dict().values()))


# --- the experiment end to end, at a tiny budget ------------------------------------------------

@pytest.mark.filterwarnings("ignore:.*statistics of one image")
@pytest.mark.filterwarnings("ignore:test-time adaptation skips")
def test_adapt_experiment_runs_and_reports(mini_data, tmp_path):
    import json

    from hydra import compose, initialize_config_dir

    from experiments.tta.experiment import run_experiment

    configs = str(__import__("pathlib").Path(__file__).resolve().parents[2] / "configs")
    with initialize_config_dir(config_dir=configs, version_base="1.3"):
        cfg = compose("adapt", overrides=[
            "scale=smoke", f"scale.data_root={mini_data}", f"runs_root={tmp_path / 'runs'}",
            f"out_dir={tmp_path / 'out'}", "seeds=[0]", "norms=[bn,gn]", "source_images=5", "fisher_images=1", "images_per_domain=2",
            "source_iterations=2", "source_batch_size=2", "sweep_batch_sizes=[1,2]", "batch_size=2",
            "settings=[single,mixed,batch1,imbalance]", "methods=[source,bn_adapt,tent,eata,sar]"])
    result = run_experiment(cfg)
    out = tmp_path / "out"
    for name in ("tta_main.md", "tta_main.tex", "tta_main.csv", "tta_claims.md", "tta_claims.csv", "tta_domains.csv",
                 "tta_batch_size.pdf", "tta_batch_size.csv", "tta_stream.pdf", "tta_stream.csv", "records.json"):
        assert (out / name).is_file(), name
    records = json.loads((out / "records.json").read_text())
    grid = {(r["model"], r["setting"], r["method"]) for r in records}
    assert len(grid) == 2 * 5 * 5  # models x (4 settings + sweep) x methods
    batch1 = [r for r in records if r["setting"] == "batch1"]
    assert all(r["batch_size"] == 1 for r in batch1)
    # BatchNorm at batch size 1 warns for the batch-statistics methods, GroupNorm never
    assert all(r["warnings"] for r in batch1 if r["norm"] == "bn" and r["method"] != "source")
    assert not any(r["warnings"] for r in batch1 if r["norm"] == "gn")
    assert "stand-in" in (out / "tta_main.md").read_text()
    # the report re-renders from what the run wrote beside it (python -m analysis.tta OUT_DIR)
    from analysis.tta import rerender

    readme = (out / "README.md").read_text()
    rerender(out)
    assert (out / "README.md").read_text() == readme and "lr" in records[0]
    artifacts = json.loads((out / "artifacts.json").read_text())
    assert artifacts["artifacts"][0]["stand_in"] is True  # from the miniature's own manifest
    assert (tmp_path / "runs" / "tta" / "source_bn_s0" / "manifest.json").is_file()
    assert len(result["records"]) == len(records)


# --- the study pipeline's models (experiments.tta.pipeline) -------------------------------

TINY_TRAIN = ["schedule=smoke", "schedule.max_iters=2", "schedule.val_interval=0", "schedule.val_images=2",
              "schedule.checkpoint_interval=1", "segmentor=mini_r18",
              "logger=none", "logger.progress=false", "resources=cpu_mini",
              "pretrain.steps=2", "pretrain.batch_size=4", "pretrain.crop=32"]
PIPELINE_MODELS = [
    {"label": "stda_cityscapes", "run_dir": "train/gta2cs_mini_r18_daformer_shared_s{seed}",
     "build": {"train": ["target=cityscapes"]}},
    {"label": "stda_idd", "run_dir": "train/gta2idd_mini_r18_daformer_shared_s{seed}",
     "build": {"train": ["target=idd"]}},
    {"label": "merged", "run_dir": "merge/table1_merged_pooled_s{seed}",
     "build": {"merge": {"study": "table1", "name": "merged_pooled", "members": ["stda_cityscapes", "stda_idd"],
                         "fusion": "midpoint"}}},
]
ENCODER_ONLY = {"label": "encoder_only_cs", "run_dir": "merge/table1_merged_encoder_only_s{seed}/head0",
                "build": {"merge": {"study": "table1", "name": "merged_encoder_only",
                                    "members": ["stda_cityscapes", "stda_idd"], "fusion": "encoder_only"}}}


def _adapt_config(data_root, tmp_path, extra: list[str]):
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    configs = str(Path(__file__).resolve().parents[2] / "configs")
    with initialize_config_dir(config_dir=configs, version_base="1.3"):
        return compose("adapt", overrides=[
            "scale=smoke", f"scale.data_root={data_root}", f"runs_root={tmp_path / 'runs'}",
            f"out_dir={tmp_path / 'out'}",
            "seeds=[0]", "source_images=5", "fisher_images=1", "images_per_domain=2", "batch_size=2",
            "merging.images_per_domain=2", *extra])


def test_pipeline_entry_resolution_names_missing_run_folders(tmp_path):
    from experiments.tta import pipeline

    entries = [{"label": "merged", "run_dir": "merge/table1_merged_pooled_s{seed}"},
               {"label": "file", "checkpoint": str(tmp_path / "w_s{seed}.pth")}]
    found, missing = pipeline.resolve_all(entries, [0, 2], tmp_path / "runs")
    assert found == {0: [], 2: []}
    assert missing == [tmp_path / "runs/merge/table1_merged_pooled_s0", tmp_path / "w_s0.pth",
                       tmp_path / "runs/merge/table1_merged_pooled_s2", tmp_path / "w_s2.pth"]
    assert "runs/merge/table1_merged_pooled_s2" in pipeline.missing_message(missing)
    with pytest.raises(ValueError, match="exactly one of 'run_dir' or 'checkpoint'"):
        pipeline.resolve({"label": "x"}, 0, tmp_path)
    # a started but unfinished run folder counts as missing, not as a model
    from experiments.infra.runs import start_run

    start_run(tmp_path / "runs/merge/table1_merged_pooled_s0", "merge", {}, stand_in=True)
    assert pipeline.resolve(entries[0], 0, tmp_path / "runs") == tmp_path / "runs/merge/table1_merged_pooled_s0"


@pytest.mark.filterwarnings("ignore:.*statistics of one image")
def test_adapt_experiment_skips_missing_pipeline_models_with_their_names(mini_data, tmp_path):
    from experiments.tta.experiment import run_experiment

    cfg = _adapt_config(mini_data, tmp_path, ["norms=[gn]", "source_iterations=1", "settings=[single]",
                                                   "sweep_batch_sizes=[]", "methods=[source,tent]"])
    with pytest.warns(UserWarning, match="gta2idd_mini_r18_daformer_shared_s0"):
        result = run_experiment(cfg)
    assert {r["part"] for r in result["records"]} == {"norms"}
    assert str(tmp_path / "runs/merge/table1_merged_pooled_s0") in (tmp_path / "out/README.md").read_text()


@pytest.mark.filterwarnings("ignore:.*statistics of one image")
def test_merged_model_of_a_tiny_pipeline_run_loads_and_adapts(mini_data, tmp_path):
    """build_missing trains two single-target models and merges them through the pipeline;
    the merged model then loads from its run folder's manifest and every method adapts it."""
    import json

    import fusion
    from experiments.models.segmentors import normalize, segment
    from experiments.infra.runs import read_manifest
    from experiments.tta import pipeline
    from experiments.tta.experiment import run_experiment

    data = mini_data
    cfg = _adapt_config(data, tmp_path, ["norms=[]", "build_missing=true", "merging.settings=[single,mixed]",
                                         "source_images=4"])
    cfg.models = [*PIPELINE_MODELS, ENCODER_ONLY]
    cfg.pipeline_train_overrides = [*TINY_TRAIN, f"data_root={data}"]
    result = run_experiment(cfg)
    runs_root = tmp_path / "runs"
    merged_dir = runs_root / "merge/table1_merged_pooled_s0"
    assert read_manifest(merged_dir)["stage"] == "merge" and not result["missing"]

    model = pipeline.resolve(PIPELINE_MODELS[2], 0, runs_root)
    assert model.weights[0].path == merged_dir / "merged.safetensors" and model.segmentor == "mini_r18"
    net = pipeline.factory(model)()
    saved = fusion.load_checkpoint(merged_dir / "merged.safetensors")
    assert all(torch.equal(net.state_dict()[k], v) for k, v in saved.items())
    before = copy.deepcopy(net.state_dict())
    adapter = build_adapter("tent", net, 19, segment, batch_size=2, lr=1e-2)
    adapter(normalize(np.random.default_rng(0).integers(0, 255, (2, 32, 64, 3), dtype=np.uint8)))
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    _, norm_names = collect_norm_params(net)
    assert changed and changed <= set(norm_names)

    records = [r for r in json.loads((tmp_path / "out/records.json").read_text()) if r["part"] == "merging"]
    grid = {(r["model"], r["method"], r["setting"]) for r in records}
    assert grid == {(m, method, s) for m in ("stda_cityscapes", "stda_idd", "merged", "encoder_only_cs")
                    for method in ("source", "bn_adapt", "tent", "eata", "sar") for s in ("single", "mixed")}
    # The encoder-only merge: each head<i>/ is a complete run folder the TTA path reads as a
    # model; the merge folder itself holds one model per head and is refused with their names.
    head = pipeline.resolve(ENCODER_ONLY, 0, runs_root)
    head_dir = runs_root / "merge/table1_merged_encoder_only_s0/head0"
    assert head.weights[0].path == head_dir / "merged.safetensors" and head.segmentor == "mini_r18"
    with pytest.raises(ValueError, match="one model per head; name one head folder"):
        pipeline.resolve({"label": "x", "run_dir": "merge/table1_merged_encoder_only_s{seed}"}, 0, runs_root)
    assert all(np.isfinite(r["metric"]) for r in records)
    verdict = (tmp_path / "out/tta_merging_verdict.csv").read_text().splitlines()
    assert len(verdict) == 1 + 2 * 4  # settings x TTA methods


@pytest.mark.filterwarnings("ignore:.*statistics of one image")
def test_seeds_side_by_side_give_the_records_of_a_serial_run(mini_data, tmp_path):
    """workers=2 runs the seeds in two processes; every record (source training included)
    is the serial run's, in the same order; only the wall-clock fields differ."""
    import json

    from experiments.tta.experiment import run_experiment

    def run(workers: int) -> list[dict]:
        out = tmp_path / f"w{workers}"
        cfg = _adapt_config(mini_data, out, ["seeds=[0,1]", f"workers={workers}", "models=[]", "norms=[bn,gn]",
                                             "source_iterations=3", "settings=[mixed,batch1]",
                                             "methods=[source,bn_adapt,tent,sar]", "sweep_batch_sizes=[]"])
        run_experiment(cfg)
        return json.loads((out / "out" / "records.json").read_text())

    serial, parallel = run(1), run(2)

    def strip(records):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in records]

    assert [r["seed"] for r in parallel] == [r["seed"] for r in serial] and {r["seed"] for r in serial} == {0, 1}
    assert strip(parallel) == strip(serial)
    for seed in (0, 1):
        a = torch.load(tmp_path / f"w1/runs/tta/source_bn_s{seed}/model.pth", weights_only=True)
        b = torch.load(tmp_path / f"w2/runs/tta/source_bn_s{seed}/model.pth", weights_only=True)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_corrupted_setting_corrupts_every_image_of_the_mixed_stream_in_turn():
    rng = np.random.default_rng(0)
    samples = {d: [{"image": rng.integers(0, 256, (16, 24, 3), dtype=np.uint8), "label": np.zeros((16, 24), np.uint8),
                    "id": f"{d}/{i}"} for i in range(3)] for d in ("a", "b")}
    [(name, stream, batch)] = build_streams("corrupted", samples, 2, seed=1, corruptions=("fog", "contrast"),
                                            severity=2)
    [(_, plain, _)] = build_streams("mixed", samples, 2, seed=1)
    assert name == "mixed" and batch == 2 and len(stream) == len(plain) == 6
    assert [s["corruption"] for s in stream] == ["fog-2", "contrast-2"] * 3
    for got, clean in zip(stream, plain):
        assert got["domain"] == clean["domain"] and got["id"] == f"{clean['id']}|{got['corruption']}"
        assert got["image"].shape == clean["image"].shape and not np.array_equal(got["image"], clean["image"])
        assert np.array_equal(got["label"], clean["label"])
