"""HRDA (experiments.models.hrda): crop geometry, fusion, sliding windows, layout, a tiny run."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from torch import nn

from experiments.models import hrda
from experiments.models import segmentors as models
from experiments.selftraining.recipe import weighted_cross_entropy


def build(cfg: dict) -> nn.Module:
    """Build through mmseg's registry and initialise like ``build_segmentor``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(avg_non_ignore|build_loss|threshold).*")
        model = models._registry().build(cfg)
    models._quiet_init(model)
    return model


def mini_hrda(**kw) -> nn.Module:
    torch.manual_seed(0)
    return build(hrda.hrda_config(models.SEGMENTORS["mini_r18"], hr_crop_size=(32, 32), **kw))


def up2(x: torch.Tensor) -> torch.Tensor:
    """x2 bilinear upsampling of 4 x 4 maps (align_corners False), written out by hand:
    output j samples input (j + 0.5) / 2 - 0.5, clamped at the borders."""
    u = torch.tensor([[1.00, 0.00, 0.00, 0.00],
                      [0.75, 0.25, 0.00, 0.00],
                      [0.25, 0.75, 0.00, 0.00],
                      [0.00, 0.75, 0.25, 0.00],
                      [0.00, 0.25, 0.75, 0.00],
                      [0.00, 0.00, 0.75, 0.25],
                      [0.00, 0.00, 0.25, 0.75],
                      [0.00, 0.00, 0.00, 1.00]])
    return u @ x @ u.T


# ----------------------------------------------------------------- crop geometry

def test_crop_box_geometry_and_offsets():
    g = torch.Generator().manual_seed(0)
    boxes = [hrda.crop_box(64, 96, (32, 32), 8, g) for _ in range(400)]
    for y1, y2, x1, x2 in boxes:
        assert 0 <= y1 and y2 <= 64 and 0 <= x1 and x2 <= 96
        assert (y2 - y1, x2 - x1) == (32, 32) and y1 % 8 == 0 and x1 % 8 == 0
    # Every offset the original's formula allows, 8 * U{0..(m + 1) // 8 - 1}; as there,
    # the flush offset m = 32 (rows) / 64 (columns) is never drawn.
    assert {b[0] for b in boxes} == {0, 8, 16, 24}
    assert {b[2] for b in boxes} == set(range(0, 57, 8))
    # Non-square crops, divisible 1: every offset 0..m.
    g = torch.Generator().manual_seed(1)
    small = [hrda.crop_box(10, 12, (8, 4), 1, g) for _ in range(300)]
    assert {b[0] for b in small} == {0, 1, 2} and {b[2] for b in small} == set(range(9))
    assert all(b[1] - b[0] == 8 and b[3] - b[2] == 4 for b in small)


def test_crop_box_is_a_function_of_the_generator_seed():
    def draw(seed):
        g = torch.Generator().manual_seed(seed)
        return [hrda.crop_box(1024, 1024, 512, 8, g) for _ in range(20)]

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)


def test_crop_box_full_size_and_edge_cases():
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    assert hrda.crop_box(64, 96, (64, 96), 8, g) == (0, 64, 0, 96)
    assert torch.equal(g.get_state(), state)  # no draw for a full-size crop
    # margin 4 < divisible - 1: the original fails (randint(0, 0)); here offset 0.
    assert {hrda.crop_box(36, 32, 32, 8, g)[0] for _ in range(20)} == {0}
    with pytest.raises(ValueError, match="larger"):
        hrda.crop_box(32, 32, (64, 16), 8, g)


# ----------------------------------------------------------------- fusion

@pytest.mark.parametrize("classwise", [True, False])
def test_fuse_without_box_is_the_hand_computation(classwise):
    torch.manual_seed(0)
    lr = torch.randn(1, 2, 4, 4)
    hr = torch.randn(1, 2, 8, 8)
    att = torch.rand(1, 2 if classwise else 1, 4, 4)
    fused, lr_out, hr_out = hrda.fuse(lr, hr, att)
    expected = up2(att) * hr + up2((1 - att) * lr)
    torch.testing.assert_close(fused, expected)
    torch.testing.assert_close(lr_out, (1 - att) * lr)
    assert hr_out is hr


