"""The domains of the paper: which loader reads each, which split is scored, where its data lies.

This table is the one home of that knowledge; configs name domains only (``[cityscapes,
idd]``) and give a ``data_root``, under which each dataset lies in its own folder
(``<data_root>/<name>``, the layout of ``experiments.data.datasets``).

Whether data is the miniature stand-in is read from the data itself: the generator
(``experiments.data.miniature``) writes ``<data_root>/manifest.json`` with ``"stand_in":
true`` and the datasets it holds; real datasets have no such file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from analysis.io import read_json

MINIATURE_COMMAND = "python -m experiments.miniature"


@dataclass(frozen=True)
class Domain:
    name: str
    dataset: str                 # loader name in experiments.data.datasets
    eval_split: str = "val"      # the split a domain is scored on (ACDC, Dark Zurich: val, as the paper)
    options: dict[str, Any] = field(default_factory=dict)


DOMAINS = {
    "gta": Domain("gta", "gta", eval_split="all"),
    "synthia": Domain("synthia", "synthia", eval_split="all"),
    "cityscapes": Domain("cityscapes", "cityscapes"),
    "idd": Domain("idd", "idd"),
    "acdc": Domain("acdc", "acdc"),
    "darkzurich": Domain("darkzurich", "darkzurich"),
}


def domain(name: str) -> Domain:
    if name not in DOMAINS:
        raise KeyError(f"unknown domain {name!r}; known: {sorted(DOMAINS)}")
    return DOMAINS[name]


def domain_root(data_root: str | Path, name: str) -> Path:
    return Path(data_root) / name


def load_domain(name: str, data_root: str | Path, split: str | None = None, **options: Any):
    """The loader of domain ``name`` on its scored split (or ``split``) under ``data_root``."""
    from experiments.data.datasets import load

    entry = domain(name)
    root = domain_root(data_root, name)
    if not root.is_dir():
        raise missing_data_error(root)
    return load(entry.dataset, root, split or entry.eval_split, **{**entry.options, **options})


def _scale_of(data_root: Path) -> str | None:
    """The scale config (``configs/scale/<name>.yaml``) that generates ``data_root``, if any."""
    from omegaconf import OmegaConf

    for path in sorted((Path(__file__).resolve().parents[2] / "configs" / "scale").glob("*.yaml")):
        scale = OmegaConf.load(path)
        if scale.get("generate") and Path(str(scale.get("data_root"))) == data_root:
            return path.stem
    return None


def missing_data_error(root: str | Path) -> FileNotFoundError:
    """The error for a dataset folder that does not exist, naming the command that makes one."""
    root = Path(root)
    scale = _scale_of(root.parent)
    command = (f"{MINIATURE_COMMAND} scale={scale}" if scale
               else f"{MINIATURE_COMMAND} scale.data_root={root.parent}")
    return FileNotFoundError(
        f"dataset root {root} not found. Generate the miniature stand-in there with `{command}`, "
        "or put the real dataset there in its published layout (README, section Datasets).")


def miniature_manifest(data_root: str | Path) -> dict | None:
    path = Path(data_root) / "manifest.json"
    return read_json(path, "data manifest") if path.is_file() else None


def is_stand_in(dataset_roots: Iterable[str | Path]) -> bool:
    """True when any of the dataset folders belongs to a generated miniature (its parent's
    ``manifest.json`` says ``stand_in`` and lists the dataset)."""
    for root in dataset_roots:
        root = Path(root)
        manifest = miniature_manifest(root.parent)
        if manifest and manifest.get("stand_in") and root.name in manifest.get("datasets", {}):
            return True
    return False
