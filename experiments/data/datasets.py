"""Loaders for the six datasets of the paper, in their published folder layouts.

``load(name, root, split)`` finds every image and its label file by the dataset's own file
naming rule (never by sorted position), refuses a tree that does not match the layout (the
error shows the expected tree), and decodes samples on access: ``{"image": uint8 HxWx3 RGB,
"label": uint8 HxW Cityscapes trainIds with 255 = ignore, or None, "path": image file}``.

Label encodings (docs/datasets.md): Cityscapes labelIds and GTA ids go through the official
Cityscapes id table; SYNTHIA's 16-bit class ids through SYNTHIA's table; IDD csTrainIds and
ACDC / Dark Zurich labelTrainIds are trainIds already (values outside 0..18 become 255).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
from PIL import Image

from experiments.data import labels as L

DATASETS = ("gta", "synthia", "cityscapes", "idd", "acdc", "darkzurich")
ACDC_CONDITIONS = ("fog", "night", "rain", "snow")
SYNTHIA_SUBSETS = {19: tuple(range(L.NUM_CLASSES)), 16: L.SYNTHIA16, 13: L.SYNTHIA13}

LAYOUTS = {
    "gta": "<root>/\n  images/00001.png ...\n  labels/00001.png ...   (Cityscapes label ids)",
    "synthia": "<root>/\n  RGB/0000000.png ...\n  GT/LABELS/0000000.png ...   (16-bit class ids)",
    "cityscapes": (
        "<root>/\n  leftImg8bit/{split}/<city>/<city>_<seq>_<frame>_leftImg8bit.png\n"
        "  gtFine/{split}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png"
        "   (or _gtFine_labelTrainIds.png)"
    ),
    "idd": (
        "<root>/\n  leftImg8bit/{split}/<seq>/<frame>_leftImg8bit.png (or .jpg)\n"
        "  gtFine/{split}/<seq>/<frame>_gtFine_labelcsTrainIds.png"
        "   (made by the IDD toolkit: createLabels.py --id-type csTrainId)"
    ),
    "acdc": (
        "<root>/\n  rgb_anon/<condition>/{split}/<seq>/<seq>_frame_<n>_rgb_anon.png\n"
        "  gt/<condition>/{split}/<seq>/<seq>_frame_<n>_gt_labelTrainIds.png"
        "   (condition: fog, night, rain, snow)"
    ),
    "darkzurich": (
        "<root>/\n  rgb_anon/{split}/night/<seq>/<seq>_frame_<n>_rgb_anon.png\n"
        "  gt/{split}/night/<seq>/<seq>_frame_<n>_gt_labelTrainIds.png   (val only)"
    ),
}
_SHOWN = 5  # unmatched files listed in an error
# DAFormer's converters write <stem>_labelTrainIds.png next to GTA's and SYNTHIA's raw labels:
# derived files, not samples.
_CONVERTED = ("_labelTrainIds.png",)


def _layout_error(name: str, split: str, problem: str) -> FileNotFoundError:
    tree = LAYOUTS[name].replace("{split}", split)
    return FileNotFoundError(f"{name}: {problem}; expected layout:\n{tree}")


def _collect(folder: Path, suffixes: tuple[str, ...], exclude: tuple[str, ...] = ()) -> dict:
    """Files below ``folder`` ending in one of ``suffixes``, keyed by relative path minus suffix."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        name = path.name
        suffix = next((s for s in suffixes if name.endswith(s)), None)
        if suffix is None or name.endswith(exclude) or not path.is_file():
            continue
        key = path.relative_to(folder).as_posix()[: -len(suffix)]
        if key in found:
            raise ValueError(f"two files for one sample: {found[key]} and {path}")
        found[key] = path
    return found


def _pair(name: str, images: dict, labels: dict, image_dir: Path, label_dir: Path) -> list:
    """Keys present on both sides; any image without a label (or label without image) is an error."""
    lonely_images = sorted(set(images) - set(labels))
    lonely_labels = sorted(set(labels) - set(images))
    if lonely_images or lonely_labels:
        lines = [f"{name}: {len(images)} images in {image_dir} but {len(labels)} labels in {label_dir}"]
        for side, keys, files in (("label", lonely_images, images), ("image", lonely_labels, labels)):
            if keys:
                shown = ", ".join(files[k].name for k in keys[:_SHOWN])
                more = f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
                lines.append(f"  {len(keys)} without a matching {side}: {shown}{more}")
        lines.append("expected layout:\n" + LAYOUTS[name])
        raise ValueError("\n".join(lines))
    return sorted(images)


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to uint8 H x W x 3 RGB; an unreadable file is named in the error."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read image {path} (missing, truncated or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label_ids(path: str | Path) -> np.ndarray:
    """Raw ids of an 8-bit label PNG.

    Read with PIL, not OpenCV: GTA5's label files are palette PNGs whose pixel values are the
    palette indices (= label ids); OpenCV would expand them to the palette colours.
    """
    try:
        with Image.open(path) as handle:
            handle.load()
            mode = handle.mode
            ids = np.array(handle)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read label {path}: {error}") from error
    if mode not in ("L", "P", "I;16", "I;16B", "I;16L"):
        raise ValueError(f"label {path} has PIL mode {mode}; expected single-channel ids (L or P)")
    return ids