@pytest.mark.parametrize("classwise", [True, False])
def test_fuse_with_box_is_the_hand_computation(classwise):
    """Input 32 x 32, LR logits 4 x 4 (stride 8 of the input), detail box rows 8..24 and
    columns 16..32: LR cells [1:3, 2:4] keep their attention, the 4 x 4 HR logits go to
    HR cells [2:6, 4:8]."""
    torch.manual_seed(1)
    lr = torch.randn(1, 2, 4, 4)
    hr = torch.randn(1, 2, 4, 4)
    att = torch.rand(1, 2 if classwise else 1, 4, 4)
    fused, lr_out, _ = hrda.fuse(lr, hr, att, box=(8, 24, 16, 32), os=4, lr_scale=0.5)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 1:3, 2:4] = 1
    a = att * mask
    inserted = torch.zeros(1, 2, 8, 8)
    inserted[..., 2:6, 4:8] = hr
    torch.testing.assert_close(fused, up2(a) * inserted + up2((1 - a) * lr))
    torch.testing.assert_close(lr_out, (1 - a) * lr)
    # Attention 1: the HR logits inside the box, the LR logits far from it, and on the
    # box's border the upsampling blends 3/4 HR with 1/4 of the LR cell outside.
    ones = torch.ones_like(att)
    fused1, _, _ = hrda.fuse(lr, hr, ones, box=(8, 24, 16, 32))
    torch.testing.assert_close(fused1[..., 3:5, 5:8], hr[..., 1:3, 1:4])
    # HR cell (2, 5) samples LR rows 0/1 at 1/4 / 3/4 and LR columns 2/3 at 3/4 / 1/4;
    # LR row 0 lies outside the box: attention 3/4 there.
    torch.testing.assert_close(fused1[..., 2, 5], 0.75 * hr[..., 0, 1]
                               + 0.25 * (0.75 * lr[..., 0, 2] + 0.25 * lr[..., 0, 3]))
    torch.testing.assert_close(fused1[..., 0, 0], lr[..., 0, 0])


# ----------------------------------------------------------------- sliding windows

def test_slide_windows_grid_and_inward_shift():
    w = hrda.slide_windows(64, 96, (32, 32), (16, 16))
    assert w == [(y, y + 32, x, x + 32) for y in (0, 16, 32) for x in (0, 16, 32, 48, 64)]
    # 72 rows: the fourth window would end at 80 and is shifted to 40..72.
    assert [b[:2] for b in hrda.slide_windows(72, 32, 32, 16)] == [(0, 32), (16, 48), (32, 64), (40, 72)]
    # Smaller than the window: one window of the image's size.
    assert hrda.slide_windows(24, 16, 32, 16) == [(0, 24, 0, 16)]


