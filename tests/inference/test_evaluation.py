"""Evaluation: exact confusion on a hand-checkable model, whole vs slide, checkpoints, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from analysis import metrics as M
from experiments import evaluate as E_cli
from experiments.inference import evaluation as E
from experiments.inference import sources
from experiments.models import segmentors as models

ROOT = Path(__file__).resolve().parents[2]


class RedLevels(torch.nn.Module):
    """Predicts class red // 64 (0..3) per pixel: a model whose output is known exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.centers = torch.nn.Parameter(torch.arange(4.0) * 64 + 31.5, requires_grad=False)

    def extract_feat(self, x):
        return x

    def decode_head(self, x):
        red = x[:, :1] * models.STD[0] + models.MEAN[0]
        return -(red - self.centers.view(1, -1, 1, 1)) ** 2


class PixelLinear(torch.nn.Module):
    """A random per-pixel (1x1) classifier: receptive field of one pixel."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 19, 1)

    def extract_feat(self, x):
        return x

    def decode_head(self, x):
        return self.conv(x)


def make_dataset(seed: int, sizes=((12, 20), (12, 20), (9, 14), (12, 20), (9, 14))):
    rng = np.random.default_rng(seed)
    items = []
    for i, (h, w) in enumerate(sizes):
        label = rng.integers(0, 6, (h, w)).astype(np.uint8)
        label[rng.random((h, w)) < 0.2] = 255
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        items.append({"image": image, "label": label, "path": f"item_{i}.png"})
    return items


def test_confusion_equals_hand_count():
    dataset = make_dataset(0)
    expected = np.zeros((19, 19), np.int64)
    for item in dataset:
        pred = item["image"][..., 0] // 64
        for g, p in zip(item["label"].ravel(), pred.ravel()):
            if g != 255:
                expected[g, p] += 1
    confusion = E.evaluate_model(RedLevels(), dataset, batch_size=3, progress=False)
    assert confusion.dtype == np.int64
    np.testing.assert_array_equal(confusion, expected)


def test_whole_and_slide_agree_for_a_pixelwise_model():
    images = models.normalize(np.random.default_rng(1).integers(0, 256, (2, 37, 45, 3), np.uint8))
    model = PixelLinear().eval()
    with torch.no_grad():
        whole = models.segment(model, images)
        slide = E.slide_logits(model, images, crop=(16, 16), stride=(10, 11), num_classes=19)
    torch.testing.assert_close(slide, whole, rtol=1e-5, atol=1e-5)
    dataset = make_dataset(2)
    np.testing.assert_array_equal(
        E.evaluate_model(model, dataset, mode="whole", progress=False),
        E.evaluate_model(model, dataset, mode="slide", crop=(5, 7), stride=(3, 4), progress=False))


def test_slide_with_one_window_is_whole_for_a_real_segmentor():
    model = models.build_segmentor("mini_r18").eval()
    dataset = make_dataset(3, sizes=((32, 48), (32, 48)))
    np.testing.assert_array_equal(
        E.evaluate_model(model, dataset, mode="whole", progress=False),
        E.evaluate_model(model, dataset, mode="slide", crop=(64, 64), stride=(32, 32),
                         progress=False))


def test_scale_and_errors():
    assert E.keep_ratio_size(1024, 2048, (1024, 512)) == (512, 1024)
    assert E.keep_ratio_size(1080, 1920, (1024, 512)) == (512, 910)
    # Downscaled inference is upsampled back to label size: every labelled pixel counted.
    dataset = make_dataset(4)
    confusion = E.evaluate_model(RedLevels(), dataset, scale=(10, 6), progress=False)
    assert confusion.sum() == sum(int((it["label"] != 255).sum()) for it in dataset)
    with pytest.raises(ValueError, match="mode"):
        E.evaluate_model(RedLevels(), dataset, mode="tiles")
    unlabeled = [dict(dataset[0], label=None, path="night/a.png")]
    with pytest.raises(ValueError, match="night/a.png"):
        E.evaluate_model(RedLevels(), unlabeled, progress=False)


def save_training_checkpoint(path: Path, student, teacher) -> None:
    state = {f"model.{k}": v for k, v in student.state_dict().items()}
    state.update({f"ema_model.{k}": v for k, v in teacher.state_dict().items()})
    torch.save({"state_dict": state, "meta": {"segmentor": "mini_r18"}}, path)


def test_one_evaluation_path_reads_each_network_and_caches_by_weights(tmp_path):
    torch.manual_seed(0)
    a, b = models.build_segmentor("mini_r18").eval(), models.build_segmentor("mini_r18").eval()
    save_training_checkpoint(tmp_path / "run.pth", student=a, teacher=b)
    domains = {"one": make_dataset(5, sizes=((32, 32),) * 2), "two": make_dataset(6, sizes=((32, 32),) * 2)}
    kw = dict(batch_size=2, progress=False)
    for network, reference in (("student", a), ("teacher", b)):
        source = sources.from_checkpoint(tmp_path / "run.pth", "mini_r18", network=network)
        out = tmp_path / "eval" / network
        confusions = E.evaluate(source, domains, out, stand_in=False, **kw)
        for name, data in domains.items():
            np.testing.assert_array_equal(confusions[name], E.evaluate_model(reference, data, **kw))
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["domains"]["one"]["confusion"] == "confusion/one.npy" and metrics["stand_in"] is False
        assert metrics["protocol"]["one"] == {"mode": "whole", "resize": None, "crop": None, "stride": None}
        assert metrics["harmonic_mean"] == pytest.approx(M.harmonic_mean(
            [100 * M.mean_iou(confusions[d]) for d in domains]), abs=1e-3)
    # Complete and same weights: read back, not recomputed.
    out = tmp_path / "eval" / "student"
    before = (out / "metrics.json").stat().st_mtime_ns
    E.evaluate(sources.from_checkpoint(tmp_path / "run.pth", "mini_r18"), domains, out, stand_in=False, **kw)
    assert (out / "metrics.json").stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="mini_mitb0"):
        E.evaluate(sources.from_checkpoint(tmp_path / "run.pth", "mini_mitb0"), domains, tmp_path / "bad",
                   stand_in=False, **kw)
    assert json.loads((tmp_path / "bad" / "manifest.json").read_text())["status"] == "failed"


def test_nan_weights_are_refused_naming_the_key_and_the_file(tmp_path):
    model = models.build_segmentor("mini_r18")
    state = model.state_dict()
    state["backbone.stem.0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    source = sources.from_checkpoint(tmp_path / "nan.pth", "mini_r18")
    with pytest.raises(ValueError, match=r"nan.pth.*backbone\.stem\.0\.weight"):
        E.evaluate(source, {"one": make_dataset(7, sizes=((32, 32),))}, tmp_path / "out", stand_in=False,
                   progress=False)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "backbone.stem.0.weight" in manifest["error"]


def test_slide_protocol_equals_whole_for_a_pixelwise_model_through_the_one_path(tmp_path):
    protocol = E.protocols({"default": {"mode": "whole"}, "two": {"mode": "slide", "crop": [5, 7],
                                                                  "stride": [3, 4]}}, ["one", "two"])
    assert protocol["one"].mode == "whole" and protocol["two"].crop == (5, 7)
    with pytest.raises(ValueError, match="needs crop and stride"):
        E.Protocol.of({"mode": "slide"})
    with pytest.raises(ValueError, match="unknown keys \\['tile'\\]"):
        E.Protocol.of({"tile": 3})


def write_cityscapes(root: Path, seed: int) -> None:
    """Two val images in the Cityscapes layout with labelIds (7 = road, 26 = car)."""
    rng = np.random.default_rng(seed)
    for frame in range(2):
        stem = f"aachen_000000_{frame:06d}"
        img_dir, gt_dir = root / "leftImg8bit/val/aachen", root / "gtFine/val/aachen"
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)).save(
            img_dir / f"{stem}_leftImg8bit.png")
        Image.fromarray(rng.choice([0, 7, 26], (32, 64)).astype(np.uint8)).save(
            gt_dir / f"{stem}_gtFine_labelIds.png")


def write_idd(root: Path, seed: int) -> None:
    """Two val images in the IDD layout with csTrainIds (0 = road, 13 = car)."""
    rng = np.random.default_rng(seed)
    for frame in range(2):
        img_dir, gt_dir = root / "leftImg8bit/val/201", root / "gtFine/val/201"
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)).save(img_dir / f"{frame:06d}_leftImg8bit.png")
        Image.fromarray(rng.choice([0, 13, 255], (32, 64)).astype(np.uint8)).save(
            gt_dir / f"{frame:06d}_gtFine_labelcsTrainIds.png")


def test_cli_writes_confusions_metrics_and_manifest(tmp_path):
    write_cityscapes(tmp_path / "data" / "cityscapes", 7)
    write_idd(tmp_path / "data" / "idd", 8)
    model = models.build_segmentor("mini_r18")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "merged.safetensors")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = [sys.executable, "-m", "experiments.evaluate", f"checkpoint={tmp_path}/merged.safetensors",
            "segmentor=mini_r18", "name=cli", f"runs_root={tmp_path}/runs", "progress=false",
            f"data_root={tmp_path}/data"]
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs/evaluate/cli"
    metrics = json.loads((run / "metrics.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and {"confusion_cityscapes", "confusion_idd"} <= set(manifest["outputs"])
    assert manifest["stand_in"] is False and "note" not in metrics  # real layouts, no miniature manifest
    confusion = M.load_confusion(run / "confusion/cityscapes.npy")
    assert confusion.sum() == int(np.count_nonzero(
        [np.array(Image.open(p)) != 0 for p in sorted((tmp_path / "data/cityscapes/gtFine").rglob("*.png"))]))
    assert metrics["domains"]["cityscapes"]["miou"] == pytest.approx(100 * M.mean_iou(confusion), abs=1e-3)
    assert metrics["harmonic_mean"] == pytest.approx(M.harmonic_mean(
        [metrics["domains"][d]["miou"] for d in ("cityscapes", "idd")]), abs=1e-3)
    assert set(metrics["domains"]["cityscapes"]["iou"]) >= {"road", "car"}
    # A finished run is not redone (same config, called in-process).
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"checkpoint={tmp_path}/merged.safetensors", "name=cli",
                                             f"runs_root={tmp_path}/runs", f"data_root={tmp_path}/data"])
    before = (run / "metrics.json").stat().st_mtime_ns
    assert E_cli.run_evaluation(cfg) == metrics
    assert (run / "metrics.json").stat().st_mtime_ns == before


def test_missing_data_names_the_command_that_generates_the_stand_in(tmp_path):
    from experiments.data.domains import load_domain, missing_data_error

    with pytest.raises(FileNotFoundError, match="python -m experiments.miniature scale.data_root="):
        load_domain("cityscapes", tmp_path / "nowhere")
    # A data root that a scale generates: the message names that scale.
    assert "`python -m experiments.miniature scale=mini`" in str(missing_data_error("data/mini/cityscapes"))
    assert "`python -m experiments.miniature scale=smoke`" in str(missing_data_error("data/mini_smoke/gta"))
