"""Decode heads that mmseg 1.x lacks: DAFormer's and DeepLabV2's.

Both are registered in ``mmseg.registry.MODELS`` when this module is imported, so a
config dict ``dict(type="DAFormerHead", ...)`` builds through mmseg's registry like
any built-in head. ``experiments.models.segmentors`` imports this module before building.

DAFormer head (Hoyer et al., "DAFormer", CVPR 2022, Sec. 3.2 and Fig. 4):
each encoder stage i is embedded to ``embed_dims`` channels by a per-pixel linear
layer (a 1x1 convolution without norm or activation: the same function as the
paper's token-wise MLP), bilinearly upsampled to the first stage's resolution (1/4),
and the concatenation is fused by a *separable ASPP*: parallel branches, one 1x1
ConvModule (dilation 1) and three depthwise-separable 3x3 convolutions with
dilations 6, 12, 18, each followed by norm + ReLU, concatenated and reduced by a 3x3
ConvModule to ``channels``; then dropout and the 1x1 classifier. The paper's
context-aware fusion has no image-pooling branch (its configuration
``daformer_sepaspp``: dilations (1, 6, 12, 18), pool=False); ``pool=True`` adds one
for experiments but is off by default.

``fusion="conv"`` replaces the separable ASPP by one 1x1 ConvModule (norm + ReLU)
from the concatenated embeddings to ``channels`` (attribute ``fusion``): the fusion of
DAFormer's "SegFormer with C_e=256" ablation (DAFormer Tab. 7, config
``daformer_conv1``), which HRDA uses for its light scale-attention head (HRDA Sec. 3.3:
the attention head is a DAFormer head with 1x1-conv fusion and 256-dim embeddings;
see ``experiments.models.hrda``). ``dilations`` and ``pool`` are unused there.

Output: B x num_classes x H/4 x W/4 for a MiT or ResNet-V1c encoder whose first
stage is at stride 4 (the segmentor upsamples to the input size).

Parameter count of the paper-size head (in_channels (64, 128, 320, 512),
embed_dims 256, channels 256, BatchNorm, 19 classes), the formula the tests check:
  embeddings  sum_i (c_i * 256 + 256)                         =   263,168
  1x1 branch  1024 * 256 + 2 * 256                            =   262,656
  3 separable branches 3 * (1024*9 + 2*1024 + 1024*256 + 2*256) =   821,760
  bottleneck  9 * 1024 * 256 + 2 * 256                        = 2,359,808
  classifier  256 * 19 + 19                                   =     4,883
  total                                                       = 3,712,275
(The ResNet-V1c-101 version, in_channels (256, 512, 1024, 2048), has 4,433,171.)

DeepLabV2 head (Chen et al., TPAMI 2018, Sec. 3.3 "ASPP-L"): four parallel 3x3
convolutions with dilations 6, 12, 18, 24 applied to the last stage, each mapping
straight to class scores, summed. No norm, no activation, no dropout; so the
inherited ``conv_seg`` of ``BaseDecodeHead`` is removed.
"""

from __future__ import annotations

import torch
from mmcv.cnn import ConvModule, DepthwiseSeparableConvModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from torch import nn


