"""The 15 ImageNet-C corruption types at 5 severities (Hendrycks & Dietterich, ICLR 2019),
written here in numpy / scipy / scikit-image / Pillow.

The types and their severity ladders follow the benchmark's design (noise, blur, weather,
digital; severity 1 mild to 5 strong). Spatial parameters (blur radii, displacements)
are given for 224-pixel images and scaled with the image size, so the same severity
means the same relative damage on 28-pixel Fashion-MNIST and 128x64 street scenes.
Frost, snow and fog use procedurally generated textures (ImageNet-C ships frost
photographs); they are stand-ins for the originals, not pixel-identical. Every function
maps a uint8 H x W x 3 image to a uint8 image of the same shape, deterministically for
a given ``rng``.
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import color

Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


def _scale(x: np.ndarray) -> float:
    return max(x.shape[:2]) / 224.0


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(x, sigma=(sigma, sigma, 0)) if sigma > 0 else x


def _noise_field(shape: tuple[int, int], rng: np.random.Generator, octaves: int = 5) -> np.ndarray:
    """Multi-octave smooth noise in [0, 1] (a plasma-fractal substitute)."""
    h, w = shape
    field = np.zeros(shape)
    for k in range(octaves):
        cells = 2 ** (k + 1)
        coarse = rng.random((cells + 1, cells + 1))
        zoomed = ndimage.zoom(coarse, (h / cells, w / cells), order=3)[:h, :w]
        field[: zoomed.shape[0], : zoomed.shape[1]] += zoomed / 2 ** k
    field -= field.min()
    return field / max(field.max(), 1e-8)


def gaussian_noise(x, s, rng):
    return _to_uint8(x / 255 + rng.normal(0, [0.08, 0.12, 0.18, 0.26, 0.38][s - 1], x.shape))


def shot_noise(x, s, rng):
    lam = [60, 25, 12, 5, 3][s - 1]
    return _to_uint8(rng.poisson(x / 255 * lam) / lam)


def impulse_noise(x, s, rng):
    amount = [0.03, 0.06, 0.09, 0.17, 0.27][s - 1]
    y = x / 255
    hit = rng.random(x.shape) < amount
    y = np.where(hit, (rng.random(x.shape) < 0.5).astype(float), y)
    return _to_uint8(y)


def defocus_blur(x, s, rng):
    radius, soft = [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)][s - 1]
    r = max(radius * _scale(x), 0.75)
    n = int(np.ceil(r))
    yy, xx = np.mgrid[-n:n + 1, -n:n + 1]
    disk = (xx ** 2 + yy ** 2 <= r ** 2).astype(float)
    disk = ndimage.gaussian_filter(disk / disk.sum(), soft)
    y = np.stack([ndimage.convolve(x[..., c] / 255, disk, mode="reflect") for c in range(3)], -1)
    return _to_uint8(y)


def glass_blur(x, s, rng):
    sigma, delta, iters = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)][s - 1]
    sc = _scale(x)
    y = _blur(x / 255, sigma * sc)
    d = max(int(round(delta * sc)), 1)
    h, w = x.shape[:2]
    rows, cols = np.mgrid[0:h, 0:w]
    for _ in range(iters):  # each pixel takes the value of a random neighbour within d
        r = np.clip(rows + rng.integers(-d, d + 1, (h, w)), 0, h - 1)
        c = np.clip(cols + rng.integers(-d, d + 1, (h, w)), 0, w - 1)
        y = y[r, c]
    return _to_uint8(_blur(y, sigma * sc))


def motion_blur(x, s, rng):
    length = max(int(round([10, 15, 15, 15, 20][s - 1] * _scale(x))), 2)
    angle = rng.uniform(-45, 45)
    kernel = np.zeros((length, length))
    kernel[length // 2, :] = 1
    kernel = ndimage.rotate(kernel, angle, reshape=False, order=1)
    kernel /= max(kernel.sum(), 1e-8)
    y = np.stack([ndimage.convolve(x[..., c] / 255, kernel, mode="nearest") for c in range(3)], -1)
    return _to_uint8(y)


def zoom_blur(x, s, rng):
    top = [1.11, 1.16, 1.21, 1.26, 1.31][s - 1]
    h, w = x.shape[:2]
    acc = x / 255
    zooms = np.arange(1, top, 0.03)[1:]
    for z in zooms:  # average of centre-zoomed copies
        big = ndimage.zoom(x / 255, (z, z, 1), order=1)
        t, l = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
        acc = acc + big[t:t + h, l:l + w]
    return _to_uint8(acc / (len(zooms) + 1))


def snow(x, s, rng):
    density, length, mix = [(0.02, 4, 0.15), (0.04, 6, 0.25), (0.05, 8, 0.35), (0.07, 10, 0.4),
                            (0.09, 12, 0.5)][s - 1]
    h, w = x.shape[:2]
    flakes = (rng.random((h, w)) < density).astype(float)
    kernel = np.zeros((3, max(int(length * _scale(x)), 2)))
    kernel[1, :] = 1
    flakes = ndimage.rotate(ndimage.convolve(flakes, kernel / kernel.sum() * 3), rng.uniform(-60, -30),
                            reshape=False, order=1)
    gray = color.rgb2gray(x)[..., None] * 1.5 + 0.5
    base = (1 - mix) * x / 255 + mix * np.maximum(x / 255, gray)
    return _to_uint8(np.maximum(base, np.clip(flakes, 0, 1)[..., None]))


def frost(x, s, rng):
    c0, c1 = [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)][s - 1]
    h, w = x.shape[:2]
    crystals = np.abs(ndimage.sobel(_noise_field((h, w), rng, 6)))
    crystals = 0.6 * crystals / max(crystals.max(), 1e-8) + 0.4 * _noise_field((h, w), rng, 4)
    ice = np.stack([crystals * 0.85, crystals * 0.95, crystals], -1)
    return _to_uint8(c0 * x / 255 + c1 * ice)


def fog(x, s, rng):
    strength, decay = [(1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)][s - 1]
    y = x / 255
    peak = y.max()
    haze = _noise_field(x.shape[:2], rng, octaves=int(6 - decay))[..., None]
    y = y + strength * haze * 0.3
    return _to_uint8(y * peak / (peak + strength * 0.3))


def brightness(x, s, rng):
    hsv = color.rgb2hsv(x)
    hsv[..., 2] = np.clip(hsv[..., 2] + [0.1, 0.2, 0.3, 0.4, 0.5][s - 1], 0, 1)
    return _to_uint8(color.hsv2rgb(hsv))


def contrast(x, s, rng):
    c = [0.4, 0.3, 0.2, 0.1, 0.05][s - 1]
    y = x / 255
    mean = y.mean(axis=(0, 1), keepdims=True)
    return _to_uint8((y - mean) * c + mean)


def elastic_transform(x, s, rng):
    alpha, sigma = [(244 * 2, 244 * 0.7), (244 * 2, 244 * 0.08), (244 * 0.05, 244 * 0.01),
                    (244 * 0.07, 244 * 0.01), (244 * 0.12, 244 * 0.01)][s - 1]
    sc = _scale(x)
    h, w = x.shape[:2]
    dy = ndimage.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma * sc, mode="reflect") * alpha * sc
    dx = ndimage.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma * sc, mode="reflect") * alpha * sc
    rows, cols = np.mgrid[0:h, 0:w]
    coords = [rows + dy, cols + dx]
    y = np.stack([ndimage.map_coordinates(x[..., c] / 255, coords, order=1, mode="reflect")
                  for c in range(3)], -1)
    return _to_uint8(y)


def pixelate(x, s, rng):
    factor = [0.6, 0.5, 0.4, 0.3, 0.25][s - 1]
    h, w = x.shape[:2]
    small = Image.fromarray(x).resize((max(int(w * factor), 1), max(int(h * factor), 1)), Image.BOX)
    return np.asarray(small.resize((w, h), Image.NEAREST))


def jpeg_compression(x, s, rng):
    buffer = io.BytesIO()
    Image.fromarray(x).save(buffer, "JPEG", quality=[25, 18, 15, 10, 7][s - 1])
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


CORRUPTIONS: dict[str, Corruption] = {
    f.__name__: f for f in (gaussian_noise, shot_noise, impulse_noise, defocus_blur, glass_blur,
                            motion_blur, zoom_blur, snow, frost, fog, brightness, contrast,
                            elastic_transform, pixelate, jpeg_compression)
}


def corrupt(image: np.ndarray, name: str, severity: int, rng: np.random.Generator | int = 0) -> np.ndarray:
    """Apply corruption ``name`` at ``severity`` (1-5) to a uint8 H x W x 3 (or H x W) image."""
    if name not in CORRUPTIONS:
        raise KeyError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    if severity not in range(1, 6):
        raise ValueError(f"severity must be 1..5, got {severity}")
    image = np.asarray(image)
    gray = image.ndim == 2
    if gray:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected a uint8 H x W x 3 image, got {image.dtype} {image.shape}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    out = CORRUPTIONS[name](image, severity, rng)
    return out[..., 0] if gray else out
