"""Segmentors built through mmseg, the DAFormer and DeepLabV2 heads, pretrained loading."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from experiments.models import segmentors as models

MINI = ["mini_r18", "mini_mitb0"]
PAPER = ["deeplabv2_r101", "daformer_mitb5", "daformer_r101"]


def head_from(name: str, **kw) -> torch.nn.Module:
    cfg = dict(models.SEGMENTORS[name]["decode_head"], **kw)
    return models._registry().build(cfg)


def forward_check(name: str, size=(64, 96)) -> None:
    torch.manual_seed(0)
    model = models.build_segmentor(name).eval()
    assert set(k.split(".")[0] for k in model.state_dict()) == {"backbone", "decode_head"}
    with torch.no_grad():
        logits = models.segment(model, torch.randn(2, 3, *size))
    assert logits.shape == (2, 19, *size) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", MINI)
def test_mini_segmentor_forward(name):
    forward_check(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", PAPER)
def test_paper_segmentor_forward(name):
    forward_check(name)


def test_num_classes_and_unknown_names():
    model = models.build_segmentor("mini_r18", num_classes=7).eval()
    with torch.no_grad():
        assert models.segment(model, torch.randn(1, 3, 32, 32)).shape[1] == 7
    with pytest.raises(KeyError, match="mini_r50"):
        models.build_segmentor("mini_r50")
    with pytest.raises(TypeError, match="colour"):
        models.build_segmentor("mini_r18", colour=1)
    with pytest.raises(ValueError, match="ResNet"):
        models.build_segmentor("mini_mitb0", norm="gn")


@pytest.mark.parametrize("norm,groups", [("gn", 8), ("ln", 1)])
def test_norm_override_removes_batchnorm_statistics(norm, groups):
    model = models.build_segmentor("mini_r18", norm=norm)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_groups == groups for m in norms)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert not any("running_" in k for k in model.state_dict())
    bn = models.build_segmentor("mini_r18")
    assert any("running_var" in k for k in bn.state_dict())


def test_normalize_layouts():
    rng = np.random.default_rng(0)
    bhwc = rng.integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    a = models.normalize(bhwc)
    b = models.normalize(torch.from_numpy(bhwc).permute(0, 3, 1, 2))
    c = models.normalize(bhwc[0])
    assert a.shape == (2, 3, 5, 7) and a.dtype == torch.float32
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(c, a[:1])
    expected = (bhwc[1, 2, 3, 0] - 123.675) / 58.395
    assert float(a[1, 0, 2, 3]) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="B x H x W x 3"):
        models.normalize(np.zeros((2, 4, 5, 6), np.uint8))


def test_daformer_head_shape_and_parameter_count():
    """Paper-size head on MiT-B5 stages: the count in the module docstring."""
    head = head_from("daformer_mitb5").eval()
    c, e, n = [64, 128, 320, 512], 256, 19
    embed = sum(ci * e + e for ci in c)
    fused = len(c) * e
    branch_1x1 = fused * e + 2 * e
    separable = fused * 9 + 2 * fused + fused * e + 2 * e  # depthwise + BN, pointwise + BN
    bottleneck = 9 * 4 * e * e + 2 * e
    expected = embed + branch_1x1 + 3 * separable + bottleneck + e * n + n
    assert sum(p.numel() for p in head.parameters()) == expected == 3_712_275
    feats = [torch.randn(2, ci, 64 // s, 96 // s) for ci, s in zip(c, (4, 8, 16, 32))]
    with torch.no_grad():
        assert head(feats).shape == (2, 19, 16, 24)
    assert sum(p.numel() for p in head_from("daformer_r101").parameters()) == 4_433_171


def test_daformer_head_uses_every_parameter():
    """No dead branch: every parameter gets a gradient (matters for DDP and merging)."""
    head = head_from("mini_mitb0").train()
    feats = [torch.randn(2, ci, 32 // s, 32 // s) for ci, s in zip([16, 32, 80, 128], (4, 8, 16, 32))]
    head(feats).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


def test_deeplabv2_head_is_sum_of_dilated_convolutions():
    head = head_from("deeplabv2_r101", in_channels=8, num_classes=5).eval()
    assert not hasattr(head, "conv_seg") and len(head.aspp) == 4
    x = torch.randn(1, 8, 30, 30)
    expected = sum(F.conv2d(x, conv.weight, conv.bias, padding=d, dilation=d)
                   for conv, d in zip(head.aspp, (6, 12, 18, 24)))
    with torch.no_grad():
        torch.testing.assert_close(head([None, None, None, x]), expected)


# ----------------------------------------------------------------- pretrained loading

def to_segformer_layout(state: dict) -> dict:
    """Inverse of the documented mapping: mmseg MixVisionTransformer -> SegFormer keys."""
    out = {"head.weight": torch.zeros(3, 4), "head.bias": torch.zeros(3)}
    for key, value in state.items():
        parts = key.split(".")
        stage, slot, rest = int(parts[1]) + 1, parts[2], parts[3:]
        if slot == "0":
            out[f"patch_embed{stage}." + ".".join(rest).replace("projection", "proj")] = value
        elif slot == "2":
            out[f"norm{stage}." + ".".join(rest)] = value
        else:
            block, tail = rest[0], ".".join(rest[1:])
            base = f"block{stage}.{block}."
            if tail.startswith("attn.attn.in_proj_"):
                kind = tail.rsplit("_", 1)[1]
                dim = value.shape[0] // 3
                out[base + f"attn.q.{kind}"], out[base + f"attn.kv.{kind}"] = value[:dim], value[dim:]
            elif tail.startswith("attn.attn.out_proj."):
                out[base + "attn.proj." + tail.rsplit(".", 1)[1]] = value
            elif tail.startswith("ffn.layers."):
                layer, kind = tail.split(".")[2:]
                name = {"0": "mlp.fc1", "1": "mlp.dwconv.dwconv", "4": "mlp.fc2"}[layer]
                if layer != "1" and kind == "weight":
                    value = value.flatten(1)
                out[base + f"{name}.{kind}"] = value
            else:
                out[base + tail] = value
    return out


@pytest.fixture(scope="module")
def mit_file(tmp_path_factory):
    torch.manual_seed(1)
    source = models.build_segmentor("mini_mitb0")
    state = {k: v.clone() for k, v in source.backbone.state_dict().items()}
    path = tmp_path_factory.mktemp("pretrained") / "mit_b0.pth"
    torch.save(to_segformer_layout(state), path)
    return path, state


def test_segformer_file_round_trips(mit_file):
    path, state = mit_file
    torch.manual_seed(2)
    model = models.build_segmentor("mini_mitb0", pretrained=path)
    loaded = model.backbone.state_dict()
    assert set(loaded) == set(state)
    for key in state:
        torch.testing.assert_close(loaded[key], state[key], rtol=0, atol=0, msg=key)


def test_mapping_agrees_with_mmseg_converter(mit_file):
    path, _ = mit_file
    import mmseg

    converter = Path(mmseg.__file__).parent / ".mim/tools/model_converters/mit2mmseg.py"
    if not converter.exists():
        pytest.skip("mmseg's model converter is not installed here")
    spec = importlib.util.spec_from_file_location("mit2mmseg", converter)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reference = module.convert_mit(torch.load(path))
    model = models.build_segmentor("mini_mitb0")
    models.load_pretrained_backbone(model, path)
    ours = model.backbone.state_dict()
    assert set(reference) == set(ours)
    for key, value in reference.items():
        torch.testing.assert_close(ours[key], value, rtol=0, atol=0, msg=key)


def test_mismatches_are_refused_with_key_names(mit_file, tmp_path):
    path, _ = mit_file
    raw = torch.load(path)
    model = models.build_segmentor("mini_mitb0")
    cases = {
        "missing": lambda d: d.pop("block2.0.norm1.weight"),
        "unexpected": lambda d: d.__setitem__("block9.0.extra.weight", torch.zeros(1)),
        "shape": lambda d: d.__setitem__("norm4.weight", torch.zeros(7)),
    }
    expected = {"missing": "layers.1.1.0.norm1.weight", "unexpected": "layers.8.1.0.extra.weight",
                "shape": "layers.3.2.weight"}
    for kind, edit in cases.items():
        broken = dict(raw)
        edit(broken)
        bad = tmp_path / f"{kind}.pth"
        torch.save(broken, bad)
        with pytest.raises(ValueError, match=kind) as error:
            models.load_pretrained_backbone(model, bad)
        assert expected[kind] in str(error.value) and str(bad) in str(error.value)


def test_resnet_file_under_state_dict(tmp_path):
    torch.manual_seed(3)
    source = models.build_segmentor("mini_r18")
    state = {k: v.clone() for k, v in source.backbone.state_dict().items()}
    path = tmp_path / "resnet18_v1c.pth"
    torch.save({"state_dict": dict(state, **{"fc.weight": torch.zeros(10, 128)})}, path)
    torch.manual_seed(4)
    model = models.build_segmentor("mini_r18", pretrained=path)
    for key, value in model.backbone.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)
    with pytest.raises(ValueError, match="missing"):
        models.load_pretrained_backbone(models.build_segmentor("mini_mitb0"), path)
