"""The DAFormer recipe components, checkpoint fallback and the training logger."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from experiments.selftraining import checkpoints as ckpt
from experiments.selftraining import recipe as st
from experiments.infra.logs import TrainingLogger, read_log


def _tiny_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))


@pytest.mark.parametrize("iteration", [0, 1, 9, 50_000])
def test_ema_update_follows_alpha_schedule_on_parameters_only(iteration):
    teacher, student = _tiny_net(0), _tiny_net(1)
    teacher[1].running_mean.fill_(3.0)
    student[1].running_mean.fill_(-5.0)
    before_t = {k: v.clone() for k, v in teacher.state_dict().items()}
    before_s = {k: v.clone() for k, v in student.state_dict().items()}
    alpha = st.ema_update(teacher, student, iteration, alpha=0.999)
    assert alpha == min(1 - 1 / (iteration + 1), 0.999)
    for name, _ in teacher.named_parameters():
        expected = alpha * before_t[name] + (1 - alpha) * before_s[name]
        torch.testing.assert_close(teacher.state_dict()[name], expected, rtol=0, atol=1e-7)
    # Buffers stay the teacher's own (DAFormer updates parameters only).
    assert torch.equal(teacher[1].running_mean, before_t["1.running_mean"])
    assert torch.equal(teacher[1].num_batches_tracked, before_t["1.num_batches_tracked"])
    assert all(torch.equal(v, before_s[k]) for k, v in student.state_dict().items())


def test_teacher_mode_turns_off_dropout_but_keeps_batch_statistics():
    net = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3), nn.Dropout2d(0.5))
    st.set_teacher_mode(net)
    assert net[1].training and not net[2].training


def test_pseudo_label_weight_is_share_of_confident_pixels_with_zero_margins():
    b, h, w = 2, 64, 8
    logits = torch.zeros(b, 19, h, w)
    confident = torch.rand(b, h, w, generator=torch.Generator().manual_seed(0)) < 0.3
    labels = torch.randint(19, (b, h, w), generator=torch.Generator().manual_seed(1))
    # A logit margin of 8 gives p = e^8 / (e^8 + 18) = 0.994 >= 0.968; 3 gives 0.527.
    logits.scatter_(1, labels[:, None], torch.where(confident, 8.0, 3.0)[:, None])
    margins = st.scaled_margins(h)
    assert margins == (2, 15) and st.scaled_margins(512) == (15, 120)
    plabel, weight, share = st.pseudo_labels(logits, 0.968, margins)
    assert torch.equal(plabel, labels)
    assert share == pytest.approx(confident.float().mean().item())
    assert torch.all(weight[:, :2] == 0) and torch.all(weight[:, -15:] == 0)
    assert torch.allclose(weight[:, 2:-15], torch.tensor(share))


def test_class_mix_pastes_half_the_source_classes_and_composes_labels():
    g = torch.Generator().manual_seed(0)
    source = torch.tensor([[[0, 0, 1, 1], [2, 2, 3, 255], [4, 4, 3, 255]]] * 2, dtype=torch.long)
    source[1, 0, 0] = 7  # six classes in image 1, five in image 0
    pseudo = torch.full_like(source, 18)
    masks = st.class_mix_masks(source, g)
    for i in range(2):
        classes = [c for c in source[i].unique().tolist() if c != 255]
        pasted = set(source[i][masks[i] == 1].tolist())
        assert len(pasted) == math.ceil(len(classes) / 2) and 255 not in pasted
        # Whole classes move: every pixel of a chosen class is pasted.
        assert torch.all(masks[i][torch.isin(source[i], torch.tensor(sorted(pasted)))] == 1)
    mixed = st.class_mix(masks, source, pseudo)
    assert torch.equal(mixed, torch.where(masks.bool(), source, pseudo))
    img_s, img_t = torch.rand(2, 3, 3, 4), torch.rand(2, 3, 3, 4)
    mixed_img = st.class_mix(masks, img_s, img_t)
    assert torch.equal(mixed_img, torch.where(masks.bool()[:, None], img_s, img_t))


def test_jitter_steps_follow_kornia_0_5_and_hsv_round_trips():
    g = torch.Generator().manual_seed(3)
    image = torch.rand(3, 8, 8, generator=g)
    hsv = st._rgb_to_hsv(image[None])
    torch.testing.assert_close(st._hsv_to_rgb(hsv)[0], image, rtol=0, atol=1e-6)
    torch.testing.assert_close(st._jitter_one(image, [1.1, 1.0, 1.0, 0.0], [0]), (image + 0.1).clamp(0, 1))  # additive
    torch.testing.assert_close(st._jitter_one(image, [1.0, 1.2, 1.0, 0.0], [1]), (image * 1.2).clamp(0, 1))  # scales
    grey = torch.full((3, 2, 2), 0.3)
    torch.testing.assert_close(st._jitter_one(grey, [1.0, 1.0, 0.5, 0.2], [2, 3]), grey, rtol=0, atol=1e-6)
    pure_red = torch.zeros(3, 1, 1)
    pure_red[0] = 1.0
    rotated = st._jitter_one(pure_red, [1.0, 1.0, 1.0, 1 / 3], [3])  # a third of the circle: red -> green
    torch.testing.assert_close(rotated[:, 0, 0], torch.tensor([0.0, 1.0, 0.0]), rtol=0, atol=1e-6)


def test_blur_kernel_sizes_are_the_dacs_rule():
    assert [st.blur_kernel_size(n) for n in (8, 32, 64, 100, 512, 1024)] == [1, 3, 7, 9, 51, 103]


def test_colour_jitter_and_blur_keep_range_and_are_identity_at_probability_zero():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 16, 24, generator=g)
    assert torch.equal(st.color_jitter(images, g, 0.2, probability=0.0), images)
    assert torch.equal(st.gaussian_blur(images, g, probability=0.0), images)
    jittered = st.color_jitter(images, g, 0.2, probability=1.0)
    blurred = st.gaussian_blur(images, g, probability=1.0)
    for out in (jittered, blurred):
        assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
        assert not torch.equal(out, images)
    assert blurred.var() < images.var()  # a low-pass filter removes variance
    # A constant image stays constant under the blur (kernel sums to one, reflect padding).
    flat = torch.full((1, 3, 16, 16), 0.4)
    torch.testing.assert_close(st.gaussian_blur(flat, g, probability=1.0), flat)


def test_to_model_input_matches_the_segmentors_normalisation():
    from experiments.models.segmentors import normalize

    images = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    torch.testing.assert_close(st.to_model_input(images.float() / 255), normalize(images))


def test_rare_class_sampling_frequencies_match_softmax():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 5000, size=(40, 5))
    counts[:, 0] += 20_000  # a frequent class
    counts[:3, 4] = 4000  # a rare class in three images only
    counts[3:, 4] = 0
    sampler = st.RareClassSampler(counts, temperature=0.1, min_pixels=3000)
    freq = counts.sum(0) / counts.sum()
    expected = np.exp((1 - freq) / 0.1) / np.exp((1 - freq) / 0.1).sum()
    np.testing.assert_allclose(sampler.probabilities, expected, rtol=1e-12)
    g = torch.Generator().manual_seed(0)
    draws = [sampler.sample(g) for _ in range(20_000)]
    empirical = np.bincount([c for c, _ in draws], minlength=5) / len(draws)
    assert np.abs(empirical - expected).max() < 0.015
    assert all(counts[i, c] > 3000 for c, i in draws)
    assert {i for c, i in draws if c == 4} == {0, 1, 2}
    assert st.scaled_min_pixels(3000, (64, 128)) == round(3000 * 64 * 128 / (720 * 1280))


def test_feature_distance_only_on_thing_cells():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, :4, :4] = 13  # a car fills the top-left feature cell of a 2x2 grid
    a, b = torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    b[0, :, 0, 0] = torch.tensor([3.0, 4.0, 0.0])
    b[0, :, 1, 1] = 100.0  # a road cell: ignored
    assert st.feature_distance(a, b, labels, (13,)).item() == pytest.approx(5.0)
    assert st.feature_distance(a, b, torch.zeros_like(labels), (13,)).item() == 0.0


def test_param_groups_follow_mmcv_custom_keys_by_name():
    """mmcv's custom_keys (DAFormer/HRDA configs): the first key a name contains decides,
    longest first; BatchNorm named bn* keeps weight decay, a head's norm layer too."""
    net = nn.Module()
    net.backbone = nn.Module()
    net.backbone.conv = nn.Conv2d(3, 4, 3)
    net.backbone.bn1 = nn.BatchNorm2d(4)            # ResNet's naming: decayed (name match only)
    net.backbone.norm1 = nn.LayerNorm(4)            # MiT's naming: no decay
    net.backbone.pos_block = nn.Linear(4, 4)        # no decay
    net.decode_head = nn.Module()
    net.decode_head.conv = nn.Conv2d(4, 2, 1)
    net.decode_head.norm = nn.LayerNorm(2)          # 'head' comes first: lr x 10 and decayed
    groups = {g["name"]: g for g in st.param_groups(net, lr=1.0, weight_decay=0.01)}
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    assert ids["backbone"] == {id(p) for p in [*net.backbone.conv.parameters(), *net.backbone.bn1.parameters()]}
    assert ids["backbone_no_decay"] == {id(p) for p in [*net.backbone.norm1.parameters(),
                                                         *net.backbone.pos_block.parameters()]}
    assert ids["head"] == {id(p) for p in net.decode_head.parameters()}
    assert groups["head"]["lr"] == 10.0 and groups["head"]["weight_decay"] == 0.01
    assert groups["backbone_no_decay"]["weight_decay"] == 0.0 and groups["backbone"]["weight_decay"] == 0.01
    assert sum(len(g["params"]) for g in groups.values()) == len(list(net.parameters()))


