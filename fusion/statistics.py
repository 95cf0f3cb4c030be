"""Per-domain statistics for the statistics-sharing merges, and their files.

RegMean needs one Gram matrix per conv/linear layer from each domain
(``fusion.regmean.regmean_grams``), Fisher merging one diagonal Fisher per
parameter (``fusion.fisher.fisher_information``). Each is a dict keyed by the
parameter's state-dict name, shared between sites as one safetensors file whose
metadata names the kind of statistic, so a Gram file cannot be read as a Fisher.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .state import PARAMETER, StateDict, _names, check_finite, classify

KINDS = ("regmean_gram", "fisher")


def statistic_bytes(statistic: Mapping[str, torch.Tensor]) -> int:
    """Bytes of tensor data in ``statistic`` (what a domain has to share)."""
    return sum(t.numel() * t.element_size() for t in statistic.values())


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown statistic {kind!r}; choose one of {KINDS}")
    return kind


def save_statistic(statistic: Mapping[str, torch.Tensor], path: str | os.PathLike, kind: str,
                   dtype: torch.dtype | None = None) -> int:
    """Write ``statistic`` to one safetensors file; return its tensor bytes.

    ``dtype``: store in this floating dtype (e.g. float32 halves a float64 Gram
    file); default: as given. Refuses NaN/Inf, naming the keys.
    """
    _check_kind(kind)
    check_finite([statistic])
    tensors = {k: (v if dtype is None else v.to(dtype)).detach().cpu().contiguous()
               for k, v in statistic.items()}
    save_file(tensors, str(path), metadata={"statistic": kind})
    return statistic_bytes(tensors)


def load_statistic(path: str | os.PathLike, kind: str) -> dict[str, torch.Tensor]:
    """Read a file written by :func:`save_statistic`, refusing one of another kind."""
    _check_kind(kind)
    path = Path(path)
    with safe_open(str(path), framework="pt") as handle:
        found = (handle.metadata() or {}).get("statistic")
        if found != kind:
            raise ValueError(f"{path} holds statistic {found!r}, not {kind!r}")
        return {k: handle.get_tensor(k) for k in handle.keys()}


def check_statistics(state_dicts: Sequence[StateDict], statistics: Sequence[Mapping[str, torch.Tensor]],
                     what: str) -> list[str]:
    """The keys every domain's statistic covers, after refusing what cannot be merged.

    One statistic per model; all with the same keys; each key a float parameter
    of the models; every value finite. Errors name the model and the keys.
    """
    statistics = list(statistics)
    if len(statistics) != len(state_dicts):
        raise ValueError(f"{len(statistics)} {what} for {len(state_dicts)} models")
    keys = list(statistics[0])
    for index, other in enumerate(statistics[1:], start=1):
        missing = [k for k in keys if k not in other]
        extra = [k for k in other if k not in statistics[0]]
        if missing or extra:
            raise ValueError(f"{what} of model {index} differ in keys from model 0's: "
                             f"missing {_names(missing)}; extra {_names(extra)}")
    reference = state_dicts[0]
    unknown = [k for k in keys if k not in reference or classify(k, reference[k]) != PARAMETER]
    if unknown:
        raise ValueError(f"{what} for keys that are not float parameters of the models: "
                         f"{_names(unknown)}")
    for index, statistic in enumerate(statistics):
        bad = [k for k, t in statistic.items() if not bool(torch.isfinite(t).all())]
        if bad:
            raise ValueError(f"{what} of model {index} hold NaN or Inf in: {_names(bad)}")
    return keys
