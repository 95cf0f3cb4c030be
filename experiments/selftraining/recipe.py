"""The parts of DAFormer's self-training recipe, as pure functions (docs/recipe.md).

Everything here works on tensors and modules handed in; randomness comes only from the
``torch.Generator`` passed by the caller, so a training iteration is a function of its seed.
The training loop that strings these together lives in ``experiments.selftraining.loop``.
"""

from __future__ import annotations

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
# DACS (Tranheden et al., WACV 2021) as DAFormer runs it (its ``dacs_transforms.py`` with
# kornia 0.5.8): one uniform draw per iteration decides whether the mixed images of that
# iteration are colour-jittered (with ``probability``) and one whether they are blurred;
# the jitter factors, their order and the blur's sigma are then drawn per image.

def _rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """B x 3 x H x W RGB in [0, 1] -> HSV with hue in [0, 2 pi), as kornia's ``rgb_to_hsv``."""
    maximum, argmax = rgb.max(dim=1)
    minimum = rgb.min(dim=1).values
    delta = maximum - minimum
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.stack([(g - b) / safe % 6, (b - r) / safe + 2, (r - g) / safe + 4], dim=1)
    hue = torch.gather(hue, 1, argmax.unsqueeze(1)).squeeze(1)
    hue = torch.where(delta > 0, hue, torch.zeros_like(hue)) * (math.pi / 3)
    saturation = torch.where(maximum > 0, delta / torch.where(maximum > 0, maximum, torch.ones_like(maximum)),
                             torch.zeros_like(maximum))
    return torch.stack([hue % (2 * math.pi), saturation, maximum], dim=1)


def _hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    hue, saturation, value = hsv[:, 0] / (2 * math.pi) * 6, hsv[:, 1], hsv[:, 2]
    sector = torch.floor(hue) % 6
    f = hue - torch.floor(hue)
    p, q, t = value * (1 - saturation), value * (1 - f * saturation), value * (1 - (1 - f) * saturation)
    choices = [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)]
    out = torch.zeros_like(hsv)
    for index, (r, g, b) in enumerate(choices):
        here = (sector == index).unsqueeze(1)
        out = torch.where(here, torch.stack([r, g, b], dim=1), out)
    return out


def _jitter_one(image: torch.Tensor, factors: list[float], order: list[int]) -> torch.Tensor:
    """kornia 0.5's ColorJitter on one image: brightness adds (factor - 1), contrast multiplies,
    saturation scales S and hue shifts H (factor x 2 pi) in HSV; each step clamps to [0, 1]."""
    brightness, contrast, saturation, hue = factors
    x = image.unsqueeze(0)
    for step in order:
        if step == 0:
            x = (x + (brightness - 1.0)).clamp(0, 1)
        elif step == 1:
            x = (x * contrast).clamp(0, 1)
        elif step == 2:
            hsv = _rgb_to_hsv(x)
            x = _hsv_to_rgb(torch.cat([hsv[:, :1], (hsv[:, 1:2] * saturation).clamp(0, 1), hsv[:, 2:]], 1))
        else:
            hsv = _rgb_to_hsv(x)
            x = _hsv_to_rgb(torch.cat([(hsv[:, :1] + hue * 2 * math.pi) % (2 * math.pi), hsv[:, 1:]], 1))
    return x[0].clamp(0, 1)


def _applies(generator: torch.Generator, probability: float) -> bool:
    """DACS's per-iteration gate: one uniform u, applied when u > 1 - probability."""
    return torch.rand(1, generator=generator).item() > 1.0 - probability


def color_jitter(images01: torch.Tensor, generator: torch.Generator, strength: float = 0.2,
                 probability: float = 0.8) -> torch.Tensor:
    """Brightness, contrast, saturation and hue jitter of ``strength`` (kornia 0.5.8's
    ``ColorJitter(s, s, s, s)``: factors U[1 - s, 1 + s], hue U[-s, s], a random order per
    image), applied to the whole batch with ``probability``."""
    if not _applies(generator, probability):
        return images01
    out = []
    for image in images01:
        u = torch.rand(4, generator=generator)
        factors = (1 + strength * (2 * u[:3] - 1)).clamp(0, 2).tolist() + [float(strength * (2 * u[3] - 1))]
        out.append(_jitter_one(image, factors, torch.randperm(4, generator=generator).tolist()))
    return torch.stack(out)


