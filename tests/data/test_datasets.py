"""Loaders on fixture trees written in each dataset's published layout and label encoding."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from cityscapesscripts.helpers.labels import labels as cs_labels
from PIL import Image

from experiments import dataprep
from experiments.data import class_stats, datasets
from experiments.data import labels as L

# Every value a label encoding may hold, tiled to 16 x 16 (other values are refused).
LABEL_IDS = np.resize(np.array([*range(34), 255], np.uint8), (16, 16))
GTA_IDS = np.resize(np.array([*range(35), 255], np.uint8), (16, 16))
TRAIN_IDS = np.resize(np.array([*range(19), 255], np.uint8), (16, 16))


def official_train_id(raw: int) -> int:
    """trainId of a Cityscapes label id straight from cityscapesscripts (255 when ignored)."""
    for label in cs_labels:
        if label.id == raw and 0 <= label.trainId < 19:
            return label.trainId
    return 255


def write_image(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))


def write_label(path: Path, ids: np.ndarray, palette: bool = False) -> None:
    """Single-channel 8-bit label; ``palette`` writes a P-mode PNG like GTA5's files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(ids.astype(np.uint8), mode="L")
    if palette:
        image = image.convert("P")
        image.putpalette([v for i in range(256) for v in ((i * 7) % 256, (i * 13) % 256, (i * 29) % 256)])
        image.putdata(list(ids.astype(np.uint8).ravel()))
    image.save(path)


