"""Released DAFormer / HRDA checkpoints (mmseg 0.x names) loaded into our segmentors.

The released files cannot be downloaded here, so the tests write our models' weights
in the released naming with an inverse mapping written independently of the converter,
from the module names of the original code:

- lhoyer/DAFormer ``mmseg/models/backbones/mix_transformer.py``: ``MixVisionTransformer``
  holds ``patch_embed{1-4}`` (``OverlapPatchEmbed``: ``proj`` Conv2d, ``norm``),
  ``block{1-4}`` (lists of ``Block``: ``norm1``, ``attn`` = ``Attention`` with Linear ``q``,
  ``kv`` (rows k then v), ``proj``, and ``sr`` Conv2d + ``norm`` only if sr_ratio > 1;
  ``norm2``; ``mlp`` = ``Mlp`` with Linear ``fc1``, ``dwconv`` = ``DWConv`` whose conv is
  again ``dwconv``, Linear ``fc2``) and ``norm{1-4}``; ``mit_b5``: depths (3, 6, 40, 3),
  dims (64, 128, 320, 512), sr (8, 4, 2, 1), mlp ratio 4.
- ``mmseg/models/decode_heads/daformer_head.py``: ``DAFormerHead.embed_layers`` (a
  ModuleDict keyed str(in_index), each an ``MLP`` of ``segformer_head.py`` = Linear
  ``proj``) and ``fuse_layer`` = ``ASPPWrapper`` (``image_pool`` if pool, ``aspp_modules``
  = ``DepthwiseSeparableASPPModule`` (``sep_aspp_head.py``: index 0 a 1x1 ``ConvModule``,
  dilated ones ``DepthwiseSeparableConvModule`` = ``depthwise_conv`` + ``pointwise_conv``),
  ``bottleneck`` ConvModule 3x3) or, for fusion type ``conv``, one ``ConvModule``;
  ``conv_seg`` from ``BaseDecodeHead``. mmcv ConvModule names: ``conv`` (no bias under a
  norm), ``bn``.
- lhoyer/HRDA ``mmseg/models/decode_heads/hrda_head.py``: ``HRDAHead`` deletes its own
  ``conv_seg``/``dropout`` and holds ``head`` (the DAFormer head) and ``scale_attention``
  (a DAFormer head with 256 channels/embeddings and a 1x1 ``conv`` fusion).
- ``mmseg/models/uda/dacs.py`` / ``uda_decorator.py``: a checkpoint's ``state_dict`` holds
  ``model.`` (student), ``ema_model.`` (teacher), ``imnet_model.`` (ImageNet model).
"""

from __future__ import annotations

import copy
import re
import warnings

import pytest
import torch
from mmcv.cnn import ConvModule
from torch import nn

from experiments.models import released
from experiments.models import segmentors as models

BN5 = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
CONV_MODULE = ("conv.weight",) + tuple(f"bn.{p}" for p in BN5)


# --- the inverse mapping, ours -> released, from the original's module names ---------

