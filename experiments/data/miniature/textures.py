"""Texture sources: real photographs shipped with scikit-image and scikit-learn, and
procedural noise for the rendered (source) look.

Photographs give the target domains real-image statistics (grain, edges, colour
variation) that a flat-shaded rendering lacks, which is the kind of gap between GTA and
Cityscapes the benchmark stands in for. Everything here is local: the photos are files
inside the installed packages, never downloaded.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

# Name -> loader; all are bundled with the packages (skimage.data's "legacy" set).
_PHOTOS = {
    "brick": lambda d: d.brick(), "grass": lambda d: d.grass(), "gravel": lambda d: d.gravel(),
    "coffee": lambda d: d.coffee(), "rocket": lambda d: d.rocket(), "astronaut": lambda d: d.astronaut(),
    "camera": lambda d: d.camera(), "chelsea": lambda d: d.chelsea(), "moon": lambda d: d.moon(),
    "coins": lambda d: d.coins(), "page": lambda d: d.page(), "hubble": lambda d: d.hubble_deep_field(),
    "motorcycle": lambda d: d.stereo_motorcycle()[0],
}  # fmt: skip


@lru_cache(maxsize=None)
def photo(name: str) -> np.ndarray:
    """A photograph as float32 H x W x 3 in [0, 1], halved in size (finer grain per pixel)."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        image = load_sample_image(f"{name}.jpg")
    else:
        if name not in _PHOTOS:
            raise KeyError(f"unknown texture photo {name!r}; known: {sorted(_PHOTOS) + ['china', 'flower']}")
        import skimage.data

        image = _PHOTOS[name](skimage.data)
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = image[:, :, :3].astype(np.float32) / 255.0
    image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
    image.flags.writeable = False
    return image


@lru_cache(maxsize=None)
def detail(name: str) -> np.ndarray:
    """Luminance detail of a photo (or of procedural noise), mean 0, unit-ish spread, H x W."""
    if name.startswith("noise"):
        scale = int(name[5:] or 8)
        rng = np.random.default_rng(scale)  # fixed: the same texture in every process
        coarse = rng.random((256 // scale + 1, 256 // scale + 1)).astype(np.float32)
        grey = cv2.resize(coarse, (256, 256), interpolation=cv2.INTER_CUBIC)
    else:
        grey = photo(name).mean(axis=2)
    grey = grey - grey.mean()
    out = (grey / (grey.std() + 1e-6)).astype(np.float32)
    out.flags.writeable = False
    return out


def sample(texture: np.ndarray, s: np.ndarray, t: np.ndarray, scale: float,
           offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Look ``texture`` up at surface coordinates (metres) ``s``, ``t`` with ``scale`` px/m, tiled."""
    rows = np.floor(-t * scale + offset[0]).astype(np.int64) % texture.shape[0]
    cols = np.floor(s * scale + offset[1]).astype(np.int64) % texture.shape[1]
    return texture[rows, cols]
