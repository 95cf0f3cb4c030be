"""Upright objects of a street scene, drawn as flat figures facing the camera.

Each kind is a list of primitives in metres (x to the right of the object's centre, y up
from the ground), each with a trainId and a part (body, dark glass/tyres, skin, second
colour) so the renderer can colour a car's windows differently from its body while the
label stays "car". Objects are projected with the scene's pinhole camera and painted from
far to near, so nearer objects occlude farther ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from experiments.data.miniature.classes import (
    BICYCLE, BUS, CAR, IGNORE, MOTORCYCLE, PERSON, POLE, RIDER, TRAFFIC_LIGHT, TRAFFIC_SIGN,
    TRAIN, TRUCK, VEGETATION,
)

PART_BODY, PART_DARK, PART_SKIN, PART_SECOND = range(4)
_SHIFT = 4  # cv2 sub-pixel bits

# Drawn larger than life (x, y scale about the object's foot), a calibration of the stand-in
# (docs/calibration.md): at 128x64 pixels a real-size traffic sign, bicycle or pole covers
# less than one cell of a segmentor's stride-4 output, so even a target oracle scored 0 IoU
# on them and every such class pulled mIoU towards the levels of a weak model.
ENLARGE: dict[str, tuple[float, float]] = {
    "traffic_light": (2.0, 1.6), "traffic_sign": (2.0, 1.6), "pole": (2.0, 1.0),
    "bicycle_rider": (1.7, 1.4), "motorcycle_rider": (1.7, 1.4), "parked_bicycle": (1.7, 1.4),
    "parked_motorcycle": (1.7, 1.4), "person": (1.4, 1.2), "crossing_person": (1.4, 1.2),
}  # fmt: skip


@dataclass(frozen=True)
class Camera:
    f: float
    hc: float
    vx: float
    hy: float
    width: int
    height: int

    def project(self, x: np.ndarray, y: np.ndarray, z: float) -> np.ndarray:
        return np.stack([self.vx + self.f * x / z, self.hy + self.f * (self.hc - y) / z], -1)


@dataclass(frozen=True)
class Street:
    road_left: float
    road_right: float
    facade_left: float
    facade_right: float
    walk_left: bool
    walk_right: bool
    far: float


@dataclass(frozen=True)
class Light:
    """A light source in screen space; the night renderer draws its glow."""

    u: float
    v: float
    radius: float  # pixels
    kind: str  # head, tail, lamp, red, green, window


def _rect(x0, y0, x1, y1):
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _line(x0, y0, x1, y1, w):
    """A thick segment as a quadrilateral (w in metres)."""
    d = np.array([x1 - x0, y1 - y0], float)
    n = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-9) * w / 2
    return [(x0 + n[0], y0 + n[1]), (x1 + n[0], y1 + n[1]), (x1 - n[0], y1 - n[1]), (x0 - n[0], y0 - n[1])]


def _ellipse(cx, cy, rx, ry, n=14):
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return list(zip(cx + rx * np.cos(a), cy + ry * np.sin(a)))


def _person(rng, cls=PERSON, y0=0.0, lean=0.0):
    h = rng.uniform(0.9, 1.1)
    parts = [
        (_line(-0.1, y0 + 0.85 * h, -0.12 - lean, y0, 0.15), cls, PART_SECOND),
        (_line(0.1, y0 + 0.85 * h, 0.12 + lean, y0, 0.15), cls, PART_SECOND),
        (_rect(-0.22, y0 + 0.8 * h, 0.22, y0 + 1.48 * h), cls, PART_BODY),
        (_line(-0.22, y0 + 1.42 * h, -0.3, y0 + 0.95 * h, 0.1), cls, PART_BODY),
        (_line(0.22, y0 + 1.42 * h, 0.3, y0 + 0.95 * h, 0.1), cls, PART_BODY),
        (_ellipse(0.0, y0 + 1.62 * h, 0.11, 0.13), cls, PART_SKIN),
    ]
    return parts if y0 == 0.0 else parts[2:]  # a seated rider's legs hide behind the vehicle


def _two_wheeler(rng, cls, rider: bool, side_view: bool):
    parts = []
    if side_view:
        r = 0.34 if cls == BICYCLE else 0.32
        for x in (-0.55, 0.55) if cls == BICYCLE else (-0.7, 0.7):
            parts.append((_ellipse(x, r, r, r), cls, PART_DARK))
            if cls == BICYCLE:
                parts.append((_ellipse(x, r, r * 0.75, r * 0.75), cls, PART_BODY))
        if cls == BICYCLE:
            for seg in ((-0.55, r, 0.0, r), (0.0, r, 0.3, 0.8), (0.3, 0.8, -0.2, 0.8), (-0.2, 0.8, -0.55, r),
                        (0.3, 0.8, 0.55, r), (0.3, 0.8, 0.35, 1.0)):
                parts.append((_line(*seg, 0.06), cls, PART_BODY))
        else:
            parts.append(([(-0.65, 0.35), (0.6, 0.35), (0.8, 0.75), (0.3, 0.95), (-0.55, 0.85)], cls, PART_BODY))
    else:  # seen from behind
        parts.append((_rect(-0.07, 0.0, 0.07, 0.6), cls, PART_DARK))
        w = 0.22 if cls == BICYCLE else 0.38
        parts.append((_rect(-w, 0.45, w, 0.85), cls, PART_BODY))
    if rider:
        parts += _person(rng, RIDER, y0=0.1 if cls == BICYCLE else 0.05)
    return parts


def _vehicle(rng, kind: str):
    if kind == "car":
        return [
            (_rect(-0.85, 0.0, -0.55, 0.32), CAR, PART_DARK), (_rect(0.55, 0.0, 0.85, 0.32), CAR, PART_DARK),
            ([(-0.9, 0.25), (0.9, 0.25), (0.92, 0.9), (-0.92, 0.9)], CAR, PART_BODY),
            ([(-0.8, 0.9), (0.8, 0.9), (0.62, 1.45), (-0.62, 1.45)], CAR, PART_BODY),
            ([(-0.7, 0.96), (0.7, 0.96), (0.56, 1.38), (-0.56, 1.38)], CAR, PART_DARK),
        ]
    top = {"truck": 3.6, "bus": 3.2, "train": 3.5}[kind]
    cls = {"truck": TRUCK, "bus": BUS, "train": TRAIN}[kind]
    parts = [(_rect(-1.15, 0.0, -0.75, 0.5), cls, PART_DARK), (_rect(0.75, 0.0, 1.15, 0.5), cls, PART_DARK),
             (_rect(-1.28, 0.35, 1.28, top), cls, PART_BODY)]
    if kind == "truck":
        parts.append((_rect(-1.1, 1.7, 1.1, 2.5), cls, PART_DARK))
        parts.append((_rect(-1.3, 2.6, 1.3, top), cls, PART_SECOND))
    elif kind == "bus":
        parts.append((_rect(-1.15, 1.3, 1.15, 2.8), cls, PART_DARK))
        parts.append((_rect(-0.8, 2.85, 0.8, 3.1), cls, PART_SECOND))
    else:  # a tram: windscreen and pantograph up to the overhead wire
        parts.append((_rect(-1.1, 1.6, 1.1, 2.9), cls, PART_DARK))
        parts.append((_line(-0.5, top, 0.1, 4.6, 0.06), cls, PART_SECOND))
        parts.append((_line(0.1, 4.6, -0.4, 5.2, 0.06), cls, PART_SECOND))
    return parts


def _street_furniture(rng, kind: str, facing: float):
    h = rng.uniform(4.5, 8.0)
    if kind == "pole":
        parts = [(_rect(-0.08, 0.0, 0.08, h), POLE, PART_BODY)]
        if rng.random() < 0.6:  # street lamp arm over the road
            parts.append((_line(0.0, h, 1.3 * facing, h + 0.25, 0.1), POLE, PART_BODY))
        return parts
    if kind == "traffic_light":
        h = rng.uniform(3.0, 4.2)
        return [(_rect(-0.07, 0.0, 0.07, h - 0.9), POLE, PART_BODY),
                (_rect(-0.2, h - 1.0, 0.2, h), TRAFFIC_LIGHT, PART_BODY)]
    if kind == "traffic_sign":
        h = rng.uniform(2.2, 2.8)
        shape = rng.integers(3)
        plate = (_ellipse(0, h, 0.35, 0.35) if shape == 0 else
                 [(-0.4, h - 0.3), (0.4, h - 0.3), (0.0, h + 0.4)] if shape == 1 else _rect(-0.45, h - 0.3, 0.45, h + 0.3))
        return [(_rect(-0.05, 0.0, 0.05, h - 0.2), POLE, PART_BODY), (plate, TRAFFIC_SIGN, PART_BODY)]
    if kind == "tree":
        crown = rng.uniform(1.2, 2.6)
        trunk = rng.uniform(2.0, 3.5)
        parts = [(_rect(-0.13, 0.0, 0.13, trunk + crown * 0.3), VEGETATION, PART_SECOND)]
        for _ in range(4):
            cx, cy = rng.normal(0, crown * 0.35), trunk + crown * rng.uniform(0.6, 1.2)
            r = crown * rng.uniform(0.55, 0.8)
            parts.append((_ellipse(cx, cy, r, r * rng.uniform(0.8, 1.1)), VEGETATION, PART_BODY))
        return parts
    # clutter: carts, bins, stalls, animals; unlabelled (ignore) as in the real annotations
    w, hh = rng.uniform(0.4, 1.5), rng.uniform(0.5, 1.8)
    return [(_rect(-w, 0.0, w, hh), IGNORE, PART_BODY)]


def _sample_positions(kind: str, street: Street, rng: np.random.Generator):
    """Lateral position x, depth z and extra flags for one object of ``kind``."""
    rl, rr = street.road_left, street.road_right
    side = -1 if rng.random() < 0.5 else 1
    edge = rl if side < 0 else rr
    facade = -street.facade_left if side < 0 else street.facade_right
    curb = edge + side * 0.4
    if kind in ("car", "truck", "bus", "train", "motorcycle_rider", "bicycle_rider"):
        x = rng.uniform(rl + 1.3, rr - 1.0)
        if kind == "train":
            x = (rl + rr) / 2
        if kind == "bicycle_rider":
            x = edge - side * rng.uniform(0.5, 1.2)
        return x, rng.uniform(6.0, 55.0), x < (rl + rr) / 2  # oncoming in the left lanes
    if kind == "parked_car":
        return edge - side * 1.1, rng.uniform(4.0, 45.0), False
    if kind in ("person", "parked_bicycle", "parked_motorcycle", "clutter"):
        x = edge + side * rng.uniform(0.3, max(0.4, abs(facade - edge) - 0.4))
        if kind == "clutter" and rng.random() < 0.5:
            x = edge - side * rng.uniform(0.2, 1.0)  # debris on the road edge
        return x, rng.uniform(3.0, 40.0), False
    if kind == "crossing_person":
        return rng.uniform(rl, rr), rng.uniform(5.0, 25.0), False
    if kind == "tree":
        return edge + side * rng.uniform(0.8, max(0.9, abs(facade - edge) - 1.0)), rng.uniform(4.0, 60.0), False
    return curb, rng.uniform(3.0, 60.0), False  # pole, traffic light, traffic sign


def _shapes(kind: str, rng, x: float, oncoming: bool, street: Street):
    if kind in ("car", "parked_car"):
        return _vehicle(rng, "car")
    if kind in ("truck", "bus", "train"):
        return _vehicle(rng, kind)
    if kind in ("person", "crossing_person"):
        return _person(rng)
    if kind.endswith("_rider") or kind.startswith("parked_"):
        cls = MOTORCYCLE if "motorcycle" in kind else BICYCLE
        return _two_wheeler(rng, cls, rider=kind.endswith("_rider"), side_view=kind.startswith("parked_"))
    facing = 1.0 if x < (street.road_left + street.road_right) / 2 else -1.0
    return _street_furniture(rng, kind, facing)


def _lights(kind: str, cam: Camera, x: float, z: float, oncoming: bool, parts) -> list[Light]:
    r = cam.f * 0.12 / z
    if kind in ("car", "truck", "bus", "parked_car", "motorcycle_rider"):
        if kind == "parked_car":
            return []
        y = 0.75 if kind in ("car", "parked_car") else 0.9
        spread = 0.0 if kind == "motorcycle_rider" else 0.7
        light = "head" if oncoming else "tail"
        return [Light(*cam.project(np.array(x + dxs), np.array(y), z), r * (1.6 if oncoming else 1.0), light)
                for dxs in ({0.0} if spread == 0 else (-spread, spread))]
    if kind == "pole" and len(parts) > 1:
        tip = parts[1][0][1]
        return [Light(*cam.project(np.array(x + tip[0]), np.array(tip[1] - 0.2), z), r * 2.5, "lamp")]
    if kind == "traffic_light":
        top = max(p[1] for p in parts[1][0])
        colour = "red" if (int(z * 7) % 2) else "green"
        return [Light(*cam.project(np.array(x), np.array(top - 0.3), z), r * 1.3, colour)]
    return []


def place_objects(scene, cam: Camera, street: Street, layout, rng: np.random.Generator) -> None:
    """Sample the layout's objects, then paint them far to near into ``scene`` (in place)."""
    placed = []
    for kind, rate in layout.object_rates.items():
        for _ in range(rng.poisson(rate)):
            x, z, oncoming = _sample_positions(kind, street, rng)
            placed.append((z, x, kind, oncoming, _shapes(kind, rng, x, oncoming, street)))
    placed.sort(key=lambda item: -item[0])
    height, width = scene.label.shape
    mask = np.zeros((height, width), np.uint8)
    anchors = []  # per object instance: (u0, v0, z) for its surface coordinates
    first = len(scene.instance_class)
    for z, x, kind, oncoming, parts in placed:
        if any(cls in layout.excluded for _, cls, _ in parts):
            raise AssertionError(f"object {kind} draws a class excluded from this layout")
        if cam.f * 1.0 / z < 1.5:  # smaller than a pixel or two: skip
            continue
        mask[:] = 0
        scale = np.asarray(ENLARGE.get(kind, (1.0, 1.0)))
        parts = [(np.asarray(poly, float) * scale, cls, part) for poly, cls, part in parts]
        for i, (pts, _, _) in enumerate(parts):
            screen = cam.project(x + pts[:, 0], pts[:, 1], z)
            cv2.fillPoly(mask, [np.round(screen * (1 << _SHIFT)).astype(np.int32)], i + 1, cv2.LINE_8, _SHIFT)
        hit = (mask > 0) & (scene.depth > z)
        if not hit.any():
            continue
        index = mask[hit] - 1
        part_class = [int(p[1]) for p in parts]
        scene.label[hit] = np.array(part_class, np.uint8)[index]
        scene.part[hit] = np.array([p[2] for p in parts], np.uint8)[index]
        # One instance per class of the object, so each is coloured from its own class's palette
        # (a sign's plate is not painted in its pole's grey, nor a rider in the bicycle's colour).
        classes = list(dict.fromkeys(part_class))
        ids = np.array([len(scene.instance_class) + classes.index(c) for c in part_class], np.int32)
        scene.instance[hit] = ids[index]
        scene.instance_class.extend(classes)
        scene.surface[hit] = 5
        scene.depth[hit] = z
        anchors.extend([tuple(cam.project(np.array(x), np.array(0.0), z)) + (z,)] * len(classes))
        scene.lights.extend(_lights(kind, cam, x, z, oncoming, parts))
    if anchors:
        table = np.array(anchors, np.float32)
        objects = scene.instance >= first
        rows, cols = np.nonzero(objects)
        u0, v0, zz = table[scene.instance[objects] - first].T
        scene.s[objects] = (cols + 0.5 - u0) * zz / cam.f
        scene.t[objects] = (v0 - rows - 0.5) * zz / cam.f