def blur_kernel_size(length: int) -> int:
    """DACS's kernel size along an axis of ``length`` pixels: the odd number at or below
    ceil(0.1 x length) (floor(ceil(0.1 n) - 0.5 + ceil(0.1 n) mod 2))."""
    c = math.ceil(0.1 * length)
    return int(math.floor(c - 0.5 + c % 2))


def _gaussian(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    x = torch.arange(size, dtype=like.dtype, device=like.device) - size // 2
    if size % 2 == 0:
        x = x + 0.5
    kernel = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return kernel / kernel.sum()


def gaussian_blur(images01: torch.Tensor, generator: torch.Generator, probability: float = 0.5,
                  sigma_range: tuple[float, float] = (0.15, 1.15)) -> torch.Tensor:
    """Gaussian blur of the whole batch with ``probability`` (DACS), sigma drawn per image from
    ``sigma_range``, kernel ``blur_kernel_size`` of the height and of the width, reflect border."""
    if not _applies(generator, probability):
        return images01
    size_y, size_x = blur_kernel_size(images01.shape[-2]), blur_kernel_size(images01.shape[-1])
    out = []
    for image in images01:
        sigma = sigma_range[0] + (sigma_range[1] - sigma_range[0]) * torch.rand(1, generator=generator).item()
        img = F.pad(image.unsqueeze(0), (size_x // 2, (size_x - 1) // 2, size_y // 2, (size_y - 1) // 2),
                    mode="reflect")
        img = F.conv2d(img, _gaussian(size_x, sigma, image).view(1, 1, 1, -1).expand(3, 1, 1, size_x), groups=3)
        img = F.conv2d(img, _gaussian(size_y, sigma, image).view(1, 1, -1, 1).expand(3, 1, size_y, 1), groups=3)
        out.append(img[0])
    return torch.stack(out)


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
                     thing_classes: Iterable[int], scale_min_ratio: float = 0.75) -> torch.Tensor:
    """Mean L2 distance between student and frozen ImageNet features on thing-class cells.

    DAFormer section 3.3: regularises the encoder towards ImageNet features where the source
    labels are countable objects; zero when no cell is a thing class.
    """
    cells = downscale_labels(labels, tuple(student_feat.shape[-2:]), scale_min_ratio)
    mask = torch.isin(cells, device_constant(tuple(thing_classes), cells.device, torch.long))
    if not mask.any():
        return student_feat.sum() * 0.0
    dist = torch.norm(student_feat - imagenet_feat.detach(), dim=1, p=2)
    return dist[mask].mean()


# ---------------------------------------------------------------- optimiser and schedule
def param_groups(model: nn.Module, lr: float, weight_decay: float, head_lr_mult: float = 10.0,
                 no_decay_keys: Sequence[str] = ("norm", "pos_block")) -> list[dict]:
    """AdamW groups by parameter *name*, as mmcv's ``custom_keys`` in DAFormer/HRDA's configs:
    ``head`` gets ``head_lr_mult`` x lr, names containing ``norm`` or ``pos_block`` no weight decay.

    mmcv applies only the first key that a name contains, keys tried longest first (ties
    alphabetically): ``pos_block``, then ``head``, then ``norm``. So a decode-head norm layer
    keeps its weight decay, and ResNet's BatchNorm layers, named ``bn*``, are decayed too.
    """
    rules = {"head": (head_lr_mult, 1.0), **{key: (1.0, 0.0) for key in no_decay_keys}}
    order = sorted(sorted(rules), key=len, reverse=True)
    groups: dict[tuple[float, float], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = next((k for k in order if k in name), None)
        groups.setdefault(rules[key] if key else (1.0, 1.0), []).append(param)
    named = {(head_lr_mult, 1.0): "head", (1.0, 0.0): "backbone_no_decay", (1.0, 1.0): "backbone"}
    return [{"params": params, "lr": lr * lr_mult, "weight_decay": weight_decay * decay_mult,
             "name": named.get((lr_mult, decay_mult), f"lr{lr_mult}_decay{decay_mult}")}
            for (lr_mult, decay_mult), params in sorted(groups.items(), reverse=True)]


def lr_factor(iteration: int, max_iters: int, warmup_iters: int = 1500, warmup_ratio: float = 1e-6,
              power: float = 1.0, min_lr_ratio: float = 0.0) -> float:
    """mmcv's poly schedule with linear warmup, as a multiplier of the base learning rate."""
    poly = (1 - min(iteration, max_iters) / max_iters) ** power * (1 - min_lr_ratio) + min_lr_ratio
    if iteration < warmup_iters:
        k = (1 - iteration / warmup_iters) * (1 - warmup_ratio)
        return poly * (1 - k)
    return poly