def test_warmup_poly_schedule():
    assert st.lr_factor(0, 100, 10, 1e-6) == pytest.approx(1e-6)
    assert st.lr_factor(10, 100, 10) == pytest.approx(0.9)
    assert st.lr_factor(55, 100, 10) == pytest.approx(0.45)
    warm = [st.lr_factor(i, 100, 10) for i in range(11)]
    assert all(x < y for x, y in zip(warm, warm[1:]))


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path):
    assert ckpt.load_checkpoint(tmp_path) is None
    ckpt.save_checkpoint(tmp_path, {"iteration": 2, "w": torch.ones(3)})
    ckpt.save_checkpoint(tmp_path, {"iteration": 4, "w": torch.zeros(3)})
    assert ckpt.load_checkpoint(tmp_path)["iteration"] == 4
    latest = tmp_path / ckpt.LATEST
    latest.write_bytes(latest.read_bytes()[:100])  # truncated, as by a full disk
    with pytest.warns(RuntimeWarning, match="cannot be read"):
        state = ckpt.load_checkpoint(tmp_path)
    assert state["iteration"] == 2 and torch.equal(state["w"], torch.ones(3))
    (tmp_path / ckpt.PREVIOUS).write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError, match="no readable checkpoint"):
        ckpt.load_checkpoint(tmp_path)


