"""What the miniature says about itself: the stand-in note, class statistics, README, preview."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

from experiments.data.labels import CLASS_NAMES, PALETTE
from experiments.infra.runs import atomic_path, write_text_atomic

NOTE = ("Procedurally generated stand-in for the paper's datasets (GTA, SYNTHIA, Cityscapes, IDD, "
        "ACDC, Dark Zurich), written in their folder layouts and label encodings. It is NOT the "
        "real data; results on it are not comparable with the paper's numbers.")


def class_frequencies(counts: np.ndarray) -> dict:
    """Fraction of labelled pixels per class name, and the ignored fraction of all pixels."""
    labelled = counts[: len(CLASS_NAMES)].sum()
    total = counts.sum()
    return {
        "class_pixel_frequency": {name: round(float(counts[i] / max(labelled, 1)), 6)
                                  for i, name in enumerate(CLASS_NAMES)},
        "ignore_fraction": round(float(counts[255] / max(total, 1)), 6),
    }  # fmt: skip


def tree_digest(root: Path) -> str:
    """sha256 over the sorted relative paths and bytes of every file below ``root``."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def write_readme(out: Path, manifest: dict) -> None:
    datasets = manifest.get("datasets", {})
    lines = ["# Miniature benchmark (generated stand-in)", "", NOTE, "",
             f"Generator version {manifest.get('generator_version')}. Regenerate with "
             "`python -m experiments.miniature scale=<scale>` (sizes and counts: `configs/scale/<scale>.yaml`, "
             "`generate:`; add `force=true` to replace).", "",
             "Real Dark Zurich has no labels for its train split; the miniature writes "
             "`gt/train/night/...` as well so an oracle can be trained on it. ACDC's train/val "
             "sizes are shared among its four conditions (fog, night, rain, snow).", "",
             "| dataset | seed | size (WxH) | samples | ignore | " + " | ".join(CLASS_NAMES) + " |",
             "|" + "---|" * (5 + len(CLASS_NAMES))]  # fmt: skip
    for name, entry in sorted(datasets.items()):
        p = entry["params"]
        freq = entry["class_pixel_frequency"]
        samples = ", ".join(f"{k} {v}" for k, v in entry["samples"].items())
        lines.append(f"| {name} | {p['seed']} | {p['size'][0]}x{p['size'][1]} | {samples} | "
                     f"{entry['ignore_fraction']:.3f} | " + " | ".join(f"{freq[c]:.3f}" for c in CLASS_NAMES) + " |")
    lines += ["", "Class columns: fraction of labelled pixels. See manifest.json for the same in machine form."]
    write_text_atomic(out / "README.md", "\n".join(lines) + "\n")


def colourise(label: np.ndarray) -> np.ndarray:
    """Label map in the Cityscapes colours (ignore black)."""
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(PALETTE)] = PALETTE
    return palette[label]


def write_preview(path: Path, samples: list) -> None:
    """Contact sheet: one row per domain, images then their colourised labels."""
    rows: dict[str, list] = {}
    for domain, _, image, label in samples:
        rows.setdefault(domain, []).append((image, colourise(label)))
    height = max(image.shape[0] for _, _, image, _ in samples)
    sheet_rows = []
    for domain, pairs in sorted(rows.items()):
        tiles = [p[0] for p in pairs] + [p[1] for p in pairs]
        row = np.hstack([cv2.resize(t, (t.shape[1] * height // t.shape[0], height), interpolation=cv2.INTER_NEAREST)
                         for t in tiles])  # fmt: skip
        caption = np.full((height, 90, 3), 255, np.uint8)
        cv2.putText(caption, domain, (3, height // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
        sheet_rows.append(np.hstack([caption, row]))
    width = max(r.shape[1] for r in sheet_rows)
    sheet = np.vstack([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in sheet_rows])
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp.with_suffix(".png")), sheet[:, :, ::-1]):
            raise OSError(f"could not write {path}")
        tmp.with_suffix(".png").replace(tmp)