def read_synthia_ids(path: str | Path) -> np.ndarray:
    """Class ids of a SYNTHIA 16-bit label PNG.

    SYNTHIA's README stores the class in the file's first channel (R) and the instance id in the
    second. OpenCV returns channels as B, G, R, so the class is channel 2 (the last one of a
    3-channel file, which is what DAFormer's converter takes). A single-channel file is the id.
    """
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"cannot read label {path} (missing, truncated or not an image)")
    if raw.ndim == 3:
        if raw.shape[2] < 3:
            raise ValueError(f"label {path} has {raw.shape[2]} channels; expected 1, 3 or 4")
        raw = raw[:, :, 2]
    return np.ascontiguousarray(raw)


class SegmentationDataset(Sequence):
    """Paired image / label files of one dataset split, decoded on access."""

    def __init__(
        self,
        name: str,
        root: Path,
        split: str,
        image_paths: list[Path],
        label_paths: list[Path | None],
        label_tables: list[L.Encoding | None],
        read_ids: Callable[[Path], np.ndarray] = read_label_ids,
    ) -> None:
        self.name, self.root, self.split = name, root, split
        self.image_paths, self.label_paths = image_paths, label_paths
        self.label_tables, self.read_ids = label_tables, read_ids

    def __len__(self) -> int:
        return len(self.image_paths)

    def read_label(self, index: int) -> np.ndarray | None:
        """The trainId label of sample ``index`` (None when the split has no labels)."""
        path, encoding = self.label_paths[index], self.label_tables[index]
        if path is None:
            return None
        return L.apply_table(encoding.table, self.read_ids(path), source=str(path), encoding=encoding)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"{self.name}: index must be an integer, got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.name}: index {index} out of range for {len(self)} samples")
        index = int(index) % len(self)
        image = read_image(self.image_paths[index])
        label = self.read_label(index)
        if label is not None and label.shape != image.shape[:2]:
            raise ValueError(
                f"size mismatch: image {self.image_paths[index]} is {image.shape[1]}x"
                f"{image.shape[0]} but label {self.label_paths[index]} is "
                f"{label.shape[1]}x{label.shape[0]} (width x height)"
            )
        return {"image": image, "label": label, "path": str(self.image_paths[index])}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        labelled = sum(p is not None for p in self.label_paths)
        return (
            f"SegmentationDataset({self.name!r}, split={self.split!r}, n={len(self)}, "
            f"labelled={labelled}, root='{self.root}')"
        )


def _subfolder(name: str, root: Path, split: str, *parts: str) -> Path:
    folder = root.joinpath(*parts)
    if not folder.is_dir():
        raise _layout_error(name, split, f"folder {folder} not found")
    return folder


def _tree(
    name: str,
    root: Path,
    split: str,
    image_parts: tuple[str, ...],
    image_suffixes: tuple[str, ...],
    label_parts: tuple[str, ...],
    label_tables: dict[str, L.Encoding],
    with_labels: bool,
    labels_optional: bool = False,
) -> tuple[list, list, list]:
    """Image files below ``image_parts`` paired with label files below ``label_parts``.

    A sample's key is its path relative to the folder minus the dataset's suffix, so
    ``aachen/aachen_000000_000019_leftImg8bit.png`` pairs with
    ``aachen/aachen_000000_000019_gtFine_labelIds.png``. ``label_tables`` maps each accepted
    label suffix to its id table, in order of preference. Returns image paths, label paths and
    per-sample tables.
    """
    images_at = _subfolder(name, root, split, *image_parts)
    images = _collect(images_at, image_suffixes, exclude=_CONVERTED)
    if not images:
        wanted = " or ".join(f"*{s}" for s in image_suffixes)
        raise _layout_error(name, split, f"no images ({wanted}) below {images_at}")
    labels_at = root.joinpath(*label_parts)
    if not with_labels or (labels_optional and not labels_at.is_dir()):
        keys = sorted(images)
        return [images[k] for k in keys], [None] * len(keys), [None] * len(keys)
    labels_at = _subfolder(name, root, split, *label_parts)
    labels: dict[str, Path] = {}
    tables: dict[str, np.ndarray] = {}
    for suffix, table in reversed(label_tables.items()):  # preferred suffix written last
        exclude = _CONVERTED if suffix == ".png" else ()
        for key, path in _collect(labels_at, (suffix,), exclude=exclude).items():
            labels[key], tables[key] = path, table
    keys = _pair(name, images, labels, images_at, labels_at)
    return [images[k] for k in keys], [labels[k] for k in keys], [tables[k] for k in keys]


