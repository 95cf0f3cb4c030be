"""Domain appearance: how a label map becomes an image.

A :class:`Style` gives each class a palette, a texture (procedural noise for the rendered
sources, real photographs for the targets), the lighting of each surface, haze, sky and
camera response. The rendered sources are flat-shaded and saturated; the targets carry
photographic texture, muted or tinted colours and sensor noise. Weather and night are
applied afterwards by ``effects.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from experiments.data.miniature import objects as O
from experiments.data.miniature import scenes as S
from experiments.data.miniature import textures as T
from experiments.data.miniature.classes import BUILDING, SKY

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Style:
    """Appearance statistics of one domain."""

    palette: dict[int, list[RGB]]  # class -> base colours, one drawn per instance
    colour_jitter: float  # per-instance relative colour noise
    textures: dict[int, list[str]]  # class -> texture names (photo or "noiseN"), one per instance
    default_texture: str
    texture_mode: str  # "detail": modulate luminance; "photo": blend in the photo's colours
    texture_strength: float
    texture_scale: float  # texture pixels per metre
    shade: dict[int, float]  # surface kind -> brightness (sun from one side, shadowed other)
    sky: tuple[RGB, RGB]  # zenith, horizon
    sky_photo: str | None  # photo whose top band is used as the sky (clouds), if any
    haze: RGB
    visibility: float  # metres; haze reaches 63 % at this depth
    glass: RGB  # windows, windscreens, tyres
    window: RGB
    lane_mark: RGB
    saturation: float = 1.0
    gamma: float = 1.0
    gain: float = 1.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    noise: float = 0.0  # sensor noise std (0..1 scale)
    blur: float = 0.0  # gaussian sigma in pixels (optics)
    jpeg: int = 0  # JPEG quality of a compress/decompress round trip (0 = none)
    skin: list[RGB] = field(default_factory=lambda: [(224, 172, 140), (160, 110, 80), (90, 60, 45)])


def _pick(rng: np.random.Generator, options: list) -> object:
    return options[int(rng.integers(len(options)))]


def _instance_tables(scene: S.Scene, style: Style, rng: np.random.Generator):
    n = len(scene.instance_class)
    base = np.zeros((n, 3), np.float32)
    second = np.zeros((n, 3), np.float32)
    skin = np.zeros((n, 3), np.float32)
    texture = []
    offsets = rng.uniform(0, 4096, size=(n, 2))
    for i, cls in enumerate(scene.instance_class):
        colours = style.palette.get(cls, [(128, 128, 128)])
        # Mostly brightness, a little hue: grey asphalt stays grey, cars differ in shade.
        jitter = (1.0 + rng.normal(0.0, style.colour_jitter)) * (1.0 + rng.normal(0.0, style.colour_jitter / 4, 3))
        base[i] = np.clip(np.array(_pick(rng, colours), np.float32) / 255 * jitter, 0, 1)
        second[i] = np.clip(np.array(_pick(rng, colours), np.float32) / 255 * rng.uniform(0.4, 0.9), 0, 1)
        skin[i] = np.array(_pick(rng, style.skin), np.float32) / 255
        texture.append(_pick(rng, style.textures.get(cls, [style.default_texture])))
    return base, second, skin, texture, offsets


def render_image(scene: S.Scene, style: Style, rng: np.random.Generator) -> np.ndarray:
    """Colour ``scene`` in ``style``: float32 H x W x 3 in [0, 1] (linear-ish, before effects)."""
    height, width = scene.label.shape
    base, second, skin, texture, offsets = _instance_tables(scene, style, rng)
    inst = scene.instance
    image = base[inst]
    image[scene.part == O.PART_SECOND] = second[inst][scene.part == O.PART_SECOND]
    image[scene.part == O.PART_SKIN] = skin[inst][scene.part == O.PART_SKIN]
    image[scene.part == O.PART_DARK] = np.array(style.glass, np.float32) / 255

    # Texture, per instance: photographic targets blend in the photo, sources modulate brightness.
    names = np.array(texture, dtype=object)
    solid = scene.surface != S.SURF_SKY
    for name in sorted(set(texture)):
        members = np.nonzero(names == name)[0]
        m = solid & np.isin(inst, members)
        if not m.any():
            continue
        off = offsets[inst[m]]
        if style.texture_mode == "photo" and not name.startswith("noise"):
            tex = T.photo(name)
            rows = np.floor(-scene.t[m] * style.texture_scale + off[:, 0]).astype(np.int64) % tex.shape[0]
            cols = np.floor(scene.s[m] * style.texture_scale + off[:, 1]).astype(np.int64) % tex.shape[1]
            sampled = tex[rows, cols]
            # Keep the instance's hue from the palette, take local contrast and grain from the photo.
            lum = sampled.mean(axis=1, keepdims=True)
            mixed = image[m] * (lum / (lum.mean() + 1e-6)) * 0.6 + sampled * image[m].mean(1, keepdims=True) / (
                sampled.mean() + 1e-6) * 0.4
            image[m] = (1 - style.texture_strength) * image[m] + style.texture_strength * mixed
        else:
            tex = T.detail(name)
            rows = np.floor(-scene.t[m] * style.texture_scale + off[:, 0]).astype(np.int64) % tex.shape[0]
            cols = np.floor(scene.s[m] * style.texture_scale + off[:, 1]).astype(np.int64) % tex.shape[1]
            image[m] *= (1.0 + style.texture_strength * 0.25 * tex[rows, cols])[:, None]

    # Windows on building facades and on buses / trams.
    facade = np.isin(scene.surface, (S.SURF_LEFT, S.SURF_RIGHT, S.SURF_BACK)) & (scene.label == BUILDING)
    fs, ft = scene.s / 2.6, scene.t / 3.1
    windows = facade & ((fs % 1) > 0.3) & ((fs % 1) < 0.75) & ((ft % 1) > 0.35) & ((ft % 1) < 0.8) & (scene.t > 1.0)
    image[windows] = image[windows] * 0.35 + np.array(style.window, np.float32) / 255 * 0.65
    image[scene.lane_marks] = np.array(style.lane_mark, np.float32) / 255

    shade = np.ones((height, width), np.float32)
    for kind, factor in style.shade.items():
        shade[scene.surface == kind] = factor
    image *= shade[:, :, None]

    # Sky: vertical gradient (or a photographed sky), then haze over distance.
    sky = scene.label == SKY
    rows = np.clip((np.arange(height)[:, None] / max(scene.horizon, 1.0)), 0, 1)[:, :, None]
    gradient = (np.array(style.sky[0], np.float32) * (1 - rows) + np.array(style.sky[1], np.float32) * rows) / 255
    gradient = np.broadcast_to(gradient, (height, width, 3))
    if style.sky_photo:
        photo = T.photo(style.sky_photo)
        band = photo[: photo.shape[0] // 3]
        crop = cv2.resize(band, (width, max(int(scene.horizon) + 1, 1)), interpolation=cv2.INTER_AREA)
        crop = np.vstack([crop, np.repeat(crop[-1:], height - crop.shape[0], axis=0)]) if crop.shape[0] < height else crop[:height]
        gradient = 0.5 * gradient + 0.5 * crop * (gradient.mean() / (crop.mean() + 1e-6))
    image[sky] = gradient[sky]
    fog = 1.0 - np.exp(-np.minimum(scene.depth, 1e3) / style.visibility)
    fog[sky] = 0.0
    image = image * (1 - fog[:, :, None]) + np.array(style.haze, np.float32) / 255 * fog[:, :, None]

    # Camera response.
    grey = image.mean(axis=2, keepdims=True)
    image = grey + (image - grey) * style.saturation
    image = np.clip(image * np.array(style.tint, np.float32) * style.gain, 0, 1) ** style.gamma
    if style.blur > 0:
        image = cv2.GaussianBlur(image, (0, 0), style.blur)
    if style.noise > 0:
        image = image + rng.normal(0.0, style.noise, image.shape).astype(np.float32)
    return np.clip(image, 0, 1).astype(np.float32)


def to_uint8(image: np.ndarray, jpeg: int = 0) -> np.ndarray:
    """Quantise to uint8 RGB; optionally pass through JPEG (compression artefacts of real photos)."""
    out = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
    if jpeg:
        ok, buf = cv2.imencode(".jpg", out[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, jpeg])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].copy()
    return out
