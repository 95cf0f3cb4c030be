"""HRDA as an mmseg 1.x segmentor: context and detail crops fused by a learned scale attention.

Hoyer, Dai, Van Gool, "HRDA: Context-Aware High-Resolution Domain-Adaptive Semantic
Segmentation", ECCV 2022. Written for this project after reading the authors' mmseg 0.x
code (``lhoyer/HRDA``: ``hrda_encoder_decoder.py``, ``hrda_head.py``, the batched slide of
``encoder_decoder.py``, and how ``uda/dacs.py`` uses them); the numerics follow it.

What HRDA does (paper Sec. 3):

- Context and detail crop (Sec. 3.2). The training crop (the *context crop*, 1024 x 1024
  for GTA->Cityscapes HR) is downscaled by 2 (``scales`` = [0.5, 1]) and gives
  long-range context at low resolution (LR); a random *detail crop* of it (512 x 512) is
  kept at full resolution (HR) for fine structures. The detail crop's coordinates are
  multiples of ``crop_coord_divisible`` = 8 = output stride 4 / LR scale 0.5, so that
  the crop falls on whole LR logit cells and the two predictions align exactly.
- Multi-resolution fusion (Sec. 3.3). One segmentation head, shared by both scales,
  predicts LR and HR logits. A light *scale-attention* head (a DAFormer head with a 1x1
  conv fusion, 256-dim embeddings) reads the LR features and predicts, after a sigmoid,
  how much to trust the HR prediction at each pixel (per class when ``classwise``).
  The fused prediction is ``up((1 - a) * lr) + up(a) * hr``, with ``a`` set to zero
  outside the detail crop during training (there is no HR prediction there).
- Loss (Sec. 3.3): ``(1 - lambda_d) * CE(fused, y) + lambda_d * CE(hr, y[detail box])``,
  lambda_d = 0.1, so the HR branch also learns on its own (see ``hrda_loss``).
- Pseudo-labels and inference (Sec. 3.4): no crop is drawn; LR covers the whole image,
  HR is predicted by an overlapping sliding window of detail-crop size with stride half
  the crop, averaged where windows overlap (``slide_windows``, ``slide_average``).
- The ImageNet feature distance of DAFormer keeps working on LR features
  (``feature_scale`` = 0.5): ``extract_feat`` resizes the input by 0.5 first.

API:

- ``crop_box``, ``slide_windows``, ``slide_average``, ``fuse``: pure functions.
- ``HRDAHead`` (registered in mmseg's MODELS): submodules ``head`` and
  ``scale_attention``, so a checkpoint has exactly ``backbone.*``,
  ``decode_head.head.*`` and ``decode_head.scale_attention.*``. Its ``forward`` takes
  ``HRDAInputs`` only and refuses the plain feature list of ``decode_head(extract_feat(x))``.
- ``HRDAEncoderDecoder`` (registered): ``train_outputs`` (logits, box and features
  for the training loop, no loss), ``inference_logits`` (fused logits at 1/4 of the
  input), ``extract_feat`` (features at ``feature_scale``), ``hr_loss_weight``.
- ``hrda_loss``: the weighted fused + detail loss with any pixel-wise ``loss_fn``.
- ``hrda_config``: a ``SEGMENTORS`` entry (EncoderDecoder + DAFormerHead) -> HRDA config.

Deliberate differences from the original code:

- Randomness: ``crop_box`` draws from a caller's ``torch.Generator`` (an iteration is a
  function of its seed); the original draws from numpy's global RNG. The distribution
  is the original's, quirk included (see ``crop_box``).
- No hidden state: the crop box travels in ``HRDAInputs`` and the outputs, instead of
  being stored on the head (``set_hr_crop_box``) and on the class
  (``last_train_crop_box``).
- Losses are computed outside (``hrda_loss``), with the project's
  ``weighted_cross_entropy``, which is mmseg 0.x's mean reduction.
- Supported: two scales whose larger one is 1, a ``DAFormerHead`` single-scale head
  (output stride 4), ``feature_scale`` equal to one of the scales. Not ported: the
  DeepLabV2 single-scale head, ``feature_scale="all"``, ``blur_hr_crop``, the debug
  outputs. Image and detail-crop sizes must be multiples of 8 (else LR and HR logits
  cannot align; the original fails or misaligns silently there).
- ``fixed_attention`` keeps the ``scale_attention`` module (the original drops it), so
  the state-dict layout does not depend on it.
- ``hrda_config`` sizes the attention head's embeddings like the single-scale head's
  unless told otherwise: 256 at paper size (the original's fixed value), 32 for the
  miniature heads.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import torch
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.segmentors import EncoderDecoder
from mmseg.models.utils import resize
from mmseg.registry import MODELS

from experiments.models import heads  # noqa: F401  (registers DAFormerHead)

Box = tuple[int, int, int, int]  # (y1, y2, x1, x2), half-open, in input pixels


# ---------------------------------------------------------------- geometry
def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def crop_box(height: int, width: int, crop: int | Sequence[int], divisible: int,
             generator: torch.Generator) -> Box:
    """A random detail-crop box (y1, y2, x1, x2) of size ``crop`` inside a height x width image.

    HRDA Sec. 3.2: the detail crop is drawn uniformly inside the context crop, with
    offsets that are multiples of ``divisible`` (8 = output stride 4 / LR scale 0.5) so
    that it covers whole LR logit cells and the fused map aligns without resampling.

    The distribution is the original ``get_crop_bbox``'s: with margin m = size - crop,
    each offset is ``divisible * U{0, ..., (m + 1) // divisible - 1}`` (rows drawn
    first, then columns). For ``divisible`` > 1 this never reaches the last offset m
    when m is itself a multiple of ``divisible`` (e.g. m = 512 allows 0..504): kept, so
    the crops are distributed as in the paper's runs. Where the original would fail
    (0 < m < divisible - 1) the offset is 0. An image of exactly the crop size returns
    the full box without drawing; a crop larger than the image is refused.

    Args:
        height, width: image size in pixels.
        crop: crop size (h, w), or one int for a square.
        divisible: the offsets' common divisor (>= 1).
        generator: the only source of randomness (the original uses numpy's global RNG).
    """
    crop_h, crop_w = _pair(crop)
    if crop_h <= 0 or crop_w <= 0 or divisible < 1:
        raise ValueError(f"crop must be positive and divisible >= 1, got {crop}, {divisible}")
    if crop_h > height or crop_w > width:
        raise ValueError(f"crop {crop_h}x{crop_w} is larger than the image {height}x{width}")
    if (crop_h, crop_w) == (height, width):
        return 0, height, 0, width
    offsets = []
    for margin in (height - crop_h, width - crop_w):
        choices = max((margin + 1) // divisible, 1)
        draw = torch.randint(0, choices, (1,), generator=generator, device=generator.device)
        offsets.append(int(draw.item()) * divisible)
    y1, x1 = offsets
    return y1, y1 + crop_h, x1, x1 + crop_w


def slide_windows(height: int, width: int, crop: int | Sequence[int],
                  stride: int | Sequence[int]) -> list[Box]:
    """The sliding windows (y1, y2, x1, x2) that tile a height x width image, row by row.

    HRDA Sec. 3.4: HR predictions for pseudo-labels and evaluation come from windows of
    the detail-crop size with stride half the crop, so every pixel is seen by a window
    in which it is not at the border. As in mmseg's slide inference, the grid has
    ``max(size - crop + stride - 1, 0) // stride + 1`` positions per axis and the last
    window is shifted inwards to end at the border; an axis shorter than the crop gets
    one window of its full length.
    """
    crop_h, crop_w = _pair(crop)
    stride_h, stride_w = _pair(stride)
    rows = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
    cols = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
    windows = []
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * stride_h + crop_h, height), min(c * stride_w + crop_w, width)
            windows.append((max(y2 - crop_h, 0), y2, max(x2 - crop_w, 0), x2))
    return windows


def _scale_box(box: Sequence[int], factor: float) -> Box:
    """Box coordinates divided by ``factor``, truncated as the original ``scale_box``."""
    y1, y2, x1, x2 = box
    return int(y1 / factor), int(y2 / factor), int(x1 / factor), int(x2 / factor)


def slide_average(window_logits: torch.Tensor, windows: Sequence[Box], batch_size: int,
                  os: int = 4) -> torch.Tensor:
    """Average the logits of stacked windows into one map (HRDA Sec. 3.4, ``decode_hr``).

    Args:
        window_logits: (len(windows) * batch_size) x C x h x w, window-major (rows
            ``i * batch_size : (i + 1) * batch_size`` are window i of every image): the
            order in which the windows were concatenated for one backbone call.
        windows: boxes in input pixels, as from ``slide_windows``.
        batch_size: images per window.
        os: output stride of the logits (4 for the DAFormer head).

    Returns:
        batch_size x C x H/os x W/os: per pixel, the mean over the windows covering it
        (sum and count matrix, as the original). Refuses a map with an uncovered pixel.
    """
    if window_logits.shape[0] != len(windows) * batch_size:
        raise ValueError(f"{window_logits.shape[0]} window logits for {len(windows)} windows "
                         f"x batch {batch_size}")
    boxes = [_scale_box(w, os) for w in windows]
    height, width = max(b[1] for b in boxes), max(b[3] for b in boxes)
    preds = window_logits.new_zeros((batch_size, window_logits.shape[1], height, width))
    count = window_logits.new_zeros((1, 1, height, width))
    for i, (y1, y2, x1, x2) in enumerate(boxes):
        logits = window_logits[i * batch_size:(i + 1) * batch_size]
        if logits.shape[2:] != (y2 - y1, x2 - x1):
            raise ValueError(f"window {windows[i]} gives logits {tuple(logits.shape[2:])}, "
                             f"expected {(y2 - y1, x2 - x1)} at output stride {os}")
        preds[:, :, y1:y2, x1:x2] += logits
        count[:, :, y1:y2, x1:x2] += 1
    if bool((count == 0).any()):
        raise ValueError("the sliding windows leave output pixels uncovered")
    return preds / count


# ---------------------------------------------------------------- fusion
def fuse(lr_seg: torch.Tensor, hr_seg: torch.Tensor, attention: torch.Tensor,
         box: Sequence[int] | None = None, os: int = 4, lr_scale: float = 0.5
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """HRDA's multi-resolution fusion (Sec. 3.3), numerically as the original ``HRDAHead``.

    ``fused = up(a) * hr_inserted + up((1 - a) * lr)``, ``up`` the bilinear resize by
    1 / lr_scale (align_corners False). The attention weighs the LR prediction *before*
    upsampling and is upsampled itself, so on the detail-box border (one pixel at HR
    logit resolution) the upsampled attention and LR term blend over the box edge.

    Args:
        lr_seg: B x C x h x w LR logits (output stride ``os`` of the LR image).
        hr_seg: HR logits: of the detail box (B x C x box_h/os x box_w/os) when ``box``
            is given, else of the whole image (B x C x h/lr_scale x w/lr_scale).
        attention: B x C x h x w or B x 1 x h x w scale attention in [0, 1]
            (``sigmoid`` of the attention head on the LR features); one channel
            broadcasts over the classes.
        box: the training detail box (y1, y2, x1, x2) in input pixels, or None. The
            attention is zeroed outside it (at LR logit resolution: box / (os / lr_scale))
            because there is no HR prediction there, and ``hr_seg`` is placed at box / os
            into zeros.
        os: output stride of the segmentation head.
        lr_scale: the LR scale (the HR scale is 1).

    Returns:
        (fused B x C x h/lr_scale x w/lr_scale, lr, hr_seg), where ``lr`` is
        ``(1 - a) * lr_seg`` as the original returns it (equal to ``lr_seg`` where the
        attention is 0).
    """
    if box is not None:
        mask = lr_seg.new_zeros((lr_seg.shape[0], 1, *lr_seg.shape[2:]))
        y1, y2, x1, x2 = _scale_box(box, os / lr_scale)
        mask[:, :, y1:y2, x1:x2] = 1
        attention = attention * mask
    lr = (1 - attention) * lr_seg
    up_lr = resize(lr, scale_factor=1 / lr_scale, mode="bilinear", align_corners=False)
    up_attention = resize(attention, scale_factor=1 / lr_scale, mode="bilinear",
                          align_corners=False)
    if box is not None:
        hr_inserted = torch.zeros_like(up_lr)
        y1, y2, x1, x2 = _scale_box(box, os)
        hr_inserted[:, :, y1:y2, x1:x2] = hr_seg
    else:
        hr_inserted = hr_seg
    return up_attention * hr_inserted + up_lr, lr, hr_seg


class HRDAInputs(NamedTuple):
    """What ``HRDAHead.forward`` needs: features of both scales and where the HR part lies.

    ``lr``: backbone features of the LR (downscaled) image. ``hr``: features of the HR
    detail crop (training) or of all sliding windows stacked window-major (inference).
    ``crop_box``: the training detail box in input pixels. ``windows``: the sliding
    windows in input pixels. At most one of ``crop_box`` and ``windows``; with neither,
    ``hr`` covers the whole image.
    """

    lr: Sequence[torch.Tensor]
    hr: Sequence[torch.Tensor]
    crop_box: Box | None = None
    windows: Sequence[Box] | None = None


@MODELS.register_module()
class HRDAHead(BaseDecodeHead):
    """HRDA decode head: one segmentation head for both scales plus a scale-attention head.

    Submodules (HRDA Sec. 3.3, the original's ``attn_cfg``): ``head``, the single-scale
    DAFormer head built from ``single_scale_head`` and shared by LR and HR (the same
    weights see both resolutions); ``scale_attention``, the same config with ``channels``
    and ``embed_dims`` set to ``attention_embed_dim``, its separable-ASPP fusion replaced
    by a 1x1 ConvModule (norm + ReLU), and ``num_classes`` output channels when
    ``attention_classwise`` else 1. No ``conv_seg`` or ``dropout`` of its own, so the
    state-dict keys are ``head.*`` and ``scale_attention.*``.

    Args:
        single_scale_head: a ``DAFormerHead`` config (output stride 4).
        attention_embed_dim: embedding and fusion channels of the attention head (256).
        attention_classwise: one attention map per class (HRDA's default) or one for all.
        lr_scale: the LR scale; set by ``HRDAEncoderDecoder`` from its ``scales``.
        fixed_attention: a constant in [0, 1] used instead of the learned attention
            (ablations, tests); the attention head stays in the module either way.
        **head_overrides: merged into ``single_scale_head`` before both heads are built
            (``num_classes``, ``norm_cfg``, ``dropout_ratio``, ...), so that generic code
            that sets ``cfg["decode_head"]["num_classes"]`` reaches the real heads.
    """

    os = 4  # output stride of the DAFormer head

    def __init__(self, single_scale_head: Mapping[str, Any], attention_embed_dim: int = 256,
                 attention_classwise: bool = True, lr_scale: float = 0.5,
                 fixed_attention: float | None = None, **head_overrides: Any) -> None:
        head_cfg = dict(copy.deepcopy(dict(single_scale_head)), **head_overrides)
        if head_cfg.get("type") != "DAFormerHead":
            raise ValueError(f"HRDAHead supports a DAFormerHead single-scale head, "
                             f"got {head_cfg.get('type')!r}")
        if head_cfg.get("fusion", "sepaspp") != "sepaspp":
            raise ValueError("the single-scale head of HRDA uses the separable-ASPP fusion")
        in_channels = list(head_cfg["in_channels"])
        super().__init__(in_channels, head_cfg["channels"], num_classes=head_cfg["num_classes"],
                         in_index=list(range(len(in_channels))),
                         input_transform="multiple_select", dropout_ratio=0.0,
                         align_corners=head_cfg.get("align_corners", False), init_cfg=None)
        del self.conv_seg  # the sub-heads classify
        del self.dropout
        attn_cfg = dict(copy.deepcopy(head_cfg), channels=attention_embed_dim,
                        embed_dims=attention_embed_dim, fusion="conv")
        if not attention_classwise:
            attn_cfg.update(num_classes=1, out_channels=1, threshold=0.5)
        self.head = MODELS.build(head_cfg)
        self.scale_attention = MODELS.build(attn_cfg)
        self.lr_scale = float(lr_scale)
        self.attention_classwise = attention_classwise
        self.fixed_attention = fixed_attention

    def attention(self, lr_features: Sequence[torch.Tensor]) -> torch.Tensor:
        """sigmoid(scale_attention(LR features)), or the constant ``fixed_attention``."""
        if self.fixed_attention is None:
            return torch.sigmoid(self.scale_attention(lr_features))
        first = lr_features[0]
        channels = self.num_classes if self.attention_classwise else 1
        return first.new_full((first.shape[0], channels, *first.shape[2:]),
                              float(self.fixed_attention))

    def forward(self, inputs: HRDAInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(fused, lr, hr) logits from ``HRDAInputs``; see ``fuse``.

        The order (LR head, HR head, attention) is the original's, so dropout draws and
        BatchNorm updates happen in the same sequence. A plain feature list is refused:
        one scale's features cannot make an HRDA prediction.
        """
        if not isinstance(inputs, HRDAInputs):
            raise TypeError(
                "HRDAHead needs the features of both scales (HRDAInputs), got "
                f"{type(inputs).__name__}; decode_head(extract_feat(x)) does not apply to "
                "HRDA: use HRDAEncoderDecoder.inference_logits(x) for predictions and "
                "train_outputs(x, generator) for training")
        if inputs.crop_box is not None and inputs.windows is not None:
            raise ValueError("HRDAInputs takes a crop_box or sliding windows, not both")
        batch_size = inputs.lr[0].shape[0]
        lr_seg = self.head(inputs.lr)
        if inputs.windows is not None:
            hr_seg = slide_average(self.head(inputs.hr), inputs.windows, batch_size, self.os)
        else:
            hr_seg = self.head(inputs.hr)
        attention = self.attention(inputs.lr)
        return fuse(lr_seg, hr_seg, attention, inputs.crop_box, self.os, self.lr_scale)


# ---------------------------------------------------------------- segmentor
@MODELS.register_module()
class HRDAEncoderDecoder(EncoderDecoder):
    """mmseg ``EncoderDecoder`` with HRDA's two-scale training and sliding-window inference.

    Args:
        backbone, decode_head (an ``HRDAHead`` config), **kwargs: as ``EncoderDecoder``.
        scales: the two input scales, sorted (the original sorts them): LR first, HR = 1.
        hr_crop_size: detail-crop size (h, w) in input pixels; None trains HR on the
            whole input. Also the sliding-window size at inference.
        crop_coord_divisible: common divisor of the detail crop's offsets (8).
        feature_scale: the scale whose features ``extract_feat`` and ``train_outputs``
            return for the feature distance (0.5: LR, as DAFormer's).
        hr_slide_inference: HR by sliding windows at inference (else the whole input).
        hr_slide_overlapping: stride half the window (else the window size).
        hr_loss_weight: lambda_d of the detail loss (0.1), read by ``hrda_loss`` callers.
    """

    def __init__(self, backbone: dict, decode_head: dict, *, scales: Sequence[float] = (0.5, 1),
                 hr_crop_size: int | Sequence[int] | None = (512, 512),
                 crop_coord_divisible: int = 8, feature_scale: float = 0.5,
                 hr_slide_inference: bool = True, hr_slide_overlapping: bool = True,
                 hr_loss_weight: float = 0.1, **kwargs: Any) -> None:
        scales = sorted(float(s) for s in scales)
        if len(scales) != 2 or scales[1] != 1.0 or not 0 < scales[0] < 1:
            raise ValueError(f"HRDA takes two scales, the larger 1, got {scales}")
        if feature_scale not in scales:
            raise ValueError(f"feature_scale must be one of {scales}, got {feature_scale!r}")
        decode_head = dict(decode_head)
        if decode_head.setdefault("lr_scale", scales[0]) != scales[0]:
            raise ValueError(f"decode_head lr_scale {decode_head['lr_scale']} != "
                             f"scales[0] {scales[0]}")
        super().__init__(backbone=backbone, decode_head=decode_head, **kwargs)
        if not isinstance(self.decode_head, HRDAHead):
            raise TypeError(f"HRDAEncoderDecoder needs an HRDAHead, "
                            f"got {type(self.decode_head).__name__}")
        self.scales = scales
        self.lr_scale = scales[0]
        self.hr_crop_size = None if hr_crop_size is None else _pair(hr_crop_size)
        self.align = int(round(self.decode_head.os / self.lr_scale))  # 8: one LR logit cell
        if self.hr_crop_size is not None and any(s % self.align for s in self.hr_crop_size):
            raise ValueError(f"hr_crop_size {self.hr_crop_size} must be a multiple of {self.align}")
        self.crop_coord_divisible = int(crop_coord_divisible)
        self.feature_scale = float(feature_scale)
        self.hr_slide_inference = hr_slide_inference
        self.hr_slide_overlapping = hr_slide_overlapping
        self.hr_loss_weight = float(hr_loss_weight)

    # -- helpers
    def _features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Backbone (+ neck) features of ``images`` as they are (the original's
        ``extract_unscaled_feat``)."""
        return EncoderDecoder.extract_feat(self, images)

    def _rescale(self, images: torch.Tensor, scale: float) -> torch.Tensor:
        if scale == 1:
            return images
        return resize(images, scale_factor=scale, mode="bilinear", align_corners=self.align_corners)

    def _check_size(self, images: torch.Tensor) -> tuple[int, int]:
        if images.dim() != 4:
            raise ValueError(f"expected B x 3 x H x W images, got {tuple(images.shape)}")
        height, width = images.shape[2:]
        if height % self.align or width % self.align:
            raise ValueError(f"HRDA needs image sizes divisible by {self.align} (output stride "
                             f"{self.decode_head.os} / LR scale {self.lr_scale}) for LR and HR "
                             f"logits to align, got {height}x{width}")
        return height, width

    def extract_feat(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        """Backbone features of ``inputs`` resized by ``feature_scale`` (0.5: the LR features).

        What DAFormer's ImageNet feature distance compares (the original's
        ``extract_feat`` with a numeric ``feature_scale``). Not a prediction path:
        ``HRDAHead`` refuses these features; use ``inference_logits``.
        """
        return self._features(self._rescale(inputs, self.feature_scale))

    # -- training
    def train_outputs(self, images: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        """Forward pass of one training step (HRDA Sec. 3.2-3.3); no loss.

        LR: the whole batch (the context crop) resized by the LR scale. HR: one detail
        box drawn with ``crop_box`` from ``generator`` (the same for every image of the
        batch, as the original) and cut from the full-resolution batch.

        Returns a dict: ``fused`` (B x C x H/4 x W/4), ``lr`` (B x C x H/8 x W/8,
        ``(1 - a) * lr`` as in ``fuse``), ``hr`` (B x C x box/4), ``box`` (y1, y2, x1, x2)
        in input pixels, ``features`` (backbone features at ``feature_scale``: the LR
        features for 0.5, the detail crop's for 1), for the feature distance.
        """
        height, width = self._check_size(images)
        lr_features = self._features(self._rescale(images, self.lr_scale))
        if self.hr_crop_size is None:
            box, head_box = (0, height, 0, width), None
        else:
            box = crop_box(height, width, self.hr_crop_size, self.crop_coord_divisible, generator)
            head_box = box
        y1, y2, x1, x2 = box
        hr_features = self._features(images[:, :, y1:y2, x1:x2])
        fused, lr, hr = self.decode_head(HRDAInputs(lr_features, hr_features, crop_box=head_box))
        features = lr_features if self.feature_scale == self.lr_scale else hr_features
        return dict(fused=fused, lr=lr, hr=hr, box=box, features=features)

    # -- inference
    def inference_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Fused logits B x C x H/4 x W/4 for pseudo-labels and evaluation (HRDA Sec. 3.4).

        LR: the whole input resized by the LR scale. HR: overlapping sliding windows of
        ``hr_crop_size`` with stride half of it (shifted inwards at the border), all
        windows of the whole batch concatenated into one backbone and one head call
        (the original's batched ``extract_slide_feat`` / ``decode_hr``), averaged with a
        count matrix. No crop box: the attention acts everywhere.
        """
        height, width = self._check_size(images)
        lr_features = self._features(self._rescale(images, self.lr_scale))
        if self.hr_slide_inference and self.hr_crop_size is not None:
            crop = self.hr_crop_size
            stride = tuple(c // 2 for c in crop) if self.hr_slide_overlapping else crop
            windows = slide_windows(height, width, crop, stride)
            crops = torch.cat([images[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in windows], dim=0)
            inputs = HRDAInputs(lr_features, self._features(crops), windows=windows)
        else:
            inputs = HRDAInputs(lr_features, self._features(images))
        return self.decode_head(inputs)[0]

    def encode_decode(self, inputs: torch.Tensor, batch_img_metas: list[dict] | None = None
                      ) -> torch.Tensor:
        """mmseg's prediction hook: ``inference_logits`` resized to the input size, so
        mmseg's own whole/slide inference (``test_cfg``) runs HRDA like the original."""
        return resize(self.inference_logits(inputs), size=inputs.shape[2:], mode="bilinear",
                      align_corners=self.align_corners)

    def _forward(self, inputs: torch.Tensor, data_samples: Any = None) -> torch.Tensor:
        """mmseg's tensor mode: the fused logits at 1/4 (what ``EncoderDecoder`` returns
        for its head's output)."""
        return self.inference_logits(inputs)

    def loss(self, inputs: torch.Tensor, data_samples: Any) -> dict:
        raise NotImplementedError(
            "HRDA losses are computed by the training loop: "
            "hrda_loss(model.train_outputs(images, generator), labels, weight, loss_fn, "
            "model.hr_loss_weight)")


# ---------------------------------------------------------------- loss
def hrda_loss(outputs: Mapping[str, Any], labels: torch.Tensor, weight: torch.Tensor | None,
              loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor],
              hr_loss_weight: float) -> torch.Tensor:
    """HRDA's training loss (Sec. 3.3), as the original ``HRDAHead.losses``.

    ``(1 - hr_loss_weight) * loss_fn(up(fused), labels, weight)
    + hr_loss_weight * loss_fn(up(hr), labels[box], weight[box])``, where ``up`` resizes
    logits to the size of the labels they are compared with (bilinear, align_corners
    False: mmseg 0.x ``BaseDecodeHead.losses``) and ``[box]`` cuts ``outputs["box"]``
    (input pixels) from the last two dims. The detail term is skipped at weight 0, as
    the original does. With ``weighted_cross_entropy`` each term is the mean over the
    pixels of its own label map (mmseg 0.x's reduction).

    Args:
        outputs: ``HRDAEncoderDecoder.train_outputs``.
        labels: B x H x W class indices at the input resolution of ``train_outputs``.
        weight: B x H x W per-pixel weights (pseudo-label confidence) or None.
        loss_fn: ``loss_fn(logits, labels, weight) -> scalar``, e.g.
            ``experiments.selftraining.recipe.weighted_cross_entropy``.
        hr_loss_weight: lambda_d (``model.hr_loss_weight``, 0.1).
    """
    size = labels.shape[-2:]
    fused = resize(outputs["fused"], size=size, mode="bilinear", align_corners=False)
    loss = (1 - hr_loss_weight) * loss_fn(fused, labels, weight)
    if hr_loss_weight > 0:
        y1, y2, x1, x2 = outputs["box"]
        if y2 > size[0] or x2 > size[1]:
            raise ValueError(f"box {outputs['box']} lies outside labels of size {tuple(size)}")
        crop_labels = labels[..., y1:y2, x1:x2]
        crop_weight = None if weight is None else weight[..., y1:y2, x1:x2]
        hr = resize(outputs["hr"], size=crop_labels.shape[-2:], mode="bilinear",
                    align_corners=False)
        loss = loss + hr_loss_weight * loss_fn(hr, crop_labels, crop_weight)
    return loss


# ---------------------------------------------------------------- config
def hrda_config(base: Mapping[str, Any], hr_crop_size: int | Sequence[int] = (512, 512),
                scales: Sequence[float] = (1, 0.5), hr_loss_weight: float = 0.1,
                feature_scale: float = 0.5, crop_coord_divisible: int = 8,
                attention_classwise: bool = True, attention_embed_dim: int | None = None
                ) -> dict[str, Any]:
    """Turn a ``SEGMENTORS`` entry (``EncoderDecoder`` + ``DAFormerHead``) into HRDA's config.

    The defaults are the authors' ``gtaHR2csHR_hrda`` (scales [1, 0.5], detail crop
    512 x 512, lambda_d 0.1, LR features for the feature distance, offsets divisible by
    8, class-wise attention). The base head's ``num_classes`` and ``norm_cfg`` are lifted
    to the ``HRDAHead`` level (``HRDAHead`` merges them back), so code that overrides
    ``cfg["decode_head"]["num_classes"]`` or ``["norm_cfg"]`` keeps working.

    Args:
        attention_embed_dim: channels of the attention head; None takes the base head's
            ``embed_dims`` (256 for the paper's heads, as the original's fixed 256;
            the miniature heads' 32 keep the attention head in proportion).
    """
    cfg = copy.deepcopy(dict(base))
    head = dict(cfg.pop("decode_head"))
    if cfg.get("type") != "EncoderDecoder" or head.get("type") != "DAFormerHead":
        raise ValueError(f"hrda_config needs an EncoderDecoder with a DAFormerHead, got "
                         f"{cfg.get('type')!r} with {head.get('type')!r}")
    if attention_embed_dim is None:
        attention_embed_dim = head.get("embed_dims", 256)
    lifted = {k: head.pop(k) for k in ("num_classes", "norm_cfg") if k in head}
    cfg.update(
        type="HRDAEncoderDecoder",
        decode_head=dict(type="HRDAHead", single_scale_head=head,
                         attention_embed_dim=int(attention_embed_dim),
                         attention_classwise=attention_classwise, **lifted),
        scales=sorted(float(s) for s in scales),
        hr_crop_size=None if hr_crop_size is None else list(_pair(hr_crop_size)),
        crop_coord_divisible=crop_coord_divisible, feature_scale=float(feature_scale),
        hr_slide_inference=True, hr_loss_weight=float(hr_loss_weight))
    return cfg