class SeparableASPPFusion(nn.Module):
    """DAFormer's context-aware fusion: separable ASPP branches, concatenation, 3x3."""

    def __init__(self, in_channels: int, channels: int, dilations: tuple[int, ...],
                 pool: bool, norm_cfg: dict | None, act_cfg: dict | None,
                 align_corners: bool = False) -> None:
        super().__init__()
        self.align_corners = align_corners
        self.image_pool = None
        if pool:
            self.image_pool = nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                ConvModule(in_channels, channels, 1, norm_cfg=norm_cfg, act_cfg=act_cfg))
        branches = []
        for dilation in dilations:
            if dilation == 1:
                branches.append(ConvModule(in_channels, channels, 1,
                                           norm_cfg=norm_cfg, act_cfg=act_cfg))
            else:
                # Depthwise-separable: the dilated 3x3 acts per channel, a 1x1 mixes
                # channels, which keeps large receptive fields cheap (DAFormer Sec. 3.2).
                branches.append(DepthwiseSeparableConvModule(
                    in_channels, channels, 3, padding=dilation, dilation=dilation,
                    norm_cfg=norm_cfg, act_cfg=act_cfg))
        self.branches = nn.ModuleList(branches)
        num_inputs = len(dilations) + int(pool)
        self.bottleneck = ConvModule(num_inputs * channels, channels, 3, padding=1,
                                     norm_cfg=norm_cfg, act_cfg=act_cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        if self.image_pool is not None:
            outputs.append(resize(self.image_pool(x), size=x.shape[2:], mode="bilinear",
                                  align_corners=self.align_corners))
        outputs.extend(branch(x) for branch in self.branches)
        return self.bottleneck(torch.cat(outputs, dim=1))


@MODELS.register_module()
class DAFormerHead(BaseDecodeHead):
    """DAFormer decode head: per-stage embedding, upsampling to 1/4, separable-ASPP fusion.

    Args:
        in_channels: channels of the selected encoder stages (finest first).
        channels: channels after fusion (256 in the paper).
        embed_dims: channels of each stage's embedding (256 in the paper).
        dilations: dilations of the fusion branches; 1 means a 1x1 convolution.
        pool: add an image-pooling branch (not in the paper's head).
        fusion: ``"sepaspp"`` (DAFormer's context-aware fusion, the default) or
            ``"conv"`` (a single 1x1 ConvModule with norm + ReLU, HRDA's attention head).
        **kwargs: passed to mmseg's ``BaseDecodeHead`` (num_classes, norm_cfg,
            dropout_ratio, in_index, align_corners, ...).
    """

    def __init__(self, in_channels: list[int], channels: int, embed_dims: int = 256,
                 dilations: tuple[int, ...] = (1, 6, 12, 18), pool: bool = False,
                 fusion: str = "sepaspp", **kwargs) -> None:
        kwargs.setdefault("in_index", list(range(len(in_channels))))
        super().__init__(in_channels, channels, input_transform="multiple_select", **kwargs)
        if self.align_corners:
            raise ValueError("DAFormerHead is defined with align_corners=False")
        # A per-pixel linear map: the paper's MLP embedding, written as a 1x1 conv.
        self.embeddings = nn.ModuleList(
            nn.Conv2d(c, embed_dims, kernel_size=1) for c in self.in_channels)
        if fusion == "sepaspp":
            self.fusion = SeparableASPPFusion(
                embed_dims * len(self.in_channels), channels, tuple(dilations), pool,
                self.norm_cfg, self.act_cfg, self.align_corners)
        elif fusion == "conv":
            if pool:
                raise ValueError("fusion='conv' has no image-pooling branch; use pool=False")
            # One per-pixel linear fusion (+ norm + ReLU): no spatial context, which
            # suffices for HRDA's scale attention and keeps it light (HRDA Sec. 3.3).
            self.fusion = ConvModule(embed_dims * len(self.in_channels), channels, 1,
                                     norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
        else:
            raise ValueError(f"fusion must be 'sepaspp' or 'conv', got {fusion!r}")

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        features = self._transform_inputs(inputs)
        size = features[0].shape[2:]
        embedded = []
        for feature, embed in zip(features, self.embeddings):
            y = embed(feature)
            if y.shape[2:] != size:
                y = resize(y, size=size, mode="bilinear", align_corners=self.align_corners)
            embedded.append(y)
        return self.cls_seg(self.fusion(torch.cat(embedded, dim=1)))


@MODELS.register_module()
class DeepLabV2Head(BaseDecodeHead):
    """DeepLabV2 ASPP classifier: dilated 3x3 convolutions to class scores, summed.

    Args:
        in_channels: channels of the last encoder stage (2048 for ResNet-101).
        dilations: one branch per dilation (6, 12, 18, 24 in DeepLabV2).
        **kwargs: passed to mmseg's ``BaseDecodeHead``; ``channels`` is the class count.
    """

    def __init__(self, in_channels: int, dilations: tuple[int, ...] = (6, 12, 18, 24),
                 **kwargs) -> None:
        kwargs.setdefault("channels", kwargs["num_classes"])
        kwargs.setdefault("dropout_ratio", 0.0)
        # DeepLabV2 initialises its classifier with N(0, 0.01) and zero bias.
        kwargs.setdefault("init_cfg", dict(type="Normal", std=0.01, override=dict(name="aspp")))
        super().__init__(in_channels, **kwargs)
        del self.conv_seg  # the branches are the classifier
        self.aspp = nn.ModuleList(
            nn.Conv2d(self.in_channels, self.num_classes, 3, padding=d, dilation=d)
            for d in dilations)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        x = self._transform_inputs(inputs)
        out = self.aspp[0](x)
        for branch in self.aspp[1:]:
            out = out + branch(x)
        return out
