"""The parts of DAFormer's self-training recipe, as pure functions (docs/recipe.md).

Everything here works on tensors and modules handed in; randomness comes only from the
``torch.Generator`` passed by the caller, so a training iteration is a function of its seed.
The training loop that strings these together lives in ``experiments.selftraining.loop``.
"""

from __future__ import annotations

import functools
import math
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from experiments.models.tensors import MEAN, STD, device_constant
from experiments.data.labels import IGNORE_INDEX, NUM_CLASSES

# DAFormer's ignore margins are given for a 512-row crop: top 15, bottom 120 rows
# (the ego-vehicle bonnet and the rectification border of Cityscapes).
REFERENCE_CROP_ROWS = 512
REFERENCE_MARGINS = (15, 120)


def to_model_input(images01: torch.Tensor) -> torch.Tensor:
    """Normalise B x 3 x H x W images in [0, 1] the way the segmentors expect."""
    mean = device_constant(MEAN, images01.device, images01.dtype).view(1, 3, 1, 1)
    std = device_constant(STD, images01.device, images01.dtype).view(1, 3, 1, 1)
    return (images01 * 255.0 - mean) / std


# ---------------------------------------------------------------- EMA teacher
def ema_alpha(iteration: int, alpha: float = 0.999) -> float:
    """alpha_t = min(1 - 1 / (t + 1), alpha): the teacher follows the student closely early on."""
    return min(1.0 - 1.0 / (iteration + 1), alpha)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, iteration: int, alpha: float = 0.999) -> float:
    """teacher <- alpha_t teacher + (1 - alpha_t) student, over parameters only.

    Buffers are left alone, as in DAFormer: the teacher keeps its own BatchNorm running
    statistics, which it gathers itself while predicting pseudo-labels on target batches
    (its norm layers stay in training mode). Averaging the student's buffers in would mix
    source-batch statistics into a network that only ever normalises target images.
    Returns the alpha used.
    """
    alpha_t = ema_alpha(iteration, alpha)
    t_params, s_params = list(teacher.parameters()), [p.detach() for p in student.parameters()]
    if len(t_params) != len(s_params):
        raise ValueError(f"teacher has {len(t_params)} parameters, student {len(s_params)}")
    for t_param, s_param in zip(t_params, s_params):
        if t_param.shape != s_param.shape:
            raise ValueError(f"teacher/student parameter shapes differ: {t_param.shape} vs {s_param.shape}")
    # The same mul_ and add_ per tensor; on a GPU, a few multi-tensor kernels instead of
    # two launches per parameter.
    with torch.no_grad():
        torch._foreach_mul_(t_params, alpha_t)
        torch._foreach_add_(t_params, s_params, alpha=1.0 - alpha_t)
    return alpha_t


def set_teacher_mode(teacher: nn.Module) -> None:
    """Norm layers in training mode (batch statistics), dropout and drop-path off (DAFormer)."""
    teacher.train()
    for module in teacher.modules():
        name = type(module).__name__
        if isinstance(module, nn.modules.dropout._DropoutNd) or name in ("DropPath", "Dropout"):
            module.eval()


# ---------------------------------------------------------------- pseudo-labels
def scaled_margins(rows: int) -> tuple[int, int]:
    """DAFormer's (top, bottom) ignore margins scaled from a 512-row crop to ``rows``."""
    scale = rows / REFERENCE_CROP_ROWS
    return tuple(int(round(m * scale)) for m in REFERENCE_MARGINS)  # type: ignore[return-value]


