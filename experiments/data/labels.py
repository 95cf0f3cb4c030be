"""The 19 Cityscapes training classes and the tables that map each dataset's label ids to them.

Every dataset of the paper is evaluated in the Cityscapes trainId space (0..18, 255 = ignore).
The tables here are 256-entry (65536 for SYNTHIA's 16-bit labels) ``uint8`` look-up tables, so
mapping a label image is one indexing operation: ``lut[raw]``. Ids without a training class map
to 255.
"""

from __future__ import annotations

from dataclasses import dataclass

from typing import Iterable, Mapping

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CITYSCAPES_LABELS

NUM_CLASSES = 19
IGNORE_INDEX = 255

# Cityscapes trainId order, names as cityscapesscripts spells them.
CLASS_NAMES: tuple[str, ...] = tuple(
    next(label.name for label in _CITYSCAPES_LABELS if label.trainId == train_id)
    for train_id in range(NUM_CLASSES)
)
# RGB colours of the official palette, row = trainId (for figures).
PALETTE: np.ndarray = np.array(
    [
        next(label.color for label in _CITYSCAPES_LABELS if label.trainId == train_id)
        for train_id in range(NUM_CLASSES)
    ],
    dtype=np.uint8,
)
# Countable objects: Cityscapes' eight instance classes plus traffic light and traffic sign,
# which are small, bounded objects although Cityscapes gives them no instance ids. The other
# nine classes are "stuff".
THING_CLASSES: tuple[int, ...] = (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)

# SYNTHIA has no terrain (9), truck (14) or train (16): SYNTHIA -> X results are reported on the
# 16 remaining classes, and on 13 when wall (3), fence (4) and pole (5) are also dropped.
SYNTHIA16: tuple[int, ...] = tuple(c for c in range(NUM_CLASSES) if c not in (9, 14, 16))
SYNTHIA13: tuple[int, ...] = tuple(c for c in SYNTHIA16 if c not in (3, 4, 5))

# GTA5 labels use the Cityscapes label ids; only the 19 evaluated ones are kept.
GTA_ID_TO_TRAIN_ID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip

# SYNTHIA-RAND-CITYSCAPES class ids (its README) -> Cityscapes trainIds. Its lane marking (22),
# parking slot (13), road work (14) and void (0) have no training class.
SYNTHIA_ID_TO_TRAIN_ID: dict[int, int] = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 10,
    10: 11, 17: 12, 8: 13, 19: 15, 12: 17, 11: 18,
}  # fmt: skip


def lookup_table(mapping: Mapping[int, int], size: int = 256) -> np.ndarray:
    """Build a ``uint8`` table of ``size`` entries: ``mapping[raw]`` where given, else 255."""
    table = np.full(size, IGNORE_INDEX, dtype=np.uint8)
    for raw, train_id in mapping.items():
        if not 0 <= raw < size:
            raise ValueError(f"raw id {raw} does not fit a table of {size} entries")
        if not 0 <= train_id < NUM_CLASSES:
            raise ValueError(f"raw id {raw} maps to {train_id}, not a trainId in 0..18")
        table[raw] = train_id
    table.flags.writeable = False
    return table


def cityscapes_id_to_train_id() -> dict[int, int]:
    """The official labelId -> trainId pairs from ``cityscapesscripts``.

    Labels the benchmark ignores carry trainId 255 or -1 there (licence plate has id -1 as
    well, so it never appears in a label image); both are left out here and so map to 255.
    """
    return {
        label.id: label.trainId
        for label in _CITYSCAPES_LABELS
        if 0 <= label.id < 256 and 0 <= label.trainId < NUM_CLASSES
    }


def subset_table(train_ids: Iterable[int]) -> np.ndarray:
    """A trainId -> trainId table that keeps ``train_ids`` and sets every other value to 255."""
    return lookup_table({int(c): int(c) for c in train_ids})


