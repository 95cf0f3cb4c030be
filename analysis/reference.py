"""The paper's published numbers, read from ``analysis/reference/*.csv`` (their one home).

Li, Gao, Gao, Tian, Zhi, Zhao, *Training-Free Model Merging for Multi-target Domain
Adaptation*, ECCV 2024 (arXiv 2407.13771). The files and their provenance are described in
``analysis/reference/README.md``. Tables show these values only in separate reference
columns, never beside stand-in numbers as if comparable.
"""

from __future__ import annotations

import functools
from pathlib import Path

from analysis.io import read_csv_rows

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
ENCODERS = {"resnet101": "R101", "mit_b5": "MiT-B5"}

# Our method names -> the rows of the paper's Table 1 (paper_table1.csv).
TABLE1_ROWS = {
    "stda_cityscapes": "stda_gta2cityscapes",
    "stda_idd": "stda_gta2idd",
    "data_combination": "data_combination",
    "merged_pooled": "merged",
    "merged_encoder_only": "merged_encoder_only",
}
# Table 4 rows ``bn_*`` are the ResNet-101 numbers, ``ln_*`` the MiT-B5 ones.
TABLE4_ROWS = {"cityscapes": "stda_cityscapes", "idd": "stda_idd", "midpoint": "merged_first_buffers",
               "pooled": "merged_pooled"}
TABLE4_ENCODERS = {"bn": "resnet101", "ln": "mit_b5"}


@functools.lru_cache(maxsize=None)
def rows(name: str) -> tuple[dict[str, str], ...]:
    """The records of ``reference/<name>.csv``."""
    path = REFERENCE_DIR / f"{name}.csv"
    if not path.exists():
        raise FileNotFoundError(f"no reference table {path}; known: "
                                f"{sorted(p.stem for p in REFERENCE_DIR.glob('*.csv'))}")
    return tuple(read_csv_rows(path))


def table1(method: str, encoder: str, metric: str = "harmonic_mean", column: str = "mIoU") -> float | None:
    """The paper's value for one of our Table 1 methods (H by default), or None.

    ``merged_first_buffers`` (midpoint with model 1's buffers) is not a row of Table 1;
    its H is derived from Table 4's text (``paper_table4.csv``).
    """
    row = TABLE1_ROWS.get(method)
    if row is None:
        return table4_merge(method, encoder) if metric == "harmonic_mean" else None
    for record in rows("paper_table1"):
        if (record["method"], record["encoder"], record["metric"]) == (row, encoder, metric):
            return float(record[column])
    return None


def table4_merge(method: str, encoder: str) -> float | None:
    for record in rows("paper_table4"):
        if (record["method"], record["encoder"]) == (method, encoder):
            return float(record["harmonic_mean"])
    return None


def table4(method: str) -> float | None:
    """The paper's H for a Table 4 row ``bn_*`` (ResNet-101) or ``ln_*`` (MiT-B5)."""
    norm, _, rest = method.partition("_")
    encoder, ours = TABLE4_ENCODERS.get(norm), TABLE4_ROWS.get(rest)
    return None if encoder is None or ours is None else table1(ours, encoder)


def table3(subset: str) -> float | None:
    """The paper's H over four targets for a merged subset such as ``"C+I"`` (Table 3)."""
    for record in rows("paper_table3"):
        if record["merged"] == subset:
            return float(record["harmonic_mean"])
    return None


def lmc_curve(name: str, encoder: str = "resnet101") -> list[float]:
    """H along the paper's interpolation curve ``name`` (alpha 0..1), read off its figure (+-1)."""
    found = sorted((float(r["alpha"]), float(r["harmonic_mean"])) for r in rows("paper_lmc")
                   if (r["curve"], r["encoder"]) == (name, encoder))
    if not found:
        raise KeyError(f"paper_lmc.csv has no curve {name!r} for {encoder}")
    return [h for _, h in found]


def columns(kind: str | None, methods) -> dict[str, dict[str, float | None]]:
    """Reference columns of a study table: column title -> method -> the paper's H."""
    if kind == "table1":
        return {f"paper H ({short})": {m: table1(m, encoder) for m in methods}
                for encoder, short in ENCODERS.items()}
    if kind == "table4":
        return {"paper H (R101 for BN, MiT-B5 for LN)": {m: table4(m) for m in methods}}
    if kind == "table3":
        return {"paper H (R101)": {m: table3(m) for m in methods}}
    if kind:
        raise ValueError(f"unknown paper reference {kind!r}: table1 | table3 | table4")
    return {}