@torch.no_grad()
def pseudo_labels(logits: torch.Tensor, threshold: float = 0.968,
                  margins: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Hard pseudo-labels and their per-pixel loss weight from teacher logits (B x C x H x W).

    The weight is one scalar per batch: the fraction of pixels whose max softmax probability
    reaches ``threshold`` (DACS/DAFormer quality estimate), set to 0 on the top/bottom
    ``margins`` rows. Returns (labels B x H x W, weight B x H x W, confidence fraction).
    """
    prob, label = torch.softmax(logits.float(), dim=1).max(dim=1)
    confident = (prob >= threshold).float().mean().item()
    weight = torch.full_like(prob, confident)
    top, bottom = margins if margins is not None else (0, 0)
    if top > 0:
        weight[:, :top] = 0.0
    if bottom > 0:
        weight[:, -bottom:] = 0.0
    return label, weight, confident


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                           weight: torch.Tensor | None = None) -> torch.Tensor:
    """Pixel-wise cross-entropy averaged over all pixels, ignored ones counting as 0.

    This is mmseg 0.x's default reduction, which DAFormer's numbers were obtained with.
    """
    loss = F.cross_entropy(logits, labels.long(), ignore_index=IGNORE_INDEX, reduction="none")
    if weight is not None:
        loss = loss * weight
    return loss.mean()


# ---------------------------------------------------------------- DACS ClassMix
def class_mix_masks(source_labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One binary mask per image covering half (rounded up) of its source classes.

    Returns B x H x W float masks: 1 where the source pixel is pasted onto the target.
    """
    masks = []
    for label in source_labels:
        classes = torch.unique(label)
        classes = classes[classes != IGNORE_INDEX]
        chosen = classes[torch.randperm(len(classes), generator=generator)[: (len(classes) + 1) // 2]]
        masks.append(torch.isin(label, chosen).float())
    return torch.stack(masks)


def class_mix(mask: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mask * source + (1 - mask) * target, for images (B x 3 x H x W) or maps (B x H x W)."""
    m = mask.unsqueeze(1) if source.dim() == 4 else mask
    mixed = m * source.to(m.dtype) + (1 - m) * target.to(m.dtype)
    return mixed.to(source.dtype) if not source.is_floating_point() else mixed


# ---------------------------------------------------------------- strong augmentation
def _grey(images: torch.Tensor) -> torch.Tensor:
    return (0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]).unsqueeze(1)


_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


@functools.lru_cache(maxsize=16)
def _yiq_matrices(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    to_yiq = torch.tensor(_TO_YIQ, dtype=dtype)  # inverted on the CPU, once
    return to_yiq.to(device), torch.linalg.inv(to_yiq).to(device)


def _rotate_hue(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    # Rotate chroma in YIQ space: a linear stand-in for a hue shift of ``turns`` of the circle.
    # ``turns`` (one value, on the CPU) enters as Python floats: no copy to the device.
    to_yiq, from_yiq = _yiq_matrices(images.device, images.dtype)
    yiq = torch.einsum("ij,bjhw->bihw", to_yiq, images)
    angle = turns * 2 * math.pi
    cos, sin = float(torch.cos(angle)), float(torch.sin(angle))
    i, q = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack([yiq[:, 0], cos * i - sin * q, sin * i + cos * q], dim=1)
    return torch.einsum("ij,bjhw->bihw", from_yiq, yiq)


def _per_image(images01: torch.Tensor, generator: torch.Generator, probability: float, draws: int,
               transform) -> torch.Tensor:
    """Apply ``transform(image, u)`` to each image with ``probability``.

    Every image draws ``draws`` uniforms whether it is transformed or not (the first
    decides, the rest parametrise ``transform``), so the random stream does not depend
    on which images were picked.
    """
    out = []
    for image in images01:
        u = torch.rand(draws, generator=generator)
        out.append(transform(image, u[1:]) if u[0] < probability else image)
    return torch.stack(out)


def color_jitter(images01: torch.Tensor, generator: torch.Generator, strength: float = 0.2,
                 probability: float = 0.8) -> torch.Tensor:
    """Brightness, contrast, saturation and hue jitter of ``strength``, per image with ``probability``."""
    def jitter(image: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        # u comes from the CPU generator; its values enter as Python floats (the float32
        # values exactly), so GPU images need no host-to-device copy per image.
        brightness, contrast, saturation = (1 + strength * (2 * u[:3] - 1)).tolist()
        x = image.unsqueeze(0)
        x = (x * brightness).clamp(0, 1)
        x = ((x - _grey(x).mean()) * contrast + _grey(x).mean()).clamp(0, 1)
        x = ((x - _grey(x)) * saturation + _grey(x)).clamp(0, 1)
        x = _rotate_hue(x, (strength * (2 * u[3:4] - 1)) / 2).clamp(0, 1)
        return x[0]

    return _per_image(images01, generator, probability, 5, jitter)


def gaussian_blur(images01: torch.Tensor, generator: torch.Generator, probability: float = 0.5,
                  sigma_range: tuple[float, float] = (0.15, 1.15)) -> torch.Tensor:
    """Blur each image with probability ``probability``; kernel ~ 0.1 x height (odd), as DACS."""
    def blur(image: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        sigma = sigma_range[0] + (sigma_range[1] - sigma_range[0]) * u[0].item()
        size = max(3, int(math.ceil(0.1 * image.shape[-2])) | 1)
        x = torch.arange(size, dtype=image.dtype, device=image.device) - size // 2
        kernel = torch.exp(-(x**2) / (2 * sigma**2))
        kernel = kernel / kernel.sum()
        img = F.pad(image.unsqueeze(0), (size // 2,) * 4, mode="reflect")
        img = F.conv2d(img, kernel.view(1, 1, 1, -1).expand(3, 1, 1, size), groups=3)
        img = F.conv2d(img, kernel.view(1, 1, -1, 1).expand(3, 1, size, 1), groups=3)
        return img[0]

    return _per_image(images01, generator, probability, 2, blur)


# ---------------------------------------------------------------- rare class sampling
def rcs_class_probabilities(class_pixels: np.ndarray, temperature: float = 0.01) -> np.ndarray:
    """P(c) = softmax((1 - f_c) / T) over the source class frequencies f_c (DAFormer eq. 6)."""
    counts = np.asarray(class_pixels, dtype=np.float64)
    freq = counts / counts.sum()
    logits = (1.0 - freq) / temperature
    logits = logits - logits.max()
    p = np.exp(logits)
    p[counts == 0] = 0.0  # a class that never occurs cannot be sampled
    return p / p.sum()


class RareClassSampler:
    """Sample a class by P(c), then an image holding more than ``min_pixels`` of it.

    ``per_image_counts`` is an N x C array of class pixel counts per source image.
    """

    def __init__(self, per_image_counts: np.ndarray, temperature: float = 0.01, min_pixels: int = 3000):
        counts = np.asarray(per_image_counts, dtype=np.int64)
        self.images_with_class = [np.flatnonzero(counts[:, c] > min_pixels) for c in range(counts.shape[1])]
        totals = counts.sum(axis=0).astype(np.float64)
        totals[[len(i) == 0 for i in self.images_with_class]] = 0.0
        if totals.sum() == 0:
            raise ValueError(f"rare class sampling: no image has more than {min_pixels} pixels of any class")
        self.probabilities = rcs_class_probabilities(totals, temperature)
        self.min_pixels = min_pixels

    def sample(self, generator: torch.Generator) -> tuple[int, int]:
        """Return (class, image index)."""
        cls = int(torch.multinomial(torch.from_numpy(self.probabilities), 1, generator=generator))
        candidates = self.images_with_class[cls]
        return cls, int(candidates[torch.randint(len(candidates), (1,), generator=generator)])


def scaled_min_pixels(min_pixels: int, image_shape: Sequence[int], reference_shape=(720, 1280)) -> int:
    """Scale DAFormer's 3000-pixel threshold (GTA at 1280x720) to another image area."""
    area = image_shape[0] * image_shape[1]
    return max(1, int(round(min_pixels * area / (reference_shape[0] * reference_shape[1]))))


# ---------------------------------------------------------------- ImageNet feature distance
def downscale_labels(labels: torch.Tensor, size: tuple[int, int], min_ratio: float = 0.75,
                     num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Label per feature cell: its majority class when that covers >= ``min_ratio``, else ignore."""
    one_hot = F.one_hot(labels.long().clamp(max=num_classes), num_classes + 1).permute(0, 3, 1, 2).float()
    share = F.adaptive_avg_pool2d(one_hot, size)
    ratio, label = share.max(dim=1)
    label[(ratio < min_ratio) | (label == num_classes)] = IGNORE_INDEX
    return label


def feature_distance(student_feat: torch.Tensor, imagenet_feat: torch.Tensor, labels: torch.Tensor,
                     thing_classes: Iterable[int]) -> torch.Tensor:
    """Mean L2 distance between student and frozen ImageNet features on thing-class cells.

    DAFormer section 3.3: regularises the encoder towards ImageNet features where the source
    labels are countable objects; zero when no cell is a thing class.
    """
    cells = downscale_labels(labels, tuple(student_feat.shape[-2:]))
    mask = torch.isin(cells, device_constant(tuple(thing_classes), cells.device, torch.long))
    if not mask.any():
        return student_feat.sum() * 0.0
    dist = torch.norm(student_feat - imagenet_feat.detach(), dim=1, p=2)
    return dist[mask].mean()


# ---------------------------------------------------------------- optimiser and schedule
def param_groups(model: nn.Module, lr: float, weight_decay: float, head_lr_mult: float = 10.0) -> list[dict]:
    """AdamW groups: decode head at ``head_lr_mult`` x lr; no weight decay on norms or pos_block.

    mmcv's ``custom_keys`` in DAFormer match the substrings 'head', 'norm' and 'pos_block'; norm
    layers are found here by type as well, so BatchNorm layers named ``bn1`` count as norms.
    """
    norm_params = {id(p) for m in model.modules() if isinstance(m, (nn.modules.batchnorm._NormBase,
                                                                    nn.LayerNorm, nn.GroupNorm))
                   for p in m.parameters(recurse=False)}
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        head = "head" in name
        no_decay = id(param) in norm_params or "norm" in name or "pos_block" in name
        groups.setdefault((head, no_decay), []).append(param)
    return [{"params": params, "lr": lr * (head_lr_mult if head else 1.0),
             "weight_decay": 0.0 if no_decay else weight_decay, "name": f"{'head' if head else 'backbone'}"
             f"{'_no_decay' if no_decay else ''}"} for (head, no_decay), params in sorted(groups.items())]


def lr_factor(iteration: int, max_iters: int, warmup_iters: int = 1500, warmup_ratio: float = 1e-6,
              power: float = 1.0, min_lr_ratio: float = 0.0) -> float:
    """mmcv's poly schedule with linear warmup, as a multiplier of the base learning rate."""
    poly = (1 - min(iteration, max_iters) / max_iters) ** power * (1 - min_lr_ratio) + min_lr_ratio
    if iteration < warmup_iters:
        k = (1 - iteration / warmup_iters) * (1 - warmup_ratio)
        return poly * (1 - k)
    return poly
