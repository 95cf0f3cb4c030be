"""Street-scene layouts rendered as label maps by casting one ray per pixel.

A scene is a straight street seen by a pinhole camera at height ``hc`` looking along it:
the ground plane (road, verges, sidewalks), two facade planes at the sides (buildings,
vegetation, walls, fences), a far backdrop skyline and the sky. Objects (cars, persons,
poles, ...) are upright flat figures placed on the ground and painted far to near
(``objects.py``). The label map is the primary output; images are rendered from it and the
geometry kept here (depth, surface coordinates, light sources) by ``styles.py``.

Domains differ in their :class:`Layout`: camera height and horizon, street widths, how often
sidewalks and unpaved verges occur, which objects appear and how many.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from experiments.data.miniature import objects as O
from experiments.data.miniature.classes import (
    BUILDING, FENCE, IGNORE, ROAD, SIDEWALK, SKY, TERRAIN, VEGETATION, WALL,
)

# Surface kinds, used by the renderer for shading.
SURF_SKY, SURF_GROUND, SURF_LEFT, SURF_RIGHT, SURF_BACK, SURF_OBJECT = range(6)
FAR = 1e4  # depth of the sky


@dataclass(frozen=True)
class Layout:
    """Statistics of a domain's street layout (ranges are sampled uniformly)."""

    horizon: tuple[float, float]  # horizon row as a fraction of the image height
    camera_height: tuple[float, float]  # metres
    road_width: tuple[float, float]
    sidewalk_prob: float  # chance that a side has a sidewalk
    sidewalk_width: tuple[float, float]
    verge_prob: float  # chance of an unpaved strip (terrain) between road and sidewalk/facade
    verge_width: tuple[float, float]
    edge_wobble: float  # amplitude (m) of irregular road edges (unpaved streets)
    setback: tuple[float, float]  # ground between sidewalk and facade
    setback_class: int  # what that ground is
    facade_weights: dict[int, float]  # facade segment class -> weight
    building_height: tuple[float, float]
    object_rates: dict[str, float]  # object kind -> expected count per scene
    ego_hood_prob: float = 0.0  # the camera car's bonnet at the bottom (ignore)
    excluded: frozenset[int] = field(default_factory=frozenset)  # trainIds never drawn


@dataclass
class Scene:
    """A rendered layout: per-pixel labels plus the geometry the image renderer needs."""

    label: np.ndarray  # H x W uint8 trainIds, 255 ignore
    instance: np.ndarray  # H x W int32, index into ``colour_keys``
    part: np.ndarray  # H x W uint8 object part (objects.PART_*)
    surface: np.ndarray  # H x W uint8 surface kind
    depth: np.ndarray  # H x W float32 metres
    s: np.ndarray  # H x W float32 surface coordinate (metres), horizontal
    t: np.ndarray  # H x W float32 surface coordinate (metres), vertical / along the street
    instance_class: list[int]  # trainId of each instance
    lights: list[O.Light]
    horizon: float  # row of the horizon
    lane_marks: np.ndarray  # H x W bool, painted road markings


def _segments(rng: np.random.Generator, weights: dict[int, float], far: float,
              heights: tuple[float, float]) -> list[tuple[float, int, float]]:
    """Facade segments along the street: (start depth, class, height), from depth 0 to ``far``."""
    classes = list(weights)
    p = np.array([weights[c] for c in classes], dtype=float)
    p /= p.sum()
    out, z = [], 0.0
    while z < far:
        cls = classes[rng.choice(len(classes), p=p)]
        if cls == BUILDING:
            height = rng.uniform(*heights)
        elif cls == VEGETATION:
            height = rng.uniform(3.0, 9.0)
        elif cls == WALL:
            height = rng.uniform(1.0, 3.0)
        else:  # fence, terrain (an open lot shows the backdrop)
            height = rng.uniform(1.0, 2.2)
        out.append((z, cls, height))
        z += rng.uniform(6.0, 22.0)
    return out