def window_index_average(windows, batch, height, width, os=4):
    """Brute force: per output pixel, the mean of i * batch + b over windows i covering it."""
    out = torch.zeros(batch, 1, height // os, width // os)
    for b in range(batch):
        for r in range(height // os):
            for c in range(width // os):
                cover = [i * batch + b for i, (y1, y2, x1, x2) in enumerate(windows)
                         if y1 // os <= r < y2 // os and x1 // os <= c < x2 // os]
                assert cover, "uncovered pixel"
                out[b, 0, r, c] = sum(cover) / len(cover)
    return out


def test_slide_average_is_the_overlap_mean():
    windows = hrda.slide_windows(64, 96, 32, 16)
    batch = 2
    logits = torch.arange(len(windows) * batch, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 8, 8)
    avg = hrda.slide_average(logits, windows, batch, os=4)
    assert avg.shape == (2, 3, 16, 24)
    expected = window_index_average(windows, batch, 64, 96)
    torch.testing.assert_close(avg, expected.expand(-1, 3, -1, -1))
    # Literal values (batch index 0, window index i * 2): corner = window 0 only; input
    # pixel (16..19, 16..19) = windows (0, 1, 5, 6); last corner = window 14 only.
    assert avg[0, 0, 0, 0] == 0 and avg[0, 0, 4, 4] == 2 * (0 + 1 + 5 + 6) / 4
    assert avg[0, 0, 15, 23] == 28 and avg[1, 0, 15, 23] == 29
    with pytest.raises(ValueError, match="uncovered"):
        hrda.slide_average(logits[:2], [(0, 32, 0, 32)] + [(0, 32, 64, 96)], 1)


class RecordingBackbone(nn.Module):
    """Stand-in backbone: records each call's input shape; returns the first channel
    subsampled to stride 4 (four 'levels', only the first is used by the stub head)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        f = x[:, :1, ::4, ::4]
        return [f, f, f, f]


class StubHead(nn.Module):
    def __init__(self, mode, classes=19):
        super().__init__()
        self.mode, self.classes = mode, classes

    def forward(self, feats):
        f = feats[0]
        if self.mode == "index":  # logits = row of the stacked batch
            n = f.shape[0]
            return torch.arange(n, dtype=f.dtype).view(n, 1, 1, 1).expand(-1, self.classes, *f.shape[2:])
        return f.expand(-1, self.classes, -1, -1)


def test_hr_slide_inference_is_one_batched_call_averaged_by_count():
    model = mini_hrda().eval()
    model.backbone = RecordingBackbone()
    model.decode_head.head = StubHead("index")
    model.decode_head.fixed_attention = 1.0  # fused = slide-averaged HR exactly
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = model.inference_logits(images)
    # One LR call and one call with all 15 windows of both images.
    assert model.backbone.calls == [(2, 3, 32, 48), (30, 3, 32, 32)]
    windows = hrda.slide_windows(64, 96, 32, 16)
    torch.testing.assert_close(out, window_index_average(windows, 2, 64, 96).expand(-1, 19, -1, -1))
    # Placement: windows predicting their own pixels reassemble the image at stride 4.
    model.decode_head.head = StubHead("identity")
    with torch.no_grad():
        out = model.inference_logits(images)
    torch.testing.assert_close(out, images[:, :1, ::4, ::4].expand(-1, 19, -1, -1))


# ----------------------------------------------------------------- layout

def test_state_dict_layout_and_attention_head():
    model = mini_hrda()
    keys = model.state_dict().keys()
    assert {k.split(".")[0] for k in keys} == {"backbone", "decode_head"}
    assert {".".join(k.split(".")[:2]) for k in keys if k.startswith("decode_head")} == \
        {"decode_head.head", "decode_head.scale_attention"}
    plain = build(models.SEGMENTORS["mini_r18"])
    assert {k for k in keys if k.startswith("backbone.")} == \
        {k for k in plain.state_dict() if k.startswith("backbone.")}
    # decode_head.head.* is exactly a DAFormer head's layout (DAFormer weights load into it).
    assert {k[len("decode_head.head."):] for k in keys if k.startswith("decode_head.head.")} == \
        {k[len("decode_head."):] for k in plain.state_dict() if k.startswith("decode_head.")}
    head = model.decode_head
    assert not hasattr(head, "conv_seg") and not hasattr(head, "dropout")
    assert isinstance(head.scale_attention.fusion, ConvModule)
    assert head.scale_attention.fusion.conv.kernel_size == (1, 1)
    assert head.scale_attention.conv_seg.out_channels == 19
    assert model.hr_loss_weight == 0.1 and model.scales == [0.5, 1.0] and model.feature_scale == 0.5
    # Generic overrides reach the real heads (num_classes is lifted to the HRDAHead level).
    cfg = hrda.hrda_config(models.SEGMENTORS["mini_r18"], attention_classwise=False)
    cfg["decode_head"]["num_classes"] = 7
    single = build(cfg).decode_head
    assert single.head.conv_seg.out_channels == 7 and single.scale_attention.conv_seg.out_channels == 1
    with pytest.raises(ValueError, match="DAFormerHead"):
        hrda.hrda_config(models.SEGMENTORS["deeplabv2_r101"])


def test_paper_size_attention_head():
    """The attention head at paper size: 256-dim embeddings, 1x1 conv fusion to 256
    channels (+ BN), 19 outputs; built without running."""
    cfg = hrda.hrda_config(models.SEGMENTORS["daformer_mitb5"])
    assert cfg["type"] == "HRDAEncoderDecoder" and cfg["scales"] == [0.5, 1.0]
    assert cfg["hr_crop_size"] == [512, 512] and cfg["crop_coord_divisible"] == 8
    head = build(cfg["decode_head"])
    attn = head.scale_attention
    assert all(e.out_channels == 256 for e in attn.embeddings)
    assert attn.fusion.conv.in_channels == 4 * 256 and attn.fusion.conv.out_channels == 256
    embed = sum(c * 256 + 256 for c in (64, 128, 320, 512))
    fusion = 1024 * 256 + 2 * 256  # conv without bias (norm follows) + BN
    assert sum(p.numel() for p in attn.parameters()) == embed + fusion + 256 * 19 + 19 == 530_707
    assert sum(p.numel() for p in head.head.parameters()) == 3_712_275
    r101 = build(hrda.hrda_config(models.SEGMENTORS["daformer_r101"])["decode_head"])
    assert sum(p.numel() for p in r101.scale_attention.parameters()) == \
        sum(c * 256 + 256 for c in (256, 512, 1024, 2048)) + fusion + 256 * 19 + 19


def test_daformer_head_default_fusion_keeps_keys():
    cfg = models.SEGMENTORS["mini_r18"]["decode_head"]
    default, explicit = build(cfg), build(dict(cfg, fusion="sepaspp"))
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    expected = {f"embeddings.{i}.{p}" for i in range(4) for p in ("weight", "bias")}
    expected |= {"conv_seg.weight", "conv_seg.bias", "fusion.branches.0.conv.weight",
                 "fusion.bottleneck.conv.weight"}
    expected |= {f"fusion.{m}.bn.{p}" for m in ("branches.0", "bottleneck") for p in bn}
    for i in (1, 2, 3):
        for part in ("depthwise_conv", "pointwise_conv"):
            expected |= {f"fusion.branches.{i}.{part}.conv.weight"}
            expected |= {f"fusion.branches.{i}.{part}.bn.{p}" for p in bn}
    assert set(default.state_dict()) == set(explicit.state_dict()) == expected
    assert sum(p.numel() for p in default.parameters()) == sum(p.numel() for p in explicit.parameters())
    conv = build(dict(cfg, fusion="conv"))
    assert {k for k in conv.state_dict() if k.startswith("fusion.")} == \
        {"fusion.conv.weight"} | {f"fusion.bn.{p}" for p in bn}
    with pytest.raises(ValueError, match="fusion"):
        build(dict(cfg, fusion="aspp"))


# ----------------------------------------------------------------- a tiny real run

def test_train_outputs_loss_and_gradients():
    model = mini_hrda().train()
    images = torch.randn(2, 3, 64, 64)
    out = model.train_outputs(images, torch.Generator().manual_seed(0))
    y1, y2, x1, x2 = out["box"]
    assert (y2 - y1, x2 - x1) == (32, 32) and y1 % 8 == 0 and x1 % 8 == 0
    assert out["fused"].shape == (2, 19, 16, 16)
    assert out["lr"].shape == (2, 19, 8, 8) and out["hr"].shape == (2, 19, 8, 8)
    assert [tuple(f.shape) for f in out["features"]] == \
        [(2, 16, 8, 8), (2, 32, 4, 4), (2, 64, 4, 4), (2, 128, 4, 4)]  # LR features
    assert out["box"] == hrda.crop_box(64, 64, 32, 8, torch.Generator().manual_seed(0))  # the first draw

    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 19, (2, 64, 64), generator=g)
    labels[:, :4] = 255
    weight = torch.rand(2, 64, 64, generator=g)
    loss = hrda.hrda_loss(out, labels, weight, weighted_cross_entropy, model.hr_loss_weight)
    up = lambda x, size: F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    expected = 0.9 * weighted_cross_entropy(up(out["fused"], (64, 64)), labels, weight) + \
        0.1 * weighted_cross_entropy(up(out["hr"], (32, 32)), labels[:, y1:y2, x1:x2],
                                     weight[:, y1:y2, x1:x2])
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(hrda.hrda_loss(out, labels, None, weighted_cross_entropy, 0.0),
                               weighted_cross_entropy(up(out["fused"], (64, 64)), labels))
    loss.backward()
    for name in ("head", "scale_attention"):
        params = list(getattr(model.decode_head, name).named_parameters())
        assert params and all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in params), name


def test_inference_and_forced_attention():
    model = mini_hrda().eval()
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        logits = model.inference_logits(images)
        assert logits.shape == (1, 19, 16, 24) and torch.isfinite(logits).all()
        assert model.encode_decode(images, None).shape == (1, 19, 64, 96)
        # extract_feat gives the LR features (feature_scale 0.5): the LR-only prediction.
        lr_only = F.interpolate(model.decode_head.head(model.extract_feat(images)), scale_factor=2,
                                mode="bilinear", align_corners=False)
        model.decode_head.fixed_attention = 0.0
        torch.testing.assert_close(model.inference_logits(images), lr_only)
        train = model.train_outputs(images, torch.Generator().manual_seed(5))
        torch.testing.assert_close(train["fused"], lr_only)

        model.decode_head.fixed_attention = 1.0
        train = model.train_outputs(images, torch.Generator().manual_seed(5))
    y1, y2, x1, x2 = (v // 4 for v in train["box"])
    fused, hr = train["fused"], train["hr"]
    # Inside the box (one HR cell from its edge) the HR prediction ...
    torch.testing.assert_close(fused[..., y1 + 1:y2 - 1, x1 + 1:x2 - 1], hr[..., 1:-1, 1:-1])
    # ... and outside it (one cell away) the LR prediction.
    outside = torch.ones(16, 24, dtype=torch.bool)
    outside[max(y1 - 1, 0):y2 + 1, max(x1 - 1, 0):x2 + 1] = False
    torch.testing.assert_close(fused[..., outside], lr_only[..., outside])


def test_generic_decode_of_one_scale_is_refused():
    model = mini_hrda().eval()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(TypeError, match="inference_logits"):
        model.decode_head(model.extract_feat(x))
    with pytest.raises(NotImplementedError, match="hrda_loss"):
        model.loss(x, [])
    with pytest.raises(ValueError, match="divisible by 8"):
        model.inference_logits(torch.randn(1, 3, 36, 32))
