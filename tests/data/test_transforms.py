"""The mmseg training pipeline on numpy: keep-ratio resize, cat_max_ratio crops, pad, margins."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from experiments.data.transforms import Pipeline, crop_box, keep_ratio_size, margin_mask


def test_keep_ratio_sizes_are_mmcv_imrescale():
    # GTA 1914x1052 into HRDA's (2560, 1440): the long edge decides (factor 1.3375).
    assert keep_ratio_size(1052, 1914, (2560, 1440)) == (1407, 2560)
    assert keep_ratio_size(1024, 2048, (2048, 1024)) == (1024, 2048)      # Cityscapes stays
    assert keep_ratio_size(720, 1280, (1920, 1080)) == (1080, 1920)       # IDD's small frames upscale
    assert keep_ratio_size(1080, 1920, (960, 540)) == (540, 960)          # ACDC at the 512 rows' scale
    assert keep_ratio_size(1052, 1914, (1440, 2560)) == (1407, 2560)      # the order does not matter


def test_crop_boxes_are_uniform_inside_the_image_and_clip_small_images():
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(400):
        y1, y2, x1, x2 = crop_box(6, 9, (4, 5), g)
        assert y2 - y1 == 4 and x2 - x1 == 5 and 0 <= y1 <= 2 and 0 <= x1 <= 4
        seen.add((y1, x1))
    assert seen == {(y, x) for y in range(3) for x in range(5)}
    assert crop_box(3, 4, (8, 8), g) == (0, 3, 0, 4)


def test_cat_max_ratio_redraws_crops_that_one_class_dominates():
    label = np.zeros((10, 40), np.uint8)
    label[:, 30:] = 1  # only crops reaching x >= 30 hold two classes
    image = np.zeros((10, 40, 3), np.uint8)
    plain = Pipeline(crop=(10, 10), flip=0.0)
    ratio = Pipeline(crop=(10, 10), cat_max_ratio=0.75, flip=0.0)
    two_classes = lambda out: len(np.unique(out["label"])) > 1  # noqa: E731
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    share_plain = np.mean([two_classes(plain(image, label, g1)) for _ in range(200)])
    share_ratio = np.mean([two_classes(ratio(image, label, g2)) for _ in range(200)])
    assert share_plain < 0.3 < 0.6 < share_ratio  # up to 10 redraws: mostly the mixed crops
    # Ignored pixels do not count as a class.
    only_ignore = np.full((10, 40), 255, np.uint8)
    assert ratio(image, only_ignore, torch.Generator().manual_seed(0))["label"].shape == (10, 10)


def test_small_images_are_padded_to_the_crop_with_ignore_and_zero():
    image = np.full((5, 7, 3), 9, np.uint8)
    label = np.full((5, 7), 3, np.uint8)
    out = Pipeline(crop=(8, 8), flip=0.0, margins=(0, 0, 0, 0))(image, label, torch.Generator())
    assert out["image"].shape == (8, 8, 3) and out["label"].shape == (8, 8) and out["valid"].shape == (8, 8)
    assert (out["image"][5:] == 0).all() and (out["label"][5:] == 255).all() and (out["valid"][5:] == 0).all()
    assert (out["label"][:5, :7] == 3).all()


def test_pseudo_label_margins_are_masked_on_the_full_image_before_the_crop():
    height, width = 40, 60
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = np.arange(width)[None, :]   # column index, to find the crop
    image[..., 1] = np.arange(height)[:, None]  # row index
    full = margin_mask(height, width, (3, 12, 2, 4))
    assert full[:3].sum() == 0 and full[-12:].sum() == 0 and full[:, :2].sum() == 0 and full[:, -4:].sum() == 0
    assert full[3:-12, 2:-4].all()
    pipeline = Pipeline(crop=(16, 16), flip=0.5, margins=(3, 12, 2, 4))
    g = torch.Generator().manual_seed(5)
    for _ in range(50):
        out = pipeline(image, None, g)
        rows, cols = out["image"][..., 1].astype(int), out["image"][..., 0].astype(int)
        np.testing.assert_array_equal(out["valid"], full[rows, cols])  # the full image's mask, cropped
    # With a resize the mask follows the image (nearest): margins scale with it.
    resized = Pipeline(scale=(120, 80), flip=0.0, margins=(3, 12, 2, 4))(image, None, g)
    assert resized["valid"].shape == (80, 120) and resized["valid"][:6].sum() == 0 and resized["valid"][6:-24, 4:-8].all()


def test_the_pipeline_is_a_function_of_the_generator_and_flips_all_fields_together():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    label = rng.integers(0, 19, (20, 30)).astype(np.uint8)
    pipeline = Pipeline(scale=(45, 30), crop=(16, 16), cat_max_ratio=0.75, flip=1.0, margins=(1, 1, 1, 1))
    a = pipeline(image, label, torch.Generator().manual_seed(3))
    b = pipeline(image, label, torch.Generator().manual_seed(3))
    for key in ("image", "label", "valid"):
        np.testing.assert_array_equal(a[key], b[key])
    unflipped = Pipeline(scale=(45, 30), crop=(16, 16), cat_max_ratio=0.75, flip=0.0, margins=(1, 1, 1, 1))
    c = unflipped(image, label, torch.Generator().manual_seed(3))
    if not np.array_equal(c["image"], a["image"]):  # same crop, mirrored
        np.testing.assert_array_equal(c["image"][:, ::-1], a["image"])
        np.testing.assert_array_equal(c["label"][:, ::-1], a["label"])


@pytest.mark.parametrize("shape", [(1052, 1914), (1080, 1920), (720, 1280)])
def test_mixed_native_sizes_leave_one_crop_size(shape):
    image = np.zeros((*shape, 3), np.uint8)
    out = Pipeline(scale=(1920, 1080), crop=(512, 512))(image, np.zeros(shape, np.uint8), torch.Generator())
    assert out["image"].shape == (512, 512, 3) and out["label"].shape == (512, 512)