def _mit_to_released(key: str, value: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """One key of mmseg 1.x's MixVisionTransformer (without ``backbone.``) in SegFormer's names."""
    stage, part, rest = re.fullmatch(r"layers\.(\d+)\.(\d)\.(.+)", key).groups()
    stage = int(stage) + 1
    if part == "0":  # OverlapPatchEmbed: proj, norm
        return [(f"patch_embed{stage}.{rest.replace('projection.', 'proj.')}", value)]
    if part == "2":
        return [(f"norm{stage}.{rest}", value)]
    block, rest = rest.split(".", 1)
    base = f"block{stage}.{block}."
    if rest.startswith("attn.attn.in_proj_"):
        kind = rest.rsplit("_", 1)[1]
        dim = value.shape[0] // 3
        return [(f"{base}attn.q.{kind}", value[:dim]), (f"{base}attn.kv.{kind}", value[dim:])]
    if rest.startswith("attn.attn.out_proj."):
        return [(f"{base}attn.proj.{rest.rsplit('.', 1)[1]}", value)]
    ffn = re.fullmatch(r"ffn\.layers\.(\d)\.(weight|bias)", rest)
    if ffn:
        name = {"0": "mlp.fc1", "1": "mlp.dwconv.dwconv", "4": "mlp.fc2"}[ffn[1]]
        if ffn[1] != "1" and ffn[2] == "weight":
            value = value.flatten(1)  # 1x1 conv -> Linear (out, in)
        return [(f"{base}{name}.{ffn[2]}", value)]
    assert re.fullmatch(r"(norm1|norm2|attn\.sr|attn\.norm)\.(weight|bias)", rest), rest
    return [(base + rest, value)]


def _head_to_released(key: str, value: torch.Tensor) -> tuple[str, torch.Tensor]:
    """One key of our DAFormerHead in the names of DAFormer's DAFormerHead."""
    embed = re.fullmatch(r"embeddings\.(\d+)\.(weight|bias)", key)
    if embed:
        return f"embed_layers.{embed[1]}.proj.{embed[2]}", (
            value.flatten(1) if embed[2] == "weight" else value)
    if key.startswith("fusion.branches."):
        return "fuse_layer.aspp_modules." + key[len("fusion.branches."):], value
    if key.startswith("fusion."):  # bottleneck, image_pool, or the 1x1 conv fusion itself
        return "fuse_layer." + key[len("fusion."):], value
    assert key.startswith("conv_seg."), key
    return key, value


def to_released(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Our state dict in the released naming, and released key -> our key."""
    mit = any(k.startswith("backbone.layers.") for k in state)
    out, origin = {}, {}
    for key, value in state.items():
        if key.startswith("backbone."):
            inner = key[len("backbone."):]
            items = _mit_to_released(inner, value) if mit else [(inner, value)]  # ResNet: same names
            items = [(f"backbone.{k}", v) for k, v in items]
        else:
            prefix, rest = re.fullmatch(r"(decode_head\.(?:head\.|scale_attention\.)?)(.+)", key).groups()
            rk, rv = _head_to_released(rest, value)
            items = [(prefix + rk, rv)]
        for rk, rv in items:
            assert rk not in out, rk
            out[rk], origin[rk] = rv.clone(), key
    return out, origin


def template(key: str) -> str:
    key = re.sub(r"^backbone\.(patch_embed|block|norm)\d+", r"backbone.\1#", key)
    return re.sub(r"\.\d+(?=\.)", ".#", key)


# --- released names, transcribed from the original code -------------------------------

HEAD_TEMPLATES = {
    "embed_layers.#.proj.weight", "embed_layers.#.proj.bias",
    *(f"fuse_layer.aspp_modules.#.{c}" for c in CONV_MODULE),
    *(f"fuse_layer.aspp_modules.#.{dw}.{c}" for dw in ("depthwise_conv", "pointwise_conv")
      for c in CONV_MODULE),
    *(f"fuse_layer.bottleneck.{c}" for c in CONV_MODULE),
    "conv_seg.weight", "conv_seg.bias"}
MIT_TEMPLATES = {
    *(f"backbone.patch_embed#.{m}.{p}" for m in ("proj", "norm") for p in ("weight", "bias")),
    *(f"backbone.block#.#.{m}.{p}" for m in ("norm1", "attn.q", "attn.kv", "attn.proj", "attn.sr",
                                             "attn.norm", "norm2", "mlp.fc1", "mlp.dwconv.dwconv",
                                             "mlp.fc2") for p in ("weight", "bias")),
    "backbone.norm#.weight", "backbone.norm#.bias"}
_HEAD_MITB5 = {  # DAFormer head on MiT-B5: embeddings 256, fusion 4 x 256 = 1024 channels
    "decode_head.embed_layers.0.proj.weight": ("decode_head.embeddings.0.weight", (256, 64)),
    "decode_head.embed_layers.0.proj.bias": ("decode_head.embeddings.0.bias", (256,)),
    "decode_head.embed_layers.2.proj.weight": ("decode_head.embeddings.2.weight", (256, 320)),
    "decode_head.embed_layers.3.proj.weight": ("decode_head.embeddings.3.weight", (256, 512)),
    "decode_head.fuse_layer.aspp_modules.0.conv.weight":
        ("decode_head.fusion.branches.0.conv.weight", (256, 1024, 1, 1)),
    "decode_head.fuse_layer.aspp_modules.0.bn.weight": ("decode_head.fusion.branches.0.bn.weight", (256,)),
    "decode_head.fuse_layer.aspp_modules.0.bn.running_var":
        ("decode_head.fusion.branches.0.bn.running_var", (256,)),
    "decode_head.fuse_layer.aspp_modules.1.depthwise_conv.conv.weight":
        ("decode_head.fusion.branches.1.depthwise_conv.conv.weight", (1024, 1, 3, 3)),
    "decode_head.fuse_layer.aspp_modules.1.depthwise_conv.bn.running_mean":
        ("decode_head.fusion.branches.1.depthwise_conv.bn.running_mean", (1024,)),
    "decode_head.fuse_layer.aspp_modules.2.pointwise_conv.conv.weight":
        ("decode_head.fusion.branches.2.pointwise_conv.conv.weight", (256, 1024, 1, 1)),
    "decode_head.fuse_layer.aspp_modules.3.pointwise_conv.bn.num_batches_tracked":
        ("decode_head.fusion.branches.3.pointwise_conv.bn.num_batches_tracked", ()),
    "decode_head.fuse_layer.bottleneck.conv.weight": ("decode_head.fusion.bottleneck.conv.weight", (256, 1024, 3, 3)),
    "decode_head.fuse_layer.bottleneck.bn.bias": ("decode_head.fusion.bottleneck.bn.bias", (256,)),
    "decode_head.conv_seg.weight": ("decode_head.conv_seg.weight", (19, 256, 1, 1)),
    "decode_head.conv_seg.bias": ("decode_head.conv_seg.bias", (19,)),
}
RELEASED_NAMES = {
    "daformer_mitb5": {
        "backbone.patch_embed1.proj.weight": ("backbone.layers.0.0.projection.weight", (64, 3, 7, 7)),
        "backbone.patch_embed1.proj.bias": ("backbone.layers.0.0.projection.bias", (64,)),
        "backbone.patch_embed1.norm.weight": ("backbone.layers.0.0.norm.weight", (64,)),
        "backbone.patch_embed2.proj.weight": ("backbone.layers.1.0.projection.weight", (128, 64, 3, 3)),
        "backbone.patch_embed4.proj.weight": ("backbone.layers.3.0.projection.weight", (512, 320, 3, 3)),
        "backbone.patch_embed4.norm.bias": ("backbone.layers.3.0.norm.bias", (512,)),
        "backbone.block1.0.norm1.weight": ("backbone.layers.0.1.0.norm1.weight", (64,)),
        "backbone.block1.0.attn.q.weight": ("backbone.layers.0.1.0.attn.attn.in_proj_weight", (64, 64)),
        "backbone.block1.0.attn.q.bias": ("backbone.layers.0.1.0.attn.attn.in_proj_bias", (64,)),
        "backbone.block1.0.attn.kv.weight": ("backbone.layers.0.1.0.attn.attn.in_proj_weight", (128, 64)),
        "backbone.block1.0.attn.kv.bias": ("backbone.layers.0.1.0.attn.attn.in_proj_bias", (128,)),
        "backbone.block1.0.attn.proj.weight": ("backbone.layers.0.1.0.attn.attn.out_proj.weight", (64, 64)),
        "backbone.block1.0.attn.sr.weight": ("backbone.layers.0.1.0.attn.sr.weight", (64, 64, 8, 8)),
        "backbone.block1.0.attn.norm.weight": ("backbone.layers.0.1.0.attn.norm.weight", (64,)),
        "backbone.block1.2.norm2.bias": ("backbone.layers.0.1.2.norm2.bias", (64,)),
        "backbone.block1.0.mlp.fc1.weight": ("backbone.layers.0.1.0.ffn.layers.0.weight", (256, 64)),
        "backbone.block1.0.mlp.dwconv.dwconv.weight": ("backbone.layers.0.1.0.ffn.layers.1.weight", (256, 1, 3, 3)),
        "backbone.block1.0.mlp.fc2.weight": ("backbone.layers.0.1.0.ffn.layers.4.weight", (64, 256)),
        "backbone.block2.5.attn.sr.weight": ("backbone.layers.1.1.5.attn.sr.weight", (128, 128, 4, 4)),
        "backbone.block3.0.attn.sr.weight": ("backbone.layers.2.1.0.attn.sr.weight", (320, 320, 2, 2)),
        "backbone.block3.39.attn.kv.weight": ("backbone.layers.2.1.39.attn.attn.in_proj_weight", (640, 320)),
        "backbone.block3.39.mlp.fc1.bias": ("backbone.layers.2.1.39.ffn.layers.0.bias", (1280,)),
        "backbone.block3.39.mlp.fc2.weight": ("backbone.layers.2.1.39.ffn.layers.4.weight", (320, 1280)),
        "backbone.block4.2.attn.q.weight": ("backbone.layers.3.1.2.attn.attn.in_proj_weight", (512, 512)),
        "backbone.block4.2.mlp.dwconv.dwconv.bias": ("backbone.layers.3.1.2.ffn.layers.1.bias", (2048,)),
        "backbone.norm1.weight": ("backbone.layers.0.2.weight", (64,)),
        "backbone.norm3.bias": ("backbone.layers.2.2.bias", (320,)),
        "backbone.norm4.weight": ("backbone.layers.3.2.weight", (512,)),
        **_HEAD_MITB5,
    },
    "daformer_r101": {
        "backbone.stem.0.weight": ("backbone.stem.0.weight", (32, 3, 3, 3)),
        "backbone.stem.1.running_mean": ("backbone.stem.1.running_mean", (32,)),
        "backbone.stem.3.weight": ("backbone.stem.3.weight", (32, 32, 3, 3)),
        "backbone.stem.6.weight": ("backbone.stem.6.weight", (64, 32, 3, 3)),
        "backbone.stem.7.weight": ("backbone.stem.7.weight", (64,)),
        "backbone.layer1.0.conv1.weight": ("backbone.layer1.0.conv1.weight", (64, 64, 1, 1)),
        "backbone.layer1.0.bn1.weight": ("backbone.layer1.0.bn1.weight", (64,)),
        "backbone.layer1.0.conv2.weight": ("backbone.layer1.0.conv2.weight", (64, 64, 3, 3)),
        "backbone.layer1.0.conv3.weight": ("backbone.layer1.0.conv3.weight", (256, 64, 1, 1)),
        "backbone.layer1.0.bn3.running_var": ("backbone.layer1.0.bn3.running_var", (256,)),
        "backbone.layer1.0.downsample.0.weight": ("backbone.layer1.0.downsample.0.weight", (256, 64, 1, 1)),
        "backbone.layer1.0.downsample.1.weight": ("backbone.layer1.0.downsample.1.weight", (256,)),
        "backbone.layer3.22.conv2.weight": ("backbone.layer3.22.conv2.weight", (256, 256, 3, 3)),
        "backbone.layer4.0.downsample.0.weight": ("backbone.layer4.0.downsample.0.weight", (2048, 1024, 1, 1)),
        "backbone.layer4.2.bn3.num_batches_tracked": ("backbone.layer4.2.bn3.num_batches_tracked", ()),
        "decode_head.embed_layers.0.proj.weight": ("decode_head.embeddings.0.weight", (256, 256)),
        "decode_head.embed_layers.3.proj.weight": ("decode_head.embeddings.3.weight", (256, 2048)),
        **{k: v for k, v in _HEAD_MITB5.items() if "embed_layers" not in k},
    },
}
ABSENT = {  # names the original never has for these configs
    "daformer_mitb5": ["backbone.block4.0.attn.sr.weight", "backbone.block3.40.norm1.weight",
                       "backbone.head.weight", "decode_head.fuse_layer.image_pool.1.conv.weight",
                       "decode_head.fuse_layer.aspp_modules.0.conv.bias"],
    "daformer_r101": ["backbone.conv1.weight", "backbone.layer3.23.conv1.weight", "backbone.fc.weight",
                      "decode_head.fuse_layer.aspp_modules.4.conv.weight"],
}
_HEAD_COUNT = 4 * 2 + 6 + 3 * 12 + 6 + 2  # embeddings, 1x1 branch, 3 separable branches, bottleneck, classifier
RELEASED_COUNT = {  # from the original structure: MiT block 20 tensors with sr, 16 without
    "daformer_mitb5": sum(d * (20 if sr > 1 else 16) for d, sr in zip((3, 6, 40, 3), (8, 4, 2, 1)))
    + 4 * 4 + 4 * 2 + _HEAD_COUNT,
    # ResNet-V1c-101: deep stem 3 x (conv + BN), 33 bottlenecks of 3 x (conv + BN), 4 downsamples
    "daformer_r101": 3 * 6 + 33 * 18 + 4 * 6 + _HEAD_COUNT,
}


# --- helpers --------------------------------------------------------------------------

def randomize(state: dict[str, torch.Tensor], seed: int) -> None:
    """Distinct values in every tensor (fresh BatchNorm / LayerNorm are all 0 or 1)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, tensor in state.items():
            if key.endswith("num_batches_tracked"):
                tensor.fill_(int(torch.randint(1, 10_000, (), generator=generator)))
            elif key.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.05
                             + (1.0 if "norm" in key or ".bn" in key else 0.0))


def build_fast(name: str) -> nn.Module:
    """Our segmentor ``name`` through mmseg's registry, without mmseg's (slow) weight init."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(avg_non_ignore|build_loss).*")
        return models._registry().build(copy.deepcopy(models.SEGMENTORS[name]))


def save_like_daformer(path, student, teacher=None, imnet=None) -> None:
    """A DACS checkpoint as the authors' mmcv 1.x runner writes it."""
    teacher = student if teacher is None else teacher
    imnet = student if imnet is None else imnet
    state = {**{f"model.{k}": v for k, v in student.items()},
             **{f"ema_model.{k}": v for k, v in teacher.items()},
             **{f"imnet_model.{k}": v for k, v in imnet.items()}}
    meta = {"mmcv_version": "1.3.7", "iter": 40000, "CLASSES": ("road", "sidewalk"),
            "PALETTE": [[128, 64, 128], [244, 35, 232]]}
    torch.save({"meta": meta, "state_dict": state,
                "optimizer": {"state": {}, "param_groups": [{"lr": 6e-5}]}}, path)


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for key in a:
        assert a[key].shape == b[key].shape and torch.equal(a[key], b[key]), key


# --- round trips ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["daformer_mitb5", "daformer_r101"])
def test_paper_segmentor_round_trip(name, tmp_path, monkeypatch):
    model = build_fast(name)
    ours = model.state_dict()
    randomize(ours, seed=1)
    rel, origin = to_released(ours)
    # the inverse mapping produces the original's names for the corresponding parameters
    for key, (our_key, shape) in RELEASED_NAMES[name].items():
        assert key in rel, key
        assert origin[key] == our_key and tuple(rel[key].shape) == shape, key
    assert not set(ABSENT[name]) & set(rel)
    assert len(rel) == RELEASED_COUNT[name]
    if name == "daformer_mitb5":
        assert {template(k) for k in rel} == MIT_TEMPLATES | {f"decode_head.{t}" for t in HEAD_TEMPLATES}
    assert released.is_released_layout(rel) and not released.is_released_layout(ours)

    path = tmp_path / "released.pth"
    save_like_daformer(path, rel)
    built = []
    monkeypatch.setattr(models, "build_segmentor",
                        lambda n, **kw: built.append(n) or build_fast(n))  # fresh, other values
    state = released.load_released(path, name)
    assert built == [name]
    assert_same(state, ours)
    build_fast(name).load_state_dict(state, strict=True)


@pytest.mark.parametrize("name", ["mini_mitb0", "mini_r18"])
def test_tiny_round_trip_forward(name, tmp_path, caplog):
    torch.manual_seed(0)
    model = models.build_segmentor(name).eval()
    ours = model.state_dict()
    randomize(ours, seed=2)
    teacher = {k: v.clone() for k, v in ours.items()}
    randomize(teacher, seed=3)
    student_rel, _ = to_released(ours)
    teacher_rel, _ = to_released(teacher)
    imnet_rel = {k: torch.zeros_like(v) for k, v in student_rel.items()}
    path = tmp_path / "released.pth"
    save_like_daformer(path, student_rel, teacher_rel, imnet_rel)

    with caplog.at_level("INFO", logger=released.__name__):
        state = released.load_released(path, name)
    assert_same(state, ours)
    assert "released mmseg 0.x layout" in caplog.text
    assert_same(released.load_released(path, name, network="teacher"), teacher)

    loaded = models.build_segmentor(name).eval()
    loaded.load_state_dict(state, strict=True)
    images = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected, got = models.segment(model, images), models.segment(loaded, images)
    assert torch.isfinite(expected).all() and torch.equal(got, expected)


def _scale_attention(in_channels: list[int], dims: int) -> nn.Module:
    """HRDA's scale attention in our names, built by hand: a DAFormer head whose fusion is
    one 1x1 ConvModule stored as ``fusion`` (``fusion.conv``, ``fusion.bn``)."""
    head = nn.Module()
    head.embeddings = nn.ModuleList(nn.Conv2d(c, dims, 1) for c in in_channels)
    head.fusion = ConvModule(dims * len(in_channels), dims, 1, norm_cfg=dict(type="BN"))
    head.conv_seg = nn.Conv2d(dims, 19, 1)
    return head


def test_hrda_heads_map_to_their_prefixes():
    """HRDA: ``decode_head.head.*`` and ``decode_head.scale_attention.*`` each through the
    DAFormer-head rules, prefixes kept; no ``decode_head.conv_seg`` (HRDAHead deletes it)."""
    mini = build_fast("mini_mitb0")
    head_cfg = models.SEGMENTORS["mini_mitb0"]["decode_head"]
    expected = {f"backbone.{k}": v for k, v in mini.backbone.state_dict().items()}
    expected.update({f"decode_head.head.{k}": v for k, v in mini.decode_head.state_dict().items()})
    attention = _scale_attention(head_cfg["in_channels"], head_cfg["channels"])
    expected.update({f"decode_head.scale_attention.{k}": v for k, v in attention.state_dict().items()})
    randomize(expected, seed=5)
    rel, origin = to_released(expected)
    for key, ours in {
        "decode_head.head.embed_layers.0.proj.weight": "decode_head.head.embeddings.0.weight",
        "decode_head.head.fuse_layer.aspp_modules.1.depthwise_conv.conv.weight":
            "decode_head.head.fusion.branches.1.depthwise_conv.conv.weight",
        "decode_head.head.fuse_layer.bottleneck.bn.running_var": "decode_head.head.fusion.bottleneck.bn.running_var",
        "decode_head.head.conv_seg.weight": "decode_head.head.conv_seg.weight",
        "decode_head.scale_attention.embed_layers.3.proj.bias": "decode_head.scale_attention.embeddings.3.bias",
        "decode_head.scale_attention.fuse_layer.conv.weight": "decode_head.scale_attention.fusion.conv.weight",
        "decode_head.scale_attention.fuse_layer.bn.running_mean":
            "decode_head.scale_attention.fusion.bn.running_mean",
        "decode_head.scale_attention.conv_seg.bias": "decode_head.scale_attention.conv_seg.bias",
    }.items():
        assert origin[key] == ours
    assert {template(k) for k in rel if k.startswith("decode_head.head.")} == {
        f"decode_head.head.{t}" for t in HEAD_TEMPLATES}
    assert {template(k) for k in rel if k.startswith("decode_head.scale_attention.")} == {
        f"decode_head.scale_attention.{t}" for t in
        ("embed_layers.#.proj.weight", "embed_layers.#.proj.bias", "conv_seg.weight", "conv_seg.bias",
         *(f"fuse_layer.{c}" for c in CONV_MODULE))}
    assert not any(k.startswith("decode_head.conv_seg") for k in rel)
    assert released.is_released_layout(rel) and not released.is_released_layout(expected)
    assert_same(released.convert(rel, expected), expected)


@pytest.mark.skipif("hrda_mitb5" not in models.SEGMENTORS, reason="hrda_mitb5 not registered yet")
def test_hrda_mitb5_round_trip():
    ours = build_fast("hrda_mitb5").state_dict()
    randomize(ours, seed=6)
    rel, _ = to_released(ours)
    assert "decode_head.scale_attention.fuse_layer.conv.weight" in rel
    # the DAFormer MiT-B5 keys, the head's under decode_head.head., and the attention's
    # 4 embeddings x 2 + 1x1 ConvModule 6 + classifier 2
    assert len(rel) == RELEASED_COUNT["daformer_mitb5"] + 16
    assert tuple(rel["decode_head.scale_attention.embed_layers.0.proj.weight"].shape) == (256, 64)
    assert_same(released.convert(rel, ours), ours)


# --- refusals -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mini():
    ours = build_fast("mini_mitb0").state_dict()
    randomize(ours, seed=7)
    return ours, to_released(ours)[0]


def test_unknown_keys_are_refused_by_name(mini):
    ours, rel = mini
    extra = dict(rel)
    extra["decode_head.fuse_layer.context_layer.conv.weight"] = torch.zeros(1)
    extra["backbone.head.weight"] = torch.zeros(1000, 128)
    extra["backbone.block1.0.attn.qkv.weight"] = torch.zeros(48, 16)
    with pytest.raises(ValueError) as error:
        released.convert(extra, ours, source="gta2cs.pth")
    message = str(error.value)
    assert "gta2cs.pth" in message and "without a place in the model (3)" in message
    for key in ("decode_head.fuse_layer.context_layer.conv.weight", "backbone.head.weight",
                "backbone.block1.0.attn.qkv.weight"):
        assert key in message
    many = dict(rel, **{f"decode_head.aux_{i}.weight": torch.zeros(1) for i in range(25)})
    with pytest.raises(ValueError, match=r"\(25\): .*\.\.\. \(5 more\)"):
        released.convert(many, ours)


def test_two_keys_onto_one_are_refused(mini):
    ours, rel = mini
    both = dict(rel, **{"backbone.patch_embed1.projection.weight": rel["backbone.patch_embed1.proj.weight"]})
    with pytest.raises(ValueError, match=r"mapped onto one key \(1\): backbone.patch_embed1.proj.weight \+ "
                                         r"backbone.patch_embed1.projection.weight -> "
                                         r"backbone.layers.0.0.projection.weight"):
        released.convert(both, ours)


def test_missing_keys_are_refused_by_name(mini):
    ours, rel = mini
    missing = {k: v for k, v in rel.items()
               if k not in ("decode_head.conv_seg.weight", "backbone.block2.1.attn.kv.weight")}
    with pytest.raises(ValueError) as error:
        released.convert(missing, ours)
    message = str(error.value)
    assert "model keys left without a value (2)" in message
    assert "decode_head.conv_seg.weight" in message
    assert "backbone.layers.1.1.1.attn.attn.in_proj_weight" in message
    assert "backbone.block2.1.attn.q.weight" in message  # a q without its kv has no place


def test_wrong_shapes_are_refused_by_name(mini):
    ours, rel = mini
    wrong = dict(rel)
    wrong["decode_head.embed_layers.1.proj.weight"] = torch.zeros(32, 33)
    wrong["decode_head.conv_seg.weight"] = torch.zeros(16, 32, 1, 1)
    wrong["backbone.block1.1.attn.kv.weight"] = torch.zeros(30, 16)
    with pytest.raises(ValueError) as error:
        released.convert(wrong, ours)
    message = str(error.value)
    assert "shape mismatches (3)" in message
    assert "decode_head.embed_layers.1.proj.weight -> decode_head.embeddings.1.weight: " \
           "(32, 33, 1, 1) vs model (32, 32, 1, 1)" in message
    assert "decode_head.conv_seg.weight: (16, 32, 1, 1) vs model (19, 32, 1, 1)" in message
    assert "backbone.block1.1.attn.q.weight + backbone.block1.1.attn.kv.weight" in message


def test_absent_num_batches_tracked_taken_from_model(mini):
    ours, rel = mini
    old = {k: v for k, v in rel.items() if not k.endswith("num_batches_tracked")}
    result = released.conversion(old, ours, source="old.pth")
    assert_same(result.state, {k: (v if k.endswith("num_batches_tracked") else ours[k])
                               for k, v in ours.items()})
    counters = [k for k in ours if k.endswith("num_batches_tracked")]
    assert result.filled == sorted(counters) and counters
    assert f"{len(counters)} BatchNorm num_batches_tracked" in result.summary("old.pth")


def test_our_layout_passes_through_unchanged(mini, tmp_path):
    ours, _ = mini
    assert not released.is_released_layout(ours)
    state = released.convert(ours, ours)
    assert list(state) == list(ours) and all(state[k] is ours[k] for k in ours)
    with pytest.raises(ValueError, match="decode_head.embeddings.0.weight"):
        released.convert({k: v for k, v in ours.items() if k != "decode_head.embeddings.0.weight"}, ours)
    path = tmp_path / "merged.pth"
    torch.save({"state_dict": ours, "meta": {}}, path)
    assert_same(released.load_released(path, "mini_mitb0"), ours)


def test_a_released_checkpoint_evaluates_through_the_one_evaluation_path(tmp_path):
    """``python -m experiments.evaluate checkpoint=<released.pth> segmentor=...`` reads the
    released layout (converted on load) and scores exactly what the original weights score."""
    import numpy as np

    from experiments.inference import sources
    from experiments.inference.evaluation import evaluate, evaluate_model

    torch.manual_seed(0)
    model = models.build_segmentor("mini_mitb0").eval()
    ours = model.state_dict()
    randomize(ours, seed=4)
    model.load_state_dict(ours)
    rel, _ = to_released(ours)
    save_like_daformer(tmp_path / "released.pth", rel)
    rng = np.random.default_rng(0)
    data = [{"image": rng.integers(0, 256, (32, 48, 3), dtype=np.uint8),
             "label": rng.integers(0, 19, (32, 48)).astype(np.uint8), "path": f"{i}.png"} for i in range(3)]
    source = sources.from_checkpoint(tmp_path / "released.pth", "mini_mitb0")
    assert_same(source.state(), ours)
    confusions = evaluate(source, {"cityscapes": data}, tmp_path / "eval", stand_in=False, progress=False)
    np.testing.assert_array_equal(confusions["cityscapes"], evaluate_model(model, data, progress=False))
