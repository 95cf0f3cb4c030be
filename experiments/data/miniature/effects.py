"""Adverse conditions: night (Dark Zurich, ACDC night) and fog, rain, snow (ACDC).

Night is rendered, not filtered: the day image is darkened to a low ambient level, then
street lamps, headlights, tail lights, traffic signals and lit windows add light where the
scene geometry says they are, followed by strong sensor noise, as in real night footage.
Fog, rain and snow use albumentations' weather transforms on top of a matching change of
the scene itself (depth haze for fog, a wet darker road for rain, white ground for snow).
Labels are never changed.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np

from experiments.data.miniature import scenes as S
from experiments.data.miniature.classes import BUILDING, ROAD, SIDEWALK, SKY, TERRAIN, VEGETATION

_LIGHT_RGB = {
    "head": (1.0, 0.97, 0.85), "tail": (1.0, 0.1, 0.05), "lamp": (1.0, 0.75, 0.4),
    "red": (1.0, 0.15, 0.1), "green": (0.2, 1.0, 0.5),
}  # fmt: skip


def night(image: np.ndarray, scene: S.Scene, rng: np.random.Generator, ambient: float = 0.22,
          noise: float = 0.035) -> np.ndarray:
    """Darken ``image`` (float RGB in [0, 1]) to night and light it by the scene's light sources."""
    height, width = scene.label.shape
    level = ambient * rng.uniform(0.7, 1.3)
    out = image * level * np.array([0.8, 0.9, 1.25], np.float32)  # blue-shifted ambient light
    sky = scene.label == SKY
    rows = np.arange(height, dtype=np.float32)[:, None] / max(scene.horizon, 1.0)
    glow = np.clip(rows, 0, 1) * 0.08  # city glow near the horizon
    out[sky] = (np.array([0.02, 0.025, 0.05], np.float32) + glow * np.array([1.0, 0.7, 0.45], np.float32))[
        np.nonzero(sky)[0] % height]

    # Lit windows: a random subset of window cells glows warm.
    facade = np.isin(scene.surface, (S.SURF_LEFT, S.SURF_RIGHT, S.SURF_BACK)) & (scene.label == BUILDING)
    fs, ft = scene.s / 2.6, scene.t / 3.1
    cell = (np.floor(fs).astype(np.int64) * 7919 + np.floor(ft).astype(np.int64) * 104729 + int(rng.integers(1 << 20)))
    lit = facade & ((fs % 1) > 0.3) & ((fs % 1) < 0.75) & ((ft % 1) > 0.35) & ((ft % 1) < 0.8) & ((cell % 5) == 0)
    out[lit] = np.array([0.9, 0.7, 0.35], np.float32) * rng.uniform(0.5, 1.0)

    # Light sources: a bright core plus a soft glow; lamps also light the ground below them.
    light = np.zeros_like(out)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for source in scene.lights:
        colour = np.array(_LIGHT_RGB.get(source.kind, (1, 1, 1)), np.float32)
        r = max(source.radius, 0.6)
        d2 = (xx - source.u) ** 2 + (yy - source.v) ** 2
        light += colour * (np.exp(-d2 / (2 * r * r)) * 1.2 + np.exp(-d2 / (2 * (3 * r) ** 2)) * 0.25)[:, :, None]
        if source.kind in ("lamp", "head"):
            # Pool of light on the road ahead of / below the source.
            pool_v = source.v + (6 * r if source.kind == "lamp" else 2 * r)
            pool = np.exp(-((xx - source.u) ** 2 / (2 * (6 * r) ** 2) + (yy - pool_v) ** 2 / (2 * (3 * r) ** 2)))
            ground = np.isin(scene.label, (ROAD, SIDEWALK, TERRAIN)).astype(np.float32)
            light += (image * colour * (pool * ground * 0.9)[:, :, None])
    out = out + light
    out = out + rng.normal(0.0, noise, out.shape).astype(np.float32)
    return np.clip(out, 0, 1)


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(1 << 31))


def fog(image: np.ndarray, scene: S.Scene, rng: np.random.Generator) -> np.ndarray:
    """Dense fog: strong haze over depth (visibility 20-60 m), then albumentations' fog patches."""
    visibility = rng.uniform(20.0, 60.0)
    veil = 1.0 - np.exp(-np.minimum(scene.depth, 1e3) / visibility)
    grey = np.array([0.78, 0.79, 0.8], np.float32) * rng.uniform(0.85, 1.05)
    out = image * (1 - veil[:, :, None]) + grey * veil[:, :, None]
    transform = A.Compose([A.RandomFog(fog_coef_range=(0.3, 0.6), alpha_coef=0.12, p=1.0)], seed=_seed(rng))
    return _apply(transform, out)


def rain(image: np.ndarray, scene: S.Scene, rng: np.random.Generator) -> np.ndarray:
    """Overcast rain: darker, wet (reflective, darker) road, streaks from albumentations."""
    out = image * 0.75
    wet = np.isin(scene.label, (ROAD, SIDEWALK))
    flipped = out[::-1]  # crude mirror of what is above the horizon on the wet road
    out[wet] = out[wet] * 0.7 + flipped[wet] * 0.2
    transform = A.Compose([A.RandomRain(slant_range=(-10, 10), drop_length=max(2, scene.label.shape[0] // 20),
                                        drop_width=1, blur_value=1, brightness_coefficient=0.9,
                                        drop_color=(160, 160, 170), p=1.0)], seed=_seed(rng))  # fmt: skip
    return _apply(transform, out)


def snow(image: np.ndarray, scene: S.Scene, rng: np.random.Generator) -> np.ndarray:
    """Snow cover on the ground and vegetation, flat grey light, falling snow from albumentations."""
    out = image * 0.85 + 0.08
    cover = rng.uniform(0.5, 0.85)
    ground = np.isin(scene.label, (SIDEWALK, TERRAIN, VEGETATION)) | ((scene.label == ROAD) & (scene.depth > 12))
    white = np.array([0.92, 0.93, 0.97], np.float32)
    out[ground] = out[ground] * (1 - cover) + white * cover
    transform = A.Compose([A.RandomSnow(snow_point_range=(0.1, 0.3), brightness_coeff=1.6, method="bleach", p=1.0)],
                          seed=_seed(rng))  # fmt: skip
    return _apply(transform, out)


def _apply(transform: A.Compose, image: np.ndarray) -> np.ndarray:
    """Run an albumentations pipeline on uint8 (what its weather transforms expect)."""
    uint8 = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
    result = transform(image=uint8)["image"]
    return result.astype(np.float32) / 255


CONDITIONS = {"fog": fog, "rain": rain, "snow": snow}
