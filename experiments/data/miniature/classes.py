"""Cityscapes trainIds under short names (the order of ``experiments.data.labels.CLASS_NAMES``)."""

ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, TRAFFIC_LIGHT, TRAFFIC_SIGN = range(8)
VEGETATION, TERRAIN, SKY, PERSON, RIDER, CAR, TRUCK, BUS, TRAIN = range(8, 17)
MOTORCYCLE, BICYCLE = 17, 18
IGNORE = 255
NUM_CLASSES = 19
