"""Per-image class pixel counts, for rare class sampling.

Rare class sampling (DAFormer, Hoyer et al. CVPR 2022, Sec. 3.5; docs/recipe.md) draws a class with probability rising as its
pixel frequency in the source set falls, then an image that contains it. Both steps need, per
image, how many pixels of each trainId it holds; counting once here saves decoding every label
at the start of each run.

    python -m experiments.dataprep --dataset gta --root data/mini/gta --out data/mini/gta/class_stats.json
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.data.labels import NUM_CLASSES
from experiments.infra.runs import write_json_atomic


def image_class_counts(label: np.ndarray) -> dict[int, int]:
    """Pixels of each trainId 0..18 in ``label`` (ignore pixels and absent classes left out)."""
    counts = np.bincount(label.ravel(), minlength=256)[:NUM_CLASSES]
    return {int(c): int(n) for c, n in enumerate(counts) if n > 0}


def class_statistics(dataset: Sequence, out_path: str | Path) -> list[dict[str, Any]]:
    """Count the pixels of every trainId in every labelled image of ``dataset``; write JSON.

    The file is a list in dataset order of ``{"path": image path, "label_path": label path,
    "counts": {trainId: pixels}}``, written atomically. Only labels are decoded (through the
    dataset's ``read_label``), not images. A dataset without labels is refused.
    """
    read_label = getattr(dataset, "read_label", None)
    records = []
    for index in range(len(dataset)):
        if read_label is not None:
            label = read_label(index)
            path, label_path = dataset.image_paths[index], dataset.label_paths[index]
        else:  # any sequence of sample dicts
            sample = dataset[index]
            label, path, label_path = sample["label"], sample["path"], None
        if label is None:
            raise ValueError(f"class statistics need labels; sample {path} has none")
        record = {"path": str(path), "counts": image_class_counts(label)}
        if label_path is not None:
            record["label_path"] = str(label_path)
        records.append(record)
    write_json_atomic(out_path, records)
    return records


def load_class_statistics(path: str | Path) -> list[dict[str, Any]]:
    """Read a file written by ``class_statistics``; counts come back keyed by integer trainId."""
    path = Path(path)
    try:
        records = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read class statistics {path}: {error}") from error
    if not isinstance(records, list):
        raise ValueError(f"class statistics {path}: expected a list of records, got {type(records).__name__}")
    for number, record in enumerate(records):
        if not isinstance(record, dict) or "path" not in record or "counts" not in record:
            raise ValueError(f"class statistics {path}: record {number} lacks 'path' or 'counts'")
        counts = {int(c): int(n) for c, n in record["counts"].items()}
        bad = [c for c in counts if not 0 <= c < NUM_CLASSES]
        if bad:
            raise ValueError(f"class statistics {path}: record {number} has trainIds {bad} outside 0..18")
        record["counts"] = counts
    return records


def class_frequencies(records: list[dict[str, Any]]) -> np.ndarray:
    """Fraction of all counted pixels that belong to each trainId (length NUM_CLASSES, float64)."""
    totals = np.zeros(NUM_CLASSES, dtype=np.float64)
    for record in records:
        for c, n in record["counts"].items():
            totals[c] += n
    return totals / max(totals.sum(), 1.0)