def _flat(name: str, root: Path, split: str, with_labels: bool) -> SegmentationDataset:
    """GTA and SYNTHIA: one folder of images and one of labels, paired by file stem."""
    if split not in ("all", "train"):
        raise ValueError(f"{name}: unknown split {split!r}; the whole set is split 'all' (or 'train')")
    if name == "gta":
        tables = {".png": L.GTA_IDS}
        found = _tree(name, root, split, ("images",), (".png",), ("labels",), tables, with_labels)
        return SegmentationDataset(name, root, split, *found)
    tables = {".png": L.SYNTHIA_IDS}
    found = _tree(name, root, split, ("RGB",), (".png",), ("GT", "LABELS"), tables, with_labels)
    return SegmentationDataset(name, root, split, *found, read_ids=read_synthia_ids)


def _acdc(root: Path, split: str, condition: str | Iterable[str] | None, with_labels: bool):
    if condition is None:
        conditions: tuple[str, ...] = ACDC_CONDITIONS
    else:
        conditions = (condition,) if isinstance(condition, str) else tuple(condition)
    unknown = [c for c in conditions if c not in ACDC_CONDITIONS]
    if unknown or not conditions:
        raise ValueError(f"acdc: unknown condition(s) {unknown}; valid: {', '.join(ACDC_CONDITIONS)}")
    paths: tuple[list, list, list] = ([], [], [])
    for cond in conditions:
        found = _tree("acdc", root, split, ("rgb_anon", cond, split), ("_rgb_anon.png",),
                      ("gt", cond, split), {"_gt_labelTrainIds.png": L.TRAIN_IDS}, with_labels)  # fmt: skip
        for collected, part in zip(paths, found):
            collected.extend(part)
    return SegmentationDataset("acdc", root, split, *paths)


def load(name: str, root: str | Path, split: str, *, with_labels: bool = True,
         classes: Iterable[int] | None = None, **kw: Any) -> SegmentationDataset:  # fmt: skip
    """Open split ``split`` of dataset ``name`` stored at ``root`` in its published layout.

    ``with_labels=False`` skips the label files (unlabelled target data for self-training).
    ``classes`` keeps only those trainIds (others become 255). ``acdc`` takes ``condition``
    (fog, night, rain, snow, a list of them, or None for all four); ``synthia`` takes
    ``num_classes`` 19, 16 or 13 (its evaluation subsets, docs/datasets.md).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    root = Path(root)
    if not root.is_dir():
        raise _layout_error(name, split, f"dataset root {root} not found")
    allowed = {"acdc": {"condition"}, "synthia": {"num_classes"}}.get(name, set())
    if set(kw) - allowed:
        unexpected = sorted(set(kw) - allowed)
        raise TypeError(f"{name}: unexpected option(s) {unexpected}; accepted: {sorted(allowed)}")
    num_classes = kw.get("num_classes", L.NUM_CLASSES)
    if num_classes not in SYNTHIA_SUBSETS:
        raise ValueError(f"synthia: num_classes must be 19, 16 or 13, got {num_classes!r}")
    if name in ("gta", "synthia"):
        dataset = _flat(name, root, split, with_labels)
    elif name == "cityscapes":
        # Prefer labelIds through the official table; take labelTrainIds where only those exist.
        tables = {"_gtFine_labelIds.png": L.CITYSCAPES_IDS, "_gtFine_labelTrainIds.png": L.TRAIN_IDS}
        found = _tree(name, root, split, ("leftImg8bit", split), ("_leftImg8bit.png",),
                      ("gtFine", split), tables, with_labels)  # fmt: skip
        dataset = SegmentationDataset(name, root, split, *found)
    elif name == "idd":
        found = _tree(name, root, split, ("leftImg8bit", split), ("_leftImg8bit.png", "_leftImg8bit.jpg"),
                      ("gtFine", split), {"_gtFine_labelcsTrainIds.png": L.TRAIN_IDS}, with_labels)  # fmt: skip
        dataset = SegmentationDataset(name, root, split, *found)
    elif name == "acdc":
        dataset = _acdc(root, split, kw.get("condition"), with_labels)
    else:  # darkzurich: the published train split has no ground truth, so labels are optional
        found = _tree(name, root, split, ("rgb_anon", split, "night"), ("_rgb_anon.png",),
                      ("gt", split, "night"), {"_gt_labelTrainIds.png": L.TRAIN_IDS}, with_labels,
                      labels_optional=True)  # fmt: skip
        dataset = SegmentationDataset(name, root, split, *found)
    keep = set(SYNTHIA_SUBSETS[num_classes])
    if classes is not None:
        keep &= {int(c) for c in classes}
    if len(keep) < L.NUM_CLASSES:
        # Compose the tables once: subset[table[raw]] == (subset[table])[raw].
        table = L.subset_table(sorted(keep))
        dataset.label_tables = [None if t is None else t.subset(table) for t in dataset.label_tables]
    return dataset
