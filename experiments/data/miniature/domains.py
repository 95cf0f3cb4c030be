"""The miniature's domains: a layout and a style each, chosen to mimic how the real datasets differ.

- gta: rendered game frames; eye-level camera, saturated flat-shaded colours, hard sun.
- synthia: rendered, higher camera looking down on crowds, pastel random colours; no
  terrain, truck or train (SYNTHIA-RAND-CITYSCAPES lacks them).
- cityscapes: German streets, photographic textures, muted overcast colours, ego bonnet.
- idd: Indian roads: unpaved terrain edges, few sidewalks, many two-wheelers and people,
  clutter, warm dusty haze and other photo textures.
- acdc_<condition>: Swiss streets under fog, night, rain or snow.
- darkzurich: Zurich at night: dark, noisy, lit by lamps, headlights and windows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Callable

from experiments.data.miniature import effects as E
from experiments.data.miniature import scenes as S
from experiments.data.miniature.classes import (
    BICYCLE, BUILDING, BUS, CAR, FENCE, MOTORCYCLE, PERSON, POLE, RIDER, ROAD, SIDEWALK, TERRAIN,
    TRAFFIC_LIGHT, TRAFFIC_SIGN, TRAIN, TRUCK, VEGETATION, WALL,
)
from experiments.data.miniature.styles import Style


@dataclass(frozen=True)
class Domain:
    layout: S.Layout
    style: Style
    effect: Callable | None = None  # applied to the float image: f(image, scene, rng)
    jpeg: int = 0


_URBAN = dict(car=2.5, parked_car=3.0, truck=0.3, bus=0.25, train=0.08, person=2.5, crossing_person=0.3,
              bicycle_rider=0.4, motorcycle_rider=0.2, parked_bicycle=0.5, parked_motorcycle=0.2, pole=4.0,
              traffic_light=1.0, traffic_sign=1.5, tree=2.0, clutter=0.2)  # fmt: skip
_FACADES = {BUILDING: 6.0, VEGETATION: 2.0, WALL: 1.0, FENCE: 1.0}

GTA_LAYOUT = S.Layout(
    horizon=(0.42, 0.52), camera_height=(1.4, 1.9), road_width=(8, 14), sidewalk_prob=0.85,
    sidewalk_width=(2, 4), verge_prob=0.25, verge_width=(0.5, 2), edge_wobble=0.0, setback=(0, 3),
    setback_class=TERRAIN, facade_weights=_FACADES, building_height=(8, 30),
    object_rates={**_URBAN, "car": 3.5, "truck": 0.5, "train": 0.03, "tree": 2.5},
)  # fmt: skip
SYNTHIA_LAYOUT = S.Layout(
    horizon=(0.18, 0.32), camera_height=(3.5, 7.0), road_width=(8, 16), sidewalk_prob=1.0,
    sidewalk_width=(3, 6), verge_prob=0.0, verge_width=(0, 0), edge_wobble=0.0, setback=(0, 2),
    setback_class=SIDEWALK, facade_weights=_FACADES, building_height=(10, 35),
    object_rates={**_URBAN, "truck": 0.0, "train": 0.0, "person": 6.0, "crossing_person": 2.0,
                  "bicycle_rider": 0.8, "motorcycle_rider": 0.5, "clutter": 0.0},
    excluded=frozenset({TERRAIN, TRUCK, TRAIN}),
)  # fmt: skip
CITYSCAPES_LAYOUT = replace(GTA_LAYOUT, horizon=(0.38, 0.46), camera_height=(1.2, 1.5), road_width=(7, 11),
                            sidewalk_prob=0.95, verge_prob=0.15, ego_hood_prob=0.8,
                            object_rates={**_URBAN, "parked_car": 4.0, "parked_bicycle": 1.0})  # fmt: skip
IDD_LAYOUT = S.Layout(
    horizon=(0.36, 0.46), camera_height=(1.2, 1.6), road_width=(6, 10), sidewalk_prob=0.25,
    sidewalk_width=(1, 2.5), verge_prob=0.9, verge_width=(1.5, 5), edge_wobble=0.6, setback=(0, 4),
    setback_class=TERRAIN, facade_weights={BUILDING: 4.0, VEGETATION: 4.0, WALL: 2.0, FENCE: 0.5},
    building_height=(4, 14),
    object_rates={**_URBAN, "car": 1.5, "parked_car": 0.8, "truck": 0.8, "bus": 0.5, "train": 0.0,
                  "person": 4.0, "crossing_person": 1.0, "bicycle_rider": 0.8, "motorcycle_rider": 3.0,
                  "parked_motorcycle": 1.5, "pole": 3.0, "traffic_light": 0.2, "traffic_sign": 0.5,
                  "tree": 3.0, "clutter": 2.5},
    ego_hood_prob=0.3,
)  # fmt: skip
ZURICH_LAYOUT = replace(CITYSCAPES_LAYOUT, horizon=(0.36, 0.46), road_width=(6, 10), ego_hood_prob=0.0,
                        object_rates={**_URBAN, "train": 0.2, "bicycle_rider": 0.3, "person": 1.5})  # fmt: skip

_SHADE_SUN = {S.SURF_GROUND: 1.0, S.SURF_LEFT: 1.15, S.SURF_RIGHT: 0.55, S.SURF_BACK: 0.8, S.SURF_OBJECT: 0.9}
_SHADE_OVERCAST = {S.SURF_GROUND: 1.0, S.SURF_LEFT: 0.9, S.SURF_RIGHT: 0.8, S.SURF_BACK: 0.85, S.SURF_OBJECT: 0.9}
_CAR_COLOURS = [(200, 20, 20), (20, 60, 200), (240, 240, 240), (30, 30, 30), (240, 200, 20), (20, 150, 60)]

# A game's surfaces carry photo-derived textures too: their luminance grain modulates the flat
# colours (texture_mode "detail"), while the targets blend in the photos' own colours.
_GAME_TEXTURES = {ROAD: ["gravel"], SIDEWALK: ["brick"], BUILDING: ["brick", "page"], VEGETATION: ["grass"],
                  TERRAIN: ["grass"]}  # fmt: skip
GTA_STYLE = Style(
    palette={ROAD: [(70, 70, 75)], SIDEWALK: [(175, 160, 140)], BUILDING: [(200, 120, 80), (220, 200, 150), (120, 140, 170)],
             WALL: [(190, 170, 130)], FENCE: [(120, 90, 60)], POLE: [(90, 90, 90)], TRAFFIC_LIGHT: [(40, 40, 20)],
             TRAFFIC_SIGN: [(230, 40, 30), (30, 80, 220)], VEGETATION: [(40, 150, 30), (70, 170, 40)],
             TERRAIN: [(150, 170, 60)], PERSON: [(200, 50, 50), (40, 60, 160), (220, 200, 40)],
             RIDER: [(230, 120, 20)], CAR: _CAR_COLOURS, TRUCK: [(220, 220, 220), (200, 80, 20)],
             BUS: [(230, 180, 20)], TRAIN: [(200, 200, 210)], MOTORCYCLE: [(180, 20, 20)], BICYCLE: [(20, 120, 200)]},
    colour_jitter=0.12, textures=_GAME_TEXTURES, default_texture="noise8", texture_mode="detail",
    texture_strength=0.8, texture_scale=6.0, shade=_SHADE_SUN, sky=((40, 110, 230), (170, 210, 250)),
    sky_photo="china",
    haze=(180, 200, 230), visibility=400.0, glass=(30, 40, 60), window=(60, 90, 140), lane_mark=(240, 240, 240),
    saturation=1.15, gain=1.05,
)  # fmt: skip
SYNTHIA_STYLE = replace(
    GTA_STYLE,
    palette={**GTA_STYLE.palette, ROAD: [(110, 100, 110)], SIDEWALK: [(150, 200, 190)],
             BUILDING: [(230, 170, 200), (170, 200, 230), (220, 220, 170), (200, 160, 120)],
             VEGETATION: [(90, 180, 110)], PERSON: [(250, 120, 180), (120, 250, 200), (250, 240, 120), (150, 130, 250)],
             CAR: [(250, 150, 150), (150, 150, 250), (150, 230, 150), (240, 240, 240)]},
    colour_jitter=0.25, textures={}, default_texture="noise32", texture_strength=0.3, sky_photo=None,
    shade={k: 1.0 for k in _SHADE_SUN}, sky=((200, 230, 245), (240, 245, 250)),
    haze=(230, 235, 240), visibility=250.0, saturation=1.1, gain=1.0,
)  # fmt: skip

_PHOTO_TEXTURES = {ROAD: ["gravel"], SIDEWALK: ["brick", "coins"], BUILDING: ["brick", "camera", "rocket", "page"],
                   WALL: ["brick", "gravel"], FENCE: ["page"], VEGETATION: ["grass", "flower"], TERRAIN: ["grass"],
                   CAR: ["coffee", "chelsea"], TRUCK: ["rocket"], BUS: ["rocket"], PERSON: ["astronaut"],
                   RIDER: ["astronaut"], POLE: ["moon"]}  # fmt: skip
CITYSCAPES_STYLE = Style(
    palette={ROAD: [(95, 92, 98)], SIDEWALK: [(140, 132, 128)], BUILDING: [(150, 140, 125), (120, 115, 110), (170, 160, 140)],
             WALL: [(140, 130, 115)], FENCE: [(110, 105, 95)], POLE: [(120, 120, 115)], TRAFFIC_LIGHT: [(50, 50, 45)],
             TRAFFIC_SIGN: [(170, 160, 60), (60, 80, 150)], VEGETATION: [(85, 110, 55), (70, 95, 60)],
             TERRAIN: [(125, 130, 85)], PERSON: [(60, 60, 70), (110, 90, 80), (40, 50, 80)], RIDER: [(70, 70, 80)],
             CAR: [(100, 105, 115), (40, 45, 55), (160, 160, 165), (110, 40, 40)], TRUCK: [(150, 150, 150)],
             BUS: [(200, 190, 170)], TRAIN: [(140, 150, 160)], MOTORCYCLE: [(60, 60, 70)], BICYCLE: [(50, 50, 50)]},
    colour_jitter=0.08, textures=_PHOTO_TEXTURES, default_texture="gravel", texture_mode="photo",
    texture_strength=0.7, texture_scale=32.0, shade=_SHADE_OVERCAST, sky=((185, 195, 205), (215, 220, 225)),
    sky_photo="china", haze=(190, 195, 200), visibility=180.0, glass=(35, 40, 45), window=(70, 75, 85),
    lane_mark=(200, 200, 195), saturation=0.8, gamma=1.1, noise=0.012, blur=0.5,
)  # fmt: skip
IDD_STYLE = replace(
    CITYSCAPES_STYLE,
    palette={**CITYSCAPES_STYLE.palette, ROAD: [(105, 100, 92)], TERRAIN: [(150, 120, 85), (135, 115, 90)],
             BUILDING: [(190, 150, 110), (170, 170, 160), (200, 120, 90), (120, 160, 170)],
             WALL: [(180, 160, 130)], VEGETATION: [(90, 110, 50)],
             PERSON: [(180, 60, 60), (220, 180, 60), (240, 240, 230), (60, 90, 160)], RIDER: [(150, 120, 90)],
             CAR: [(230, 230, 230), (180, 40, 30), (100, 110, 130)], TRUCK: [(200, 130, 40), (60, 120, 180)],
             BUS: [(200, 60, 40), (80, 150, 200)], MOTORCYCLE: [(30, 30, 30), (150, 20, 20)]},
    textures={**_PHOTO_TEXTURES, ROAD: ["gravel", "moon"], TERRAIN: ["gravel", "moon", "coffee"],
              BUILDING: ["coffee", "chelsea", "brick", "hubble"], VEGETATION: ["grass", "chelsea"]},
    sky=((200, 200, 190), (225, 215, 190)), sky_photo=None, haze=(215, 200, 170), visibility=150.0,
    saturation=0.95, tint=(1.06, 1.0, 0.9), noise=0.02, blur=0.6,
)  # fmt: skip
ZURICH_STYLE = replace(
    CITYSCAPES_STYLE,
    palette={**CITYSCAPES_STYLE.palette, BUILDING: [(200, 190, 170), (180, 170, 160), (150, 120, 110)],
             TRAIN: [(40, 120, 200)], ROAD: [(80, 80, 85)]},
    textures={**_PHOTO_TEXTURES, BUILDING: ["brick", "motorcycle", "coffee"], ROAD: ["gravel", "camera"]},
    sky_photo="flower", saturation=0.9, gamma=1.0,
)  # fmt: skip
NIGHT_STYLE = replace(ZURICH_STYLE, noise=0.0, blur=0.4, sky_photo=None)

DOMAINS: dict[str, Domain] = {
    "gta": Domain(GTA_LAYOUT, GTA_STYLE),
    "synthia": Domain(SYNTHIA_LAYOUT, SYNTHIA_STYLE),
    "cityscapes": Domain(CITYSCAPES_LAYOUT, CITYSCAPES_STYLE, jpeg=90),
    "idd": Domain(IDD_LAYOUT, IDD_STYLE, jpeg=80),
    "acdc_fog": Domain(ZURICH_LAYOUT, ZURICH_STYLE, E.fog, jpeg=90),
    "acdc_night": Domain(ZURICH_LAYOUT, NIGHT_STYLE, partial(E.night, ambient=0.3, noise=0.03), jpeg=90),
    "acdc_rain": Domain(ZURICH_LAYOUT, ZURICH_STYLE, E.rain, jpeg=90),
    "acdc_snow": Domain(ZURICH_LAYOUT, ZURICH_STYLE, E.snow, jpeg=90),
    "darkzurich": Domain(ZURICH_LAYOUT, NIGHT_STYLE, E.night, jpeg=85),
}