def _lookup(segments: list[tuple[float, int, float]], z: np.ndarray):
    starts = np.array([s[0] for s in segments])
    index = np.clip(np.searchsorted(starts, z, side="right") - 1, 0, len(segments) - 1)
    classes = np.array([s[1] for s in segments])[index]
    heights = np.array([s[2] for s in segments])[index]
    return index, classes, heights


def render_layout(layout: Layout, rng: np.random.Generator, width: int, height: int) -> Scene:
    """Sample one street from ``layout`` and ray-cast its label map at ``width`` x ``height``."""
    f = width * rng.uniform(1.0, 1.2)  # focal length in pixels (Cityscapes: fx 2262 px at 2048, 1.1 x width)
    hy = height * rng.uniform(*layout.horizon)
    vx = width * rng.uniform(0.4, 0.6)
    hc = rng.uniform(*layout.camera_height)
    road = rng.uniform(*layout.road_width)
    lane_offset = rng.uniform(0.15, 0.35) * road  # the camera drives in the right lane
    road_left, road_right = -(road - lane_offset), lane_offset

    sides = {}
    for side in ("left", "right"):
        verge = rng.uniform(*layout.verge_width) if rng.random() < layout.verge_prob else 0.0
        walk = rng.uniform(*layout.sidewalk_width) if rng.random() < layout.sidewalk_prob else 0.0
        setback = rng.uniform(*layout.setback)
        sides[side] = (verge, walk, setback, rng.uniform(0, 2 * np.pi))
    facade_far = rng.uniform(60.0, 110.0)
    facade = {s: _segments(rng, layout.facade_weights, facade_far, layout.building_height) for s in sides}

    u = (np.arange(width, dtype=np.float32) + 0.5)[None, :]
    v = (np.arange(height, dtype=np.float32) + 0.5)[:, None]
    dx = np.broadcast_to((u - vx) / f, (height, width))
    dy = np.broadcast_to((v - hy) / f, (height, width))  # > 0 below the horizon

    label = np.full((height, width), SKY, np.uint8)
    instance = np.zeros((height, width), np.int32)
    surface = np.full((height, width), SURF_SKY, np.uint8)
    depth = np.full((height, width), FAR, np.float32)
    s = (dx * 10).astype(np.float32)
    t = (-dy * 10).astype(np.float32)
    instance_class = [SKY]

    # Backdrop skyline at the end of the street: a band of buildings and trees.
    z_back = facade_far + rng.uniform(5.0, 30.0)
    x_back = dx * z_back
    cells = np.floor(x_back / 8.0).astype(int)
    cell_ids, cell_index = np.unique(cells, return_inverse=True)
    cell_index = cell_index.reshape(cells.shape)
    cell_rng = np.random.default_rng([int(rng.integers(1 << 30))])
    cell_h = cell_rng.uniform(4.0, layout.building_height[1] * 0.9, size=len(cell_ids))
    cell_cls = np.where(cell_rng.random(len(cell_ids)) < 0.65, BUILDING, VEGETATION)
    y_back = hc - dy * z_back
    hit = (y_back >= 0) & (y_back <= cell_h[cell_index])
    base = len(instance_class)
    instance_class += [int(c) for c in cell_cls]
    label[hit] = cell_cls[cell_index][hit]
    instance[hit] = base + cell_index[hit]
    surface[hit] = SURF_BACK
    depth[hit] = z_back
    s[hit], t[hit] = x_back[hit], y_back[hit]

    # Ground plane: lateral bands road | verge | sidewalk | setback, with wobbly edges.
    below = dy > 1e-4
    zg = np.where(below, hc / np.maximum(dy, 1e-4), FAR)
    xg = dx * zg
    ground = below & (zg < z_back)
    g_label = np.full((height, width), layout.setback_class, np.uint8)
    g_inst = np.zeros((height, width), np.int32)
    edges = {}
    for sign, side, edge in ((-1, "left", road_left), (1, "right", road_right)):
        verge, walk, setback, phase = sides[side]
        wobble = layout.edge_wobble * (np.sin(zg * 0.35 + phase) + 0.5 * np.sin(zg * 1.3 + 2 * phase))
        lateral = sign * xg - abs(edge) - (wobble if verge > 0 else 0.0)  # metres beyond the road edge
        on_side = (xg * sign) > 0
        bands = [(verge, TERRAIN), (walk, SIDEWALK)]
        g_label[on_side & (lateral < 0)] = ROAD
        start = 0.0
        for w, cls in bands:
            m = on_side & (lateral >= start) & (lateral < start + w)
            g_label[m] = cls
            start += w
        edges[side] = abs(edge) + verge + walk + setback  # facade plane distance
        for cls in (TERRAIN, SIDEWALK, layout.setback_class):
            g_inst[on_side & (g_label == cls)] = len(instance_class)
            instance_class.append(cls)
    g_inst[g_label == ROAD] = len(instance_class)
    instance_class.append(ROAD)
    label[ground] = g_label[ground]
    instance[ground] = g_inst[ground]
    surface[ground] = SURF_GROUND
    depth[ground] = zg[ground]
    s[ground], t[ground] = xg[ground], zg[ground]
    lane_marks = ground & (g_label == ROAD) & (np.abs(xg - (road_left + road_right) / 2) < 0.08) \
        & ((zg % 9.0) < 4.5)

    # Facades: planes at x = -edges["left"] and x = +edges["right"], in front of the ground
    # wherever the ray meets them above the ground and below the segment's height.
    for sign, side, surf in ((-1, "left", SURF_LEFT), (1, "right", SURF_RIGHT)):
        toward = (dx * sign) > 1e-4
        zf = np.where(toward, edges[side] / np.maximum(np.abs(dx), 1e-4), FAR)
        yf = hc - dy * zf
        index, classes, heights = _lookup(facade[side], zf)
        hit = toward & (zf < facade_far) & (yf >= 0) & (yf <= heights) & (zf < depth)
        base = len(instance_class)
        instance_class += [seg[1] for seg in facade[side]]
        label[hit] = classes[hit]
        instance[hit] = base + index[hit]
        surface[hit] = surf
        depth[hit] = zf[hit]
        s[hit], t[hit] = zf[hit], yf[hit]

    camera = O.Camera(f=f, hc=hc, vx=vx, hy=hy, width=width, height=height)
    street = O.Street(road_left, road_right, edges["left"], edges["right"],
                      sides["left"][1] > 0, sides["right"][1] > 0, facade_far)
    scene = Scene(label, instance, np.zeros_like(label), surface, depth, s, t, instance_class,
                  [], hy, lane_marks)
    O.place_objects(scene, camera, street, layout, rng)
    if rng.random() < layout.ego_hood_prob:
        _ego_hood(scene, rng)
    for cls in layout.excluded:  # safety net: a domain never shows a class it lacks
        if (scene.label == cls).any():
            raise AssertionError(f"layout drew excluded class {cls}")
    return scene


def _ego_hood(scene: Scene, rng: np.random.Generator) -> None:
    """The bonnet of the recording car: an ellipse cap at the bottom, labelled ignore."""
    height, width = scene.label.shape
    top = height * rng.uniform(0.86, 0.92)
    yy, xx = np.mgrid[0:height, 0:width]
    cap = ((xx - width / 2) / (width * 0.75)) ** 2 + ((yy - height * 1.25) / (height * 1.25 - top)) ** 2 < 1
    scene.label[cap] = IGNORE
    scene.instance[cap] = len(scene.instance_class)
    scene.instance_class.append(IGNORE)
    scene.surface[cap] = SURF_OBJECT
    scene.depth[cap] = 1.0