def rgb(seed: int, shape=(16, 16)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def expected_from(table: dict[int, int], raw: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda v: table.get(int(v), 255), otypes=[np.uint8])(raw)


# ----------------------------------------------------------------------------- label tables


def test_class_names_and_things_follow_cityscapes_train_ids():
    assert len(L.CLASS_NAMES) == 19
    for label in cs_labels:
        if 0 <= label.trainId < 19:
            assert L.CLASS_NAMES[label.trainId] == label.name
    things = {L.CLASS_NAMES[c] for c in L.THING_CLASSES}
    instances = {label.name for label in cs_labels if label.hasInstances and 0 <= label.trainId < 19}
    assert things == instances | {"traffic light", "traffic sign"}


def test_tables_agree_with_cityscapesscripts():
    official = np.array([official_train_id(v) for v in range(256)], dtype=np.uint8)
    np.testing.assert_array_equal(L.CITYSCAPES_LUT, official)
    # GTA5 uses the Cityscapes ids: the explicit map of docs/datasets.md must be the same table.
    np.testing.assert_array_equal(L.GTA_LUT, official)
    assert L.CITYSCAPES_LUT[255] == 255  # licence plate (-1) wraps to 255 in a uint8 file


def test_synthia_subsets():
    assert set(range(19)) - set(L.SYNTHIA16) == {9, 14, 16}
    assert set(L.SYNTHIA16) - set(L.SYNTHIA13) == {3, 4, 5}
    assert len(L.SYNTHIA_LUT) == 65536 and set(np.unique(L.SYNTHIA_LUT)) == set(L.SYNTHIA16) | {255}


# ----------------------------------------------------------------------------- loaders


def test_cityscapes_maps_label_ids_and_pairs_by_name(tmp_path):
    root = tmp_path / "cityscapes"
    for n, city in enumerate(["bochum", "aachen"]):
        stem = f"{city}_000000_00001{n}"
        write_image(root / "leftImg8bit/val" / city / f"{stem}_leftImg8bit.png", rgb(n))
        write_label(root / "gtFine/val" / city / f"{stem}_gtFine_labelIds.png", np.roll(LABEL_IDS, n))
        # a conflicting labelTrainIds file must lose against labelIds
        write_label(root / "gtFine/val" / city / f"{stem}_gtFine_labelTrainIds.png", np.zeros((16, 16)))
    data = datasets.load("cityscapes", root, "val")
    assert len(data) == 2 and [Path(p).parts[-2] for p in data.image_paths] == ["aachen", "bochum"]
    for item in data:
        n = 0 if "aachen" not in item["path"] else 1
        np.testing.assert_array_equal(item["image"], rgb(n))  # RGB order survives cv2
        raw = np.roll(LABEL_IDS, n)
        np.testing.assert_array_equal(item["label"], np.vectorize(official_train_id)(raw).astype(np.uint8))
        assert item["label"].dtype == np.uint8
        assert set(item["label"][raw <= 6]) == {255} and set(item["label"][raw == 26].tolist()) == {13}


def test_cityscapes_falls_back_to_label_train_ids(tmp_path):
    root = tmp_path / "cs"
    write_image(root / "leftImg8bit/train/ulm/ulm_000000_000001_leftImg8bit.png", rgb(0))
    write_label(root / "gtFine/train/ulm/ulm_000000_000001_gtFine_labelTrainIds.png", TRAIN_IDS)
    label = datasets.load("cityscapes", root, "train")[0]["label"]
    np.testing.assert_array_equal(label, TRAIN_IDS)


def test_gta_palette_labels_and_converted_files_ignored(tmp_path):
    root = tmp_path / "gta"
    for n in (2, 1):
        write_image(root / f"images/0000{n}.png", rgb(n))
        write_label(root / f"labels/0000{n}.png", np.roll(GTA_IDS, n), palette=True)
        write_label(root / f"labels/0000{n}_labelTrainIds.png", np.zeros((16, 16)))
    data = datasets.load("gta", root, "all")
    assert [Path(p).name for p in data.image_paths] == ["00001.png", "00002.png"]
    table = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
             25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip
    for n, item in zip((1, 2), data):
        raw = np.roll(GTA_IDS, n)
        np.testing.assert_array_equal(item["label"], expected_from(table, raw))
        assert set(item["label"][raw == 34].tolist()) == {255} and set(item["label"][raw == 33].tolist()) == {18}
    assert len(datasets.load("gta", root, "train")) == 2


def synthia_tree(root: Path) -> np.ndarray:
    """One 16-bit 3-channel label: class in the file's R channel, instance ids in G."""
    classes = np.resize(np.arange(23, dtype=np.uint16), (16, 16))
    classes[0, :4] = (0, 13, 14, 22)  # void, parking slot, road work, lane marking: no class -> 255
    instance = np.full((16, 16), 7, np.uint16)  # 7 is SYNTHIA's pole: wrong channel would show
    bgr = np.stack([np.zeros_like(classes), instance, classes], axis=-1)
    (root / "GT/LABELS").mkdir(parents=True)
    assert cv2.imwrite(str(root / "GT/LABELS/0000000.png"), bgr)
    write_image(root / "RGB/0000000.png", rgb(3))
    return classes


@pytest.mark.parametrize("num_classes, keep", [(19, L.SYNTHIA16), (16, L.SYNTHIA16), (13, L.SYNTHIA13)])
def test_synthia_16bit_labels_and_subsets(tmp_path, num_classes, keep):
    classes = synthia_tree(tmp_path)
    label = datasets.load("synthia", tmp_path, "all", num_classes=num_classes)[0]["label"]
    table = {k: v for k, v in L.SYNTHIA_ID_TO_TRAIN_ID.items() if v in keep}
    np.testing.assert_array_equal(label, expected_from(table, classes))
    assert label[0, 0] == label[0, 1] == label[0, 2] == label[0, 3] == 255
    assert set(label[classes == 21].tolist()) == {(3 if num_classes != 13 else 255)}  # wall
    assert set(label[classes == 11].tolist()) == {18}  # bicycle


def test_synthia_single_channel_16bit(tmp_path):
    (tmp_path / "GT/LABELS").mkdir(parents=True)
    classes = np.full((16, 16), 8, np.uint16)
    classes[3, 3] = 22
    assert cv2.imwrite(str(tmp_path / "GT/LABELS/a.png"), classes)
    write_image(tmp_path / "RGB/a.png", rgb(0))
    label = datasets.load("synthia", tmp_path, "all")[0]["label"]
    assert label[0, 0] == 13 and label[3, 3] == 255
    classes[3, 3] = 4000  # no SYNTHIA class: the file is refused, not read as ignore
    assert cv2.imwrite(str(tmp_path / "GT/LABELS/a.png"), classes)
    with pytest.raises(ValueError, match=r"GT/LABELS/a.png: label values 4000 are not SYNTHIA class ids \(0\.\.22\)"):
        datasets.load("synthia", tmp_path, "all")[0]


def test_idd_cs_train_ids_png_and_jpg(tmp_path):
    root = tmp_path / "idd"
    write_image(root / "leftImg8bit/val/0/000001_leftImg8bit.png", rgb(0))
    write_image(root / "leftImg8bit/val/1/000002_leftImg8bit.jpg", rgb(1))
    for seq, frame in (("0", "000001"), ("1", "000002")):
        write_label(root / f"gtFine/val/{seq}/{frame}_gtFine_labelcsTrainIds.png", TRAIN_IDS)
        write_label(root / f"gtFine/val/{seq}/{frame}_gtFine_polygons_unused.png", TRAIN_IDS)
    data = datasets.load("idd", root, "val")
    assert [Path(p).suffix for p in data.image_paths] == [".png", ".jpg"]
    for item in data:
        assert item["image"].shape == (16, 16, 3) and item["image"].dtype == np.uint8
        np.testing.assert_array_equal(item["label"], TRAIN_IDS)


def acdc_tree(root: Path, conditions=("fog", "snow")) -> None:
    for n, cond in enumerate(conditions):
        seq = f"GOPR000{n}"
        write_image(root / f"rgb_anon/{cond}/val/{seq}/{seq}_frame_000001_rgb_anon.png", rgb(n))
        write_label(root / f"gt/{cond}/val/{seq}/{seq}_frame_000001_gt_labelTrainIds.png", np.roll(TRAIN_IDS, n))


def test_acdc_conditions(tmp_path):
    acdc_tree(tmp_path, ACDC := ("fog", "night", "rain", "snow"))
    assert len(datasets.load("acdc", tmp_path, "val")) == 4
    assert len(datasets.load("acdc", tmp_path, "val", condition=["fog", "rain"])) == 2
    item = datasets.load("acdc", tmp_path, "val", condition="night")[0]
    assert "/night/" in item["path"]
    raw = np.roll(TRAIN_IDS, ACDC.index("night"))
    np.testing.assert_array_equal(item["label"], raw)
    with pytest.raises(ValueError, match="fig.*valid: fog, night, rain, snow"):
        datasets.load("acdc", tmp_path, "val", condition="fig")


def test_darkzurich_train_without_gt_and_val_with_gt(tmp_path):
    for split in ("train", "val"):
        write_image(tmp_path / f"rgb_anon/{split}/night/GOPR0356/GOPR0356_frame_000001_rgb_anon.png", rgb(0))
    write_label(tmp_path / "gt/val/night/GOPR0356/GOPR0356_frame_000001_gt_labelTrainIds.png", TRAIN_IDS)
    train = datasets.load("darkzurich", tmp_path, "train")
    assert train[0]["label"] is None and train.label_paths == [None]
    np.testing.assert_array_equal(datasets.load("darkzurich", tmp_path, "val")[0]["label"], TRAIN_IDS)
    write_label(tmp_path / "gt/train/night/GOPR0356/GOPR0356_frame_000001_gt_labelTrainIds.png", TRAIN_IDS)
    assert datasets.load("darkzurich", tmp_path, "train")[0]["label"] is not None
    assert datasets.load("darkzurich", tmp_path, "train", with_labels=False)[-1]["label"] is None


def test_classes_option_masks_other_train_ids(tmp_path):
    acdc_tree(tmp_path, ("fog",))
    label = datasets.load("acdc", tmp_path, "val", condition="fog", classes=[0, 13])[0]["label"]
    np.testing.assert_array_equal(label, np.where(np.isin(TRAIN_IDS, [0, 13]), TRAIN_IDS, 255))


# ----------------------------------------------------------------------------- errors


def test_unknown_name_split_and_option():
    with pytest.raises(ValueError, match="valid names: gta, synthia, cityscapes, idd, acdc, darkzurich"):
        datasets.load("kitti", ".", "train")


def test_missing_root_and_wrong_layout(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing)) + ".*expected layout:\n<root>/\n  leftImg8bit"):
        datasets.load("cityscapes", missing, "train")
    (tmp_path / "cs/leftImg8bit/train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "cs/leftImg8bit/val")) + "(.|\n)*gtFine/val"):
        datasets.load("cityscapes", tmp_path / "cs", "val")
    empty = re.escape(str(tmp_path / "cs/leftImg8bit/train"))
    with pytest.raises(FileNotFoundError, match=r"no images \(\*_leftImg8bit.png\) below " + empty):
        datasets.load("cityscapes", tmp_path / "cs", "train")
    acdc_tree(tmp_path / "acdc", ("fog",))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "acdc/rgb_anon/rain/val"))):
        datasets.load("acdc", tmp_path / "acdc", "val", condition="rain")
    write_image(tmp_path / "gta/images/1.png", rgb(0))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "gta/labels"))):
        datasets.load("gta", tmp_path / "gta", "all")
    with pytest.raises(ValueError, match="unknown split 'val'"):
        datasets.load("gta", tmp_path / "gta", "val")
    with pytest.raises(ValueError, match="num_classes must be 19, 16 or 13"):
        datasets.load("synthia", tmp_path, "all", num_classes=17)
    with pytest.raises(TypeError, match="condition"):
        datasets.load("gta", tmp_path / "gta", "all", condition="fog")


