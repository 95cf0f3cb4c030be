"""The TTA protocol: learning-rate rules as the papers' code states them, streams built from
the targets' labelled train + val images, and the claims judged by the one pre-declared
rule (analysis.verdicts) on hand-made records."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from torch import nn

from analysis import tta as report
from analysis.verdicts import HELD, INCONCLUSIVE, NOT_HELD, RULE
from experiments.tta import EATA, SAR, Tent, build_adapter, sar_lr
from experiments.tta.streams import build_streams

# --- learning rates ---------------------------------------------------------------------------

# SAR's released main.py: args.lr = (0.00025 / 64) * bs * 2 if bs < 32 else 0.00025, and
# args.lr = 2 * args.lr for SAR under bs=1. Written out by hand per batch size:
EXPECTED = {1: 0.00025 / 32, 8: 0.00025 * 8 / 32, 32: 0.00025, 64: 0.00025}


@pytest.mark.parametrize("batch_size", sorted(EXPECTED))
@pytest.mark.parametrize("method", ["tent", "eata", "sar"])
def test_sar_rule_at_batch_1_8_32_64(method, batch_size):
    expected = EXPECTED[batch_size] * (2 if method == "sar" and batch_size == 1 else 1)
    assert sar_lr(batch_size, method) == pytest.approx(expected, rel=1e-12)
    assert report.sar_lr(batch_size, method) == pytest.approx(expected, rel=1e-12)


def test_sar_doubles_only_its_own_rate_and_only_at_batch_one():
    assert sar_lr(1, "sar") == pytest.approx(1.5625e-05, rel=1e-12)
    assert sar_lr(1, "tent") == sar_lr(1, "eata") == pytest.approx(7.8125e-06, rel=1e-12)
    assert sar_lr(1, "sar") == 2 * sar_lr(1, "tent")
    for b in (2, 8, 16, 31, 32, 64, 128):
        assert sar_lr(b, "sar") == sar_lr(b, "tent") == sar_lr(b, "eata")
    # linear below 32 (0.00025 x B / 32), flat from 32 up: Tent's and EATA's 0.00025 at batch 64
    assert sar_lr(16) == pytest.approx(sar_lr(32) / 2) and sar_lr(128) == sar_lr(32) == 0.00025
    with pytest.raises(ValueError, match="batch_size"):
        sar_lr(0)


def test_analysis_restates_the_same_rule():
    for b in range(1, 130):
        for method in ("tent", "eata", "sar"):
            assert report.sar_lr(b, method) == sar_lr(b, method), (b, method)


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


@pytest.mark.parametrize("batch_size", sorted(EXPECTED))
def test_methods_take_the_rule_and_hand_it_to_sgd(batch_size):
    for method, cls in (("tent", Tent), ("eata", EATA), ("sar", SAR)):
        adapter = build_adapter(method, _tiny(), 3, batch_size=batch_size)
        assert isinstance(adapter, cls)
        assert adapter.lr == sar_lr(batch_size, method)
        group = adapter.optimizer.param_groups[0]
        assert group["lr"] == adapter.lr and group["momentum"] == 0.9
    assert Tent(_tiny(), lr=0.1).lr == 0.1  # an explicit rate wins


def test_sar_leaves_excluded_layers_out_of_the_update():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(),
                          nn.Conv2d(4, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    adapter = SAR(model, 3, batch_size=8, exclude=["4"])  # a list, as Hydra passes it
    ids = {id(p) for p in adapter.params}
    assert ids == {id(model[1].weight), id(model[1].bias)}
    assert not model[4].weight.requires_grad


# --- streams from the targets' train + val images --------------------------------------------

def test_stream_samples_are_every_labelled_train_and_val_image(mini_data):
    from experiments.data.domains import load_domain
    from experiments.tta.experiment import load_stream_samples

    n_train, n_val = len(load_domain("cityscapes", mini_data, "train")), len(load_domain("cityscapes", mini_data, "val"))
    samples, counts = load_stream_samples("cityscapes", mini_data, ["train", "val"])
    assert counts == {"train": n_train, "val": n_val} and len(samples) == n_train + n_val
    assert [s["split"] for s in samples] == ["train"] * n_train + ["val"] * n_val
    assert len({s["id"] for s in samples}) == len(samples)
    assert samples[0]["id"] == "cityscapes/train/0" and samples[-1]["id"] == f"cityscapes/val/{n_val - 1}"
    assert all(s["label"] is not None and s["label"].shape == s["image"].shape[:2] for s in samples)
    val_only, counts = load_stream_samples("cityscapes", mini_data, ["val"])
    assert counts == {"val": n_val} and [s["id"] for s in val_only] == [s["id"] for s in samples[n_train:]]
    some, counts = load_stream_samples("cityscapes", mini_data, ["train", "val"], limit=3)
    picked = np.linspace(0, len(samples) - 1, 3).round().astype(int)  # evenly spaced over train then val
    assert [s["id"] for s in some] == [samples[i]["id"] for i in picked]
    assert sum(counts.values()) == 3 and counts["train"] >= 1 and counts["val"] >= 1


def test_unlabelled_images_are_left_out_of_the_stream(mini_data, tmp_path):
    """The real Dark Zurich train split has no ground truth: its images cannot be scored."""
    from experiments.data.domains import load_domain
    from experiments.tta.experiment import load_stream_samples

    shutil.copytree(mini_data / "darkzurich", tmp_path / "darkzurich")
    shutil.rmtree(tmp_path / "darkzurich" / "gt" / "train")
    n_val = len(load_domain("darkzurich", tmp_path, "val"))
    samples, counts = load_stream_samples("darkzurich", tmp_path, ["train", "val"])
    assert counts == {"train": 0, "val": n_val} and {s["split"] for s in samples} == {"val"}
    with pytest.raises(ValueError, match="no labelled images"):
        load_stream_samples("darkzurich", tmp_path, ["train"])


def test_default_config_streams_all_train_and_val_images():
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    configs = str(Path(__file__).resolve().parents[2] / "configs")
    with initialize_config_dir(config_dir=configs, version_base="1.3"):
        cfg = compose("adapt")
    assert cfg.images_per_domain is None and list(cfg.splits) == ["train", "val"]
    assert cfg.merging.images_per_domain is None and list(cfg.merging.splits) == ["val"]
    assert set(report.WILD) <= set(cfg.settings) and cfg.lr_multiplier == 1.0


def test_single_and_batch1_streams_are_one_shuffle_per_seed():
    samples = {d: [{"image": None, "label": 0, "id": f"{d}/{i}"} for i in range(40)] for d in ("a", "b")}
    single = build_streams("single", samples, 8, seed=3)
    batch1 = build_streams("batch1", samples, 8, seed=3)
    assert [(n, b) for n, _, b in single] == [("a", 8), ("b", 8)] and [b for _, _, b in batch1] == [1, 1]
    for (_, s, _), (_, t, _), d in zip(single, batch1, ("a", "b")):
        ids = [x["id"] for x in s]
        assert ids == [x["id"] for x in t]  # batch1 = the single-shift stream, batch size 1
        assert sorted(ids) == sorted(f"{d}/{i}" for i in range(40)) and ids != [f"{d}/{i}" for i in range(40)]
    other = build_streams("single", samples, 8, seed=4)
    assert [x["id"] for x in other[0][1]] != [x["id"] for x in single[0][1]]
    assert [x["id"] for x in single[0][1]] != [x["id"].replace("b", "a") for x in single[1][1]]


# --- claims on hand-made records ---------------------------------------------------------------

SEEDS = (0, 1, 2)


def _record(model, norm, method, setting, seed, h, part="norms"):
    """A mixed-style record whose per-domain mIoU are all ``h`` (so its H is ``h``)."""
    return {"seed": seed, "model": model, "norm": norm, "part": part, "method": method, "setting": setting,
            "stream": "mixed", "per_domain": {"d1": h, "d2": h}, "metric": h, "batch_size": 8, "trace": []}


def _records(table, part="norms"):
    """``table``: (model, norm, method, setting) -> per-seed H."""
    return [_record(model, norm, method, setting, seed, h, part)
            for (model, norm, method, setting), values in table.items() for seed, h in zip(SEEDS, values)]


def _norms_table():
    bn, gn = ("source_bn", "bn"), ("source_gn", "gn")
    t = {}
    # mixed: Tent clearly below no TTA on every seed (a held), SAR clearly above Tent (b held)
    t[(*bn, "source", "mixed")] = [10.0, 11.0, 12.0]
    t[(*bn, "bn_adapt", "mixed")] = [12.0, 13.1, 13.9]   # c held
    t[(*bn, "tent", "mixed")] = [7.0, 8.1, 8.9]
    t[(*bn, "sar", "mixed")] = [10.0, 11.2, 11.9]
    # batch1: Tent clearly above no TTA (a not held), SAR clearly below Tent (b not held)
    t[(*bn, "source", "batch1")] = [10.0, 11.0, 12.0]
    t[(*bn, "bn_adapt", "batch1")] = [9.0, 9.9, 11.1]    # c not held
    t[(*bn, "tent", "batch1")] = [12.0, 13.1, 13.9]
    t[(*bn, "sar", "batch1")] = [11.0, 12.0, 12.9]
    # GN: Tent moves the seeds both ways (a, b inconclusive); BN-adapt is exactly no TTA
    for setting in ("mixed", "batch1"):
        t[(*gn, "source", setting)] = [8.0, 8.0, 8.0]
        t[(*gn, "bn_adapt", setting)] = [8.0, 8.0, 8.0]
        t[(*gn, "tent", setting)] = [9.0, 7.0, 8.5]
        t[(*gn, "sar", setting)] = [9.0, 7.0, 8.5]
    return t


def _by(claims, key, model, setting, method=None):
    found = [c for c in claims if c.key == key and c.model == model and c.setting == setting
             and (method is None or c.method == method)]
    assert len(found) == 1, (key, model, setting, method, found)
    return found[0].verdict


def test_claims_a_b_c_held_not_held_inconclusive():
    claims = report.norms_claims(_records(_norms_table()), ["mixed", "batch1"])
    a = _by(claims, "a", "source_bn", "mixed")
    assert a.verdict == HELD and a.differences == pytest.approx((3.0, 2.9, 3.1))  # no TTA − Tent
    assert _by(claims, "a", "source_bn", "batch1").verdict == NOT_HELD
    assert _by(claims, "a", "source_gn", "mixed").verdict == INCONCLUSIVE
    b = _by(claims, "b", "source_bn", "mixed")
    assert b.verdict == HELD and b.differences == pytest.approx((3.0, 3.1, 3.0))
    assert _by(claims, "b", "source_bn", "batch1").verdict == NOT_HELD
    assert _by(claims, "b", "source_gn", "batch1").verdict == INCONCLUSIVE
    assert _by(claims, "c", "source_bn", "mixed").verdict == HELD
    assert _by(claims, "c", "source_bn", "batch1").verdict == NOT_HELD
    assert not [c for c in claims if c.key == "c" and c.model == "source_gn"]  # no BatchNorm: no claim (c)
    # only the wild settings carry (a) and (b): a `single` setting adds (c) only
    table = _norms_table()
    table[("source_bn", "bn", "source", "single")] = [1.0, 2.0, 3.0]
    table[("source_bn", "bn", "bn_adapt", "single")] = [1.0, 2.0, 3.0]
    table[("source_bn", "bn", "tent", "single")] = [0.0, 0.0, 0.0]
    claims = report.norms_claims(_records(table), ["single", "mixed", "batch1"])
    assert {c.setting for c in claims if c.key in "ab"} == {"mixed", "batch1"}
    assert _by(claims, "c", "source_bn", "single").verdict == INCONCLUSIVE  # all differences 0


def test_claim_e_compares_the_worst_wild_setting_gain_per_seed():
    records = _records(_norms_table())
    h = report.seed_h(records)
    # BN, Tent: gains over no TTA are (-3.0, -2.9, -3.1) in mixed and (+2, +2.1, +1.9) in batch1
    assert report.stability(h, "source_bn", "tent", ["mixed", "batch1"]) == pytest.approx({0: -3.0, 1: -2.9, 2: -3.1})
    assert report.stability(h, "source_gn", "tent", ["mixed", "batch1"]) == pytest.approx({0: 1.0, 1: -1.0, 2: 0.5})
    claims = report.norms_claims(records, ["mixed", "batch1"])
    tent = _by(claims, "e", "source_gn vs source_bn", "worst of mixed/batch1", "tent")
    assert tent.differences == pytest.approx((4.0, 1.9, 3.6)) and tent.verdict == HELD
    # BN-adapt: 0 on the GN model (nothing to adapt), min(+2, -1) etc. on the BN model
    bn_adapt = _by(claims, "e", "source_gn vs source_bn", "worst of mixed/batch1", "bn_adapt")
    assert bn_adapt.differences == pytest.approx((1.0, 1.1, 0.9)) and bn_adapt.verdict == HELD
    # a seed missing one wild setting has no stability value and drops out of the pairing
    records = [r for r in records if not (r["seed"] == 2 and r["setting"] == "batch1" and r["model"] == "source_bn")]
    h = report.seed_h(records)
    assert set(report.stability(h, "source_bn", "tent", ["mixed", "batch1"])) == {0, 1}
    tent = _by(report.norms_claims(records, ["mixed", "batch1"]), "e", "source_gn vs source_bn",
               "worst of mixed/batch1", "tent")
    assert len(tent.differences) == 2


def test_claim_d_merged_against_merged_alone_and_the_best_single_model():
    t = {}
    t[("merged", "bn", "source", "mixed")] = [10.0, 10.5, 11.0]
    t[("merged", "bn", "tent", "mixed")] = [12.0, 12.6, 12.9]        # beats merged alone: held
    t[("merged", "bn", "sar", "mixed")] = [9.0, 11.5, 10.0]          # inconclusive
    t[("stda_a", "bn", "source", "mixed")] = [9.0, 9.0, 9.0]
    t[("stda_a", "bn", "tent", "mixed")] = [13.0, 13.7, 14.1]        # the best single with Tent
    t[("stda_a", "bn", "sar", "mixed")] = [5.0, 5.0, 5.0]
    t[("stda_b", "bn", "source", "mixed")] = [9.0, 9.0, 9.0]
    t[("stda_b", "bn", "tent", "mixed")] = [11.0, 11.0, 11.0]
    t[("stda_b", "bn", "sar", "mixed")] = [6.0, 6.0, 6.0]            # the best single with SAR
    records = _records(t, part="merging")
    claims = report.merging_claims(records, "merged", ["source", "tent", "sar"], ["mixed"])
    assert _by(claims, "d", "merged", "mixed", "tent").verdict == HELD
    assert _by(claims, "d", "merged", "mixed", "sar").verdict == INCONCLUSIVE
    versus = _by(claims, "d", "merged vs stda_a", "mixed", "tent")
    assert versus.verdict == NOT_HELD and versus.differences == pytest.approx((-1.0, -1.1, -1.2))
    assert _by(claims, "d", "merged vs stda_b", "mixed", "sar").verdict == HELD
    assert report.best_single(report.seed_h(records), ["stda_a", "stda_b"], "tent", "mixed") == "stda_a"


def test_report_writes_every_claim_with_the_rule(tmp_path):
    norms = _records(_norms_table())
    merging = _records({("merged", "bn", "source", "mixed"): [10.0, 10.5, 11.0],
                        ("merged", "bn", "tent", "mixed"): [12.0, 12.6, 12.9],
                        ("stda_a", "bn", "source", "mixed"): [9.0, 9.0, 9.0],
                        ("stda_a", "bn", "tent", "mixed"): [13.0, 13.7, 14.1]}, part="merging")
    cfg = {"methods": ["source", "bn_adapt", "tent", "sar"], "settings": ["mixed", "batch1"], "seeds": list(SEEDS),
           "batch_size": 8, "classes": 19, "domains": ["d1", "d2"], "norms": ["bn", "gn"], "runs_root": "runs",
           "method_options": {"sar": {"reset_threshold": 0.2}}, "splits": ["train", "val"],
           "merging": {"settings": ["mixed"], "methods": ["source", "tent"], "splits": ["val"]}}
    report.write_report(norms + merging, cfg, tmp_path)
    rows = (tmp_path / "tta_claims.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert header[:5] == ["claim", "part", "model", "setting", "method"] and "verdict" in header
    keys = [r.split(",")[0] for r in rows[1:]]
    assert keys == sorted(keys) and set(keys) == {"a", "b", "c", "d", "e"}
    assert any(r.startswith("d,merging,merged vs stda_a,mixed,tent") and r.split(",")[-2] == NOT_HELD for r in rows)
    readme = (tmp_path / "README.md").read_text()
    assert RULE in readme and "mr-eggplant/SAR" in readme and "(0.00025 / 64) * bs * 2" in readme
    assert "TIE" not in readme and "seeds disagree" not in readme
    assert "(e) measures stability per seed" in readme
    verdict = (tmp_path / "tta_merging_verdict.csv").read_text().splitlines()
    assert len(verdict) == 2 and verdict[1].split(",")[6] == HELD and verdict[1].split(",")[9] == NOT_HELD
    assert (tmp_path / "tta_claims.md").is_file() and (tmp_path / "tta_claims.tex").is_file()
    assert not math.isnan(float(verdict[1].split(",")[3]))