CITYSCAPES_LUT = lookup_table(cityscapes_id_to_train_id())
GTA_LUT = lookup_table(GTA_ID_TO_TRAIN_ID)
SYNTHIA_LUT = lookup_table(SYNTHIA_ID_TO_TRAIN_ID, size=1 << 16)
# Files that already hold trainIds (Cityscapes labelTrainIds, IDD csTrainIds, ACDC and Dark
# Zurich labelTrainIds): 0..18 stay, anything else (255, or stray values) becomes 255.
TRAIN_ID_LUT = subset_table(range(NUM_CLASSES))


def _ranges(values: np.ndarray) -> str:
    """'0..33, 255' for a boolean value table."""
    found = np.flatnonzero(values)
    runs, start = [], found[0]
    for previous, current in zip(found, [*found[1:], None]):
        if current is None or current != previous + 1:
            runs.append(f"{start}..{previous}" if previous > start else f"{start}")
            start = current
    return ", ".join(runs)


def value_set(values: Iterable[int], size: int = 256) -> np.ndarray:
    """A read-only boolean table of the raw values an encoding may hold."""
    mask = np.zeros(size, dtype=bool)
    mask[list(values)] = True
    mask.flags.writeable = False
    return mask


# The raw values each label encoding may hold; anything else is refused with the file named.
# Cityscapes label ids are 0..33; licence plate's -1 wraps to 255 in a uint8 file. GTA5 uses the
# same ids; 34 is allowed there too (and ignored, as DAFormer's converter ignores every id
# outside its table) so that no real GTA5 file is refused for a value the converters tolerate.
LABEL_ID_VALUES = value_set([*range(34), 255])
GTA_ID_VALUES = value_set([*range(35), 255])
TRAIN_ID_VALUES = value_set([*range(NUM_CLASSES), IGNORE_INDEX])
SYNTHIA_ID_VALUES = value_set(range(23), size=1 << 16)   # SYNTHIA's README: classes 0 (void) .. 22


@dataclass(frozen=True)
class Encoding:
    """How one kind of label file maps to trainIds: its table, the values it may hold, a name."""

    table: np.ndarray
    values: np.ndarray
    name: str

    def subset(self, keep: np.ndarray) -> "Encoding":
        """The same encoding with trainIds outside ``keep`` (a trainId -> trainId table) ignored."""
        return Encoding(keep[self.table], self.values, self.name)


def apply_table(table: np.ndarray, raw: np.ndarray, source: str = "label",
                encoding: "Encoding | None" = None) -> np.ndarray:
    """Map a single-channel integer label image through ``table``; ``source`` names it in errors.

    With ``encoding``, values the encoding does not define (a labelTrainIds file holding 40,
    a labelIds file holding 200) are refused, naming the file and the values.
    """
    if raw.ndim != 2:
        raise ValueError(f"{source}: expected a single-channel label image, got shape {raw.shape}")
    if raw.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{source}: expected uint8 or uint16 label values, got {raw.dtype}")
    if raw.dtype == np.uint16 and len(table) < (1 << 16):
        high = int(raw.max(initial=0))
        if high >= len(table):
            raise ValueError(
                f"{source}: holds value {high}, beyond the {len(table)}-entry id table "
                "(16-bit file where 8-bit ids were expected?)"
            )
    if encoding is not None:
        defined = encoding.values[np.minimum(raw, len(encoding.values) - 1)] & (raw < len(encoding.values))
        if not defined.all():
            bad = np.unique(raw[~defined])
            shown = ", ".join(str(int(v)) for v in bad[:10]) + (" ..." if len(bad) > 10 else "")
            raise ValueError(f"{source}: label values {shown} are not {encoding.name} "
                             f"({_ranges(encoding.values)}); is this the right label file for this dataset?")
    return table[raw]


CITYSCAPES_IDS = Encoding(CITYSCAPES_LUT, LABEL_ID_VALUES, "Cityscapes label ids")
GTA_IDS = Encoding(GTA_LUT, GTA_ID_VALUES, "GTA5 label ids (the Cityscapes ids)")
SYNTHIA_IDS = Encoding(SYNTHIA_LUT, SYNTHIA_ID_VALUES, "SYNTHIA class ids")
TRAIN_IDS = Encoding(TRAIN_ID_LUT, TRAIN_ID_VALUES, "Cityscapes trainIds")