def test_unmatched_images_and_labels_are_listed(tmp_path):
    for n in (1, 2, 3):
        write_image(tmp_path / f"images/{n:05d}.png", rgb(n))
    for n in (1, 2, 4):
        write_label(tmp_path / f"labels/{n:05d}.png", GTA_IDS)
    listed = r"3 images(.|\n)*without a matching label: 00003.png(.|\n)*without a matching image: 00004.png"
    with pytest.raises(ValueError, match=listed):
        datasets.load("gta", tmp_path, "all")


def test_unreadable_files_are_named(tmp_path):
    write_image(tmp_path / "images/00001.png", rgb(0))
    write_label(tmp_path / "labels/00001.png", GTA_IDS)
    good = (tmp_path / "images/00001.png").read_bytes()
    (tmp_path / "images/00001.png").write_bytes(good[: len(good) // 3])  # truncated
    data = datasets.load("gta", tmp_path, "all")
    with pytest.raises(ValueError, match="cannot read image .*00001.png"):
        data[0]
    (tmp_path / "images/00001.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="cannot read image .*00001.png"):
        data[0]
    (tmp_path / "images/00001.png").write_bytes(good)
    (tmp_path / "labels/00001.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "labels/00001.png"))):
        data[0]
    write_image(tmp_path / "labels/00001.png", rgb(1))  # a colour image is no id map
    with pytest.raises(ValueError, match="labels/00001.png has PIL mode RGB"):
        data[0]


def test_size_mismatch_names_both_files(tmp_path):
    write_image(tmp_path / "RGB/0000001.png", rgb(0, (16, 20)))
    (tmp_path / "GT/LABELS").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "GT/LABELS/0000001.png"), np.zeros((16, 16), np.uint16))
    with pytest.raises(ValueError, match=r"image .*RGB/0000001.png is 20x16 but label .*GT/LABELS/0000001.png is 16x16"):
        datasets.load("synthia", tmp_path, "all")[0]


@pytest.mark.parametrize("name, values", [("cityscapes", "labelIds"), ("idd", "csTrainIds"), ("acdc", "trainIds")])
def test_label_values_outside_the_encoding_are_refused_naming_the_file(tmp_path, name, values):
    bad = TRAIN_IDS.copy()
    bad[0, 0] = 40 if values == "labelIds" else 33  # 33 is a label id, not a trainId
    if name == "cityscapes":
        stem = "ulm_000000_000001"
        write_image(tmp_path / f"leftImg8bit/val/ulm/{stem}_leftImg8bit.png", rgb(0))
        write_label(tmp_path / f"gtFine/val/ulm/{stem}_gtFine_labelIds.png", bad)
        expected = r"gtFine_labelIds.png: label values 40 are not Cityscapes label ids \(0\.\.33, 255\)"
    elif name == "idd":
        write_image(tmp_path / "leftImg8bit/val/0/000001_leftImg8bit.png", rgb(0))
        write_label(tmp_path / "gtFine/val/0/000001_gtFine_labelcsTrainIds.png", bad)
        expected = r"labelcsTrainIds.png: label values 33 are not Cityscapes trainIds"
    else:
        write_image(tmp_path / "rgb_anon/fog/val/GOPR0/GOPR0_frame_000001_rgb_anon.png", rgb(0))
        write_label(tmp_path / "gt/fog/val/GOPR0/GOPR0_frame_000001_gt_labelTrainIds.png", bad)
        expected = r"gt_labelTrainIds.png: label values 33 are not Cityscapes trainIds \(0\.\.18, 255\)"
    with pytest.raises(ValueError, match=expected):
        datasets.load(name, tmp_path, "val", **({"condition": "fog"} if name == "acdc" else {}))[0]


def test_16bit_values_in_an_8bit_dataset_are_refused(tmp_path):
    write_image(tmp_path / "images/a.png", rgb(0))
    (tmp_path / "labels").mkdir()
    cv2.imwrite(str(tmp_path / "labels/a.png"), np.full((16, 16), 700, np.uint16))
    with pytest.raises(ValueError, match="labels/a.png: holds value 700"):
        datasets.load("gta", tmp_path, "all")[0]


# ----------------------------------------------------------------------------- class statistics


def test_class_statistics_equal_bincount(tmp_path):
    rng = np.random.default_rng(0)
    raws = [rng.choice([7, 8, 26, 33, 34, 0], size=(16, 16)) for _ in range(3)]  # 34: an id GTA5 tolerates
    for n, raw in enumerate(raws):
        write_image(tmp_path / f"gta/images/{n}.png", rgb(n))
        write_label(tmp_path / f"gta/labels/{n}.png", raw, palette=True)
    data = datasets.load("gta", tmp_path / "gta", "all")
    out = tmp_path / "stats/gta.json"
    records = class_stats.class_statistics(data, out)
    loaded = class_stats.load_class_statistics(out)
    assert loaded == records and [r["path"] for r in loaded] == [str(p) for p in data.image_paths]
    for record, item in zip(loaded, data):
        counts = np.bincount(item["label"].ravel(), minlength=256)
        assert record["counts"] == {c: int(counts[c]) for c in range(19) if counts[c]}
    assert sorted(loaded[0]["counts"]) == [0, 1, 13, 18]
    assert not list(out.parent.glob(".*.tmp"))  # atomic write left nothing behind
    dataprep.main(["--dataset", "gta", "--root", str(tmp_path / "gta"), "--out", str(tmp_path / "cli.json")])
    assert json.loads((tmp_path / "cli.json").read_text()) == json.loads(out.read_text())
    with pytest.raises(ValueError, match="has none"):
        class_stats.class_statistics(datasets.load("gta", tmp_path / "gta", "all", with_labels=False), tmp_path / "x.json")
