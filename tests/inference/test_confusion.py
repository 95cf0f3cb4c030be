"""Metrics against the official Cityscapes pixel evaluation and mmseg's IoUMetric."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from analysis import metrics as M
from experiments.inference.confusion import ConfusionMatrix

NUM_CLASSES = 19


def random_pairs(seed: int, count: int = 3, shape=(37, 53), absent=(4, 16)):
    """Random predictions / ground truth with ignore pixels and classes absent from both."""
    rng = np.random.default_rng(seed)
    present = [c for c in range(NUM_CLASSES) if c not in absent]
    pairs = []
    for _ in range(count):
        gt = rng.choice(present, size=shape).astype(np.uint8)
        gt[rng.random(shape) < 0.15] = 255
        # Predictions agree with gt on ~60% of pixels so IoUs are far from 0 and 1.
        pred = np.where(rng.random(shape) < 0.6, gt, rng.choice(present, size=shape))
        pred[pred == 255] = present[0]
        pairs.append((pred.astype(np.int64), gt))
    return pairs


def confusion_of(pairs) -> np.ndarray:
    cm = ConfusionMatrix(NUM_CLASSES)
    for pred, gt in pairs:
        cm.update(torch.from_numpy(pred), torch.from_numpy(gt))
    return cm.matrix


def test_confusion_matches_direct_count():
    pairs = random_pairs(0)
    expected = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for pred, gt in pairs:
        for p, g in zip(pred.ravel(), gt.ravel()):
            if g != 255:
                expected[g, p] += 1
    cm = confusion_of(pairs)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, expected)


def test_reset_and_device_and_range_errors():
    cm = ConfusionMatrix(3, device="cpu")
    cm.update(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 255]))
    assert cm.matrix.sum() == 2 and cm.tensor.device.type == "cpu"
    cm.reset()
    assert cm.matrix.sum() == 0
    with pytest.raises(ValueError, match=r"target ids span \[1, 7\]"):
        cm.update(torch.tensor([0, 1]), torch.tensor([7, 1]))
    with pytest.raises(ValueError, match=r"prediction ids span \[1, 3\]"):
        cm.update(torch.tensor([3, 1]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"prediction ids span \[-1, 1\]"):
        cm.update(torch.tensor([-1, 1]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2, 3), torch.zeros(3, 2))


def test_absent_classes_are_nan_and_skipped():
    confusion = np.zeros((3, 3), np.int64)
    confusion[0, 0], confusion[0, 1], confusion[1, 1] = 6, 2, 2  # class 2 never appears
    iou = M.iou_per_class(confusion)
    assert iou[0] == pytest.approx(6 / 8) and iou[1] == pytest.approx(2 / 4)
    assert np.isnan(iou[2])
    assert M.mean_iou(confusion) == pytest.approx((6 / 8 + 2 / 4) / 2)
    # A class predicted but absent from gt has IoU 0, and counts in the mean.
    confusion[0, 2] = 1
    assert M.iou_per_class(confusion)[2] == 0
    assert M.mean_iou(confusion) == pytest.approx((6 / 9 + 2 / 4 + 0) / 3)
    assert M.pixel_accuracy(confusion) == pytest.approx(8 / 11)
    assert np.isnan(M.mean_iou(np.zeros((3, 3))))


def test_mean_iou_equals_cityscapes_pixel_evaluation(tmp_path):
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs
    from cityscapesscripts.helpers.labels import labels

    train_to_id = np.zeros(256, np.uint8)  # 255 (ignore) -> id 0 "unlabeled"
    for label in labels:
        if 0 <= label.trainId < NUM_CLASSES:
            train_to_id[label.trainId] = label.id
    pairs = random_pairs(1)
    predictions, truths = [], []
    for i, (pred, gt) in enumerate(pairs):
        predictions.append(str(tmp_path / f"pred_{i}.png"))
        truths.append(str(tmp_path / f"gt_{i}_gtFine_labelIds.png"))
        Image.fromarray(train_to_id[pred.astype(np.uint8)]).save(predictions[-1])
        Image.fromarray(train_to_id[gt]).save(truths[-1])
    args = copy.copy(cs.args)
    args.evalInstLevelScore, args.JSONOutput, args.quiet = False, False, True
    result = cs.evaluateImgLists(predictions, truths, args)

    confusion = confusion_of(pairs)
    iou = M.iou_per_class(confusion)
    names = {label.trainId: label.name for label in labels if 0 <= label.trainId < NUM_CLASSES}
    for c in range(NUM_CLASSES):
        official = result["classScores"][names[c]]
        assert (np.isnan(official) and np.isnan(iou[c])) or official == pytest.approx(iou[c], abs=1e-12)
    assert np.isnan(iou[4]) and np.isnan(iou[16])
    assert M.mean_iou(confusion) == pytest.approx(result["averageScoreClasses"], abs=1e-6)


def test_mean_iou_equals_mmseg_iou_metric():
    from mmseg.evaluation import IoUMetric

    pairs = random_pairs(2, count=4)
    metric = IoUMetric(iou_metrics=["mIoU"])
    metric.dataset_meta = {"classes": [f"c{i}" for i in range(NUM_CLASSES)]}
    for pred, gt in pairs:
        metric.process({}, [{"pred_sem_seg": {"data": torch.from_numpy(pred)[None]},
                             "gt_sem_seg": {"data": torch.from_numpy(gt.astype(np.int64))[None]}}])
    areas = [sum(parts) for parts in zip(*metric.results)]
    reference = IoUMetric.total_area_to_metrics(*areas, ["mIoU"])
    confusion = confusion_of(pairs)
    np.testing.assert_allclose(M.iou_per_class(confusion), reference["IoU"], atol=1e-6)
    assert M.mean_iou(confusion) == pytest.approx(np.nanmean(reference["IoU"]), abs=1e-6)
    assert M.pixel_accuracy(confusion) == pytest.approx(float(reference["aAcc"]), abs=1e-6)
    summary = metric.compute_metrics(metric.results)  # mmseg rounds to 0.01 percent
    assert summary["mIoU"] == pytest.approx(round(100 * M.mean_iou(confusion), 2), abs=1e-9)


def test_harmonic_mean():
    assert M.harmonic_mean([50.0, 50.0]) == pytest.approx(50.0)
    assert M.harmonic_mean([40.0, 60.0]) == pytest.approx(2 / (1 / 40 + 1 / 60))
    assert M.harmonic_mean([0.3, 0.6, 0.9]) == pytest.approx(3 / (1 / 0.3 + 1 / 0.6 + 1 / 0.9))
    assert M.harmonic_mean([55.0, 0.0]) == 0.0
    assert np.isnan(M.harmonic_mean([55.0, float("nan")]))
    with pytest.raises(ValueError, match="no values"):
        M.harmonic_mean([])
    with pytest.raises(ValueError, match="non-negative"):
        M.harmonic_mean([1.0, -2.0])


def test_save_and_load_confusion(tmp_path):
    confusion = confusion_of(random_pairs(3, count=1))
    path = tmp_path / "confusion" / "cityscapes.npy"
    M.save_confusion(path, confusion)
    loaded = M.load_confusion(path)
    assert loaded.dtype == np.int64
    np.testing.assert_array_equal(loaded, confusion)
    assert list(path.parent.iterdir()) == [path]  # no temporary left behind
    np.save(tmp_path / "bad.npy", np.zeros((2, 3)))
    with pytest.raises(ValueError, match="bad.npy"):
        M.load_confusion(tmp_path / "bad.npy")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_confusion_on_cuda_equals_cpu_and_refuses_bad_ids_when_read():
    pairs = random_pairs(5)
    cm = ConfusionMatrix(NUM_CLASSES, device="cuda")
    for pred, gt in pairs:
        cm.update(torch.from_numpy(pred).cuda(), torch.from_numpy(gt).cuda())
    np.testing.assert_array_equal(cm.matrix, confusion_of(pairs))
    bad = ConfusionMatrix(3, device="cuda")
    bad.update(torch.tensor([0, 1], device="cuda"), torch.tensor([7, 1], device="cuda"))  # no sync
    bad.update(torch.tensor([0, 2], device="cuda"), torch.tensor([0, 1], device="cuda"))
    with pytest.raises(ValueError, match=r"target ids span \[0, 7\]"):
        bad.matrix