def test_iteration_seeds_are_independent_of_history():
    a = torch.rand(4, generator=ckpt.iteration_generator(0, 7))
    torch.rand(100, generator=ckpt.iteration_generator(0, 6))
    assert torch.equal(a, torch.rand(4, generator=ckpt.iteration_generator(0, 7)))
    assert not torch.equal(a, torch.rand(4, generator=ckpt.iteration_generator(1, 7)))


@pytest.mark.parametrize("mode", ["offline", "none"])
def test_logger_writes_jsonl_with_wandb_offline_or_disabled(tmp_path, mode, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = TrainingLogger(tmp_path, "gta2cs_test_s0", {"a": 1}, wandb_mode=mode, total=4, progress=False)
    for it in (2, 4):
        logger.log(it, {"loss": torch.tensor(1.0 / it), "lr": 0.1})
    logger.close()
    records = read_log(tmp_path / "log.jsonl")
    assert [r["iteration"] for r in records] == [2, 4]
    assert records[1]["loss"] == 0.25 and records[1]["iters_per_s"] > 0
    wandb_files = list((tmp_path / "wandb").glob("offline-run-*/*.wandb")) if (tmp_path / "wandb").exists() else []
    assert bool(wandb_files) == (mode == "offline")
    json.dumps(records)  # plain JSON values only
