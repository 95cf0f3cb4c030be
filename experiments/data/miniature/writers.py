"""Writing samples in each real dataset's folder layout and label encoding (docs/datasets.md).

Labels are generated as Cityscapes trainIds (255 = ignore) and encoded here the way the real
files are: Cityscapes label ids for GTA and Cityscapes (ignore -> 0 "unlabeled"), SYNTHIA's
class ids in the R channel of a 16-bit PNG (ignore -> 0 "void"), and trainIds as they are for
IDD csTrainIds, ACDC and Dark Zurich labelTrainIds.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from experiments.data import labels as L

ACDC_CONDITIONS = ("fog", "night", "rain", "snow")
_CITIES = {"train": ("aachen", "bochum", "bremen"), "val": ("frankfurt", "lindau", "munster")}
_PER_SEQUENCE = 25  # frames per recording folder (IDD, ACDC, Dark Zurich)


def _inverse(mapping: dict[int, int], ignore: int, size: int = 256) -> np.ndarray:
    """trainId -> raw id table; each trainId must come from exactly one raw id."""
    table = np.full(256, ignore, np.int64)
    for raw, train_id in mapping.items():
        if table[train_id] != ignore:
            raise ValueError(f"trainId {train_id} has two raw ids ({table[train_id]}, {raw})")
        table[train_id] = raw
    if table.max() >= size:
        raise ValueError(f"raw id {table.max()} does not fit {size} values")
    return table


TO_CITYSCAPES_ID = _inverse(L.cityscapes_id_to_train_id(), ignore=0).astype(np.uint8)
TO_GTA_ID = _inverse(L.GTA_ID_TO_TRAIN_ID, ignore=0).astype(np.uint8)
TO_SYNTHIA_ID = _inverse(L.SYNTHIA_ID_TO_TRAIN_ID, ignore=0, size=1 << 16).astype(np.uint16)


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), array):
        raise OSError(f"could not write {path}")


def _rgb(path: Path, image: np.ndarray) -> None:
    _write(path, np.ascontiguousarray(image[:, :, ::-1]))  # OpenCV writes BGR


def _sequence(prefix: str, split: str, index: int) -> str:
    """A recording folder name (e.g. GOPR0356), different for train and val."""
    return f"{prefix}{(0 if split == 'train' else 500) + index // _PER_SEQUENCE:04d}"


def sample_paths(dataset: str, split: str, index: int, condition: str | None = None) -> tuple[str, str]:
    """Image and label file of sample ``index``, relative to the dataset root."""
    if dataset == "gta":
        return f"images/{index + 1:05d}.png", f"labels/{index + 1:05d}.png"
    if dataset == "synthia":
        return f"RGB/{index:07d}.png", f"GT/LABELS/{index:07d}.png"
    if dataset == "cityscapes":
        city = _CITIES[split][index % len(_CITIES[split])]
        stem = f"{city}_000000_{index:06d}"
        return (f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png",
                f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png")  # fmt: skip
    if dataset == "idd":
        seq = str(index // _PER_SEQUENCE + (0 if split == "train" else 200))
        return (f"leftImg8bit/{split}/{seq}/{index:06d}_leftImg8bit.png",
                f"gtFine/{split}/{seq}/{index:06d}_gtFine_labelcsTrainIds.png")  # fmt: skip
    if dataset == "acdc":
        if condition not in ACDC_CONDITIONS:
            raise ValueError(f"acdc: unknown condition {condition!r}")
        seq = _sequence(f"GP{condition[:2].upper()}", split, index)
        stem = f"{seq}_frame_{index:06d}"
        return (f"rgb_anon/{condition}/{split}/{seq}/{stem}_rgb_anon.png",
                f"gt/{condition}/{split}/{seq}/{stem}_gt_labelTrainIds.png")  # fmt: skip
    if dataset == "darkzurich":
        seq = _sequence("GOPR", split, index)
        stem = f"{seq}_frame_{index:06d}"
        return (f"rgb_anon/{split}/night/{seq}/{stem}_rgb_anon.png",
                f"gt/{split}/night/{seq}/{stem}_gt_labelTrainIds.png")  # fmt: skip
    raise ValueError(f"unknown dataset {dataset!r}")


def encode_label(dataset: str, label: np.ndarray) -> np.ndarray:
    """The stored form of a trainId map (uint8 H x W, 255 ignore) in ``dataset``'s encoding."""
    if dataset in ("gta",):
        return TO_GTA_ID[label]
    if dataset == "cityscapes":
        return TO_CITYSCAPES_ID[label]
    if dataset == "synthia":
        ids = TO_SYNTHIA_ID[label]
        if np.isin(label, (9, 14, 16)).any():
            raise ValueError("SYNTHIA has no terrain, truck or train; the label holds one")
        # SYNTHIA stores the class in R and the instance in G of a 16-bit PNG; OpenCV order is BGR.
        return np.stack([np.zeros_like(ids), np.zeros_like(ids), ids], axis=-1)
    return label  # IDD csTrainIds, ACDC / Dark Zurich labelTrainIds are trainIds


def write_sample(root: Path, dataset: str, split: str, index: int, image: np.ndarray, label: np.ndarray,
                 condition: str | None = None) -> None:  # fmt: skip
    """Write one image (uint8 RGB) and its trainId label under ``root`` in ``dataset``'s layout."""
    image_rel, label_rel = sample_paths(dataset, split, index, condition)
    _rgb(root / image_rel, image)
    _write(root / label_rel, encode_label(dataset, label))
