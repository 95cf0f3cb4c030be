"""Merging safetensors files tensor by tensor, so K large models never share memory.

A safetensors file is an 8-byte little-endian header length, a JSON header
(``{"name": {"dtype", "shape", "data_offsets": [begin, end]}}``) and the raw
bytes. The merge reads each entry of the K inputs by offset, merges it with the
same engine as ``fusion.merge_linear`` (bit-identical results) and writes it at
its precomputed place in the output, so the process holds about one tensor per
model. Inputs are read with positioned reads rather than a memory map: pages of
a mapping count towards the process's resident memory until unmapped, so
reading a whole mapped model would cost a model's worth of RSS per input.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .batchnorm import check_rule
from .checkpoint import atomic_file
from .linear import merge_entries, plan_merge
from .state import check_compatible, check_weights

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


class SafetensorsReader:
    """Positioned reads of single tensors from one safetensors file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"safetensors file {self.path} does not exist")
        self._file = open(self.path, "rb")
        try:
            (length,) = struct.unpack("<Q", self._file.read(8))
            header = json.loads(self._file.read(length))
            self.metadata = header.pop("__metadata__", None) or {}
            self.entries = {k: (DTYPES[v["dtype"]], tuple(v["shape"]), tuple(v["data_offsets"]))
                            for k, v in header.items()}
        except (struct.error, ValueError, KeyError, TypeError) as error:
            self._file.close()
            raise ValueError(f"cannot read safetensors header of {self.path}: {error!r}") from error
        self._data_start = 8 + length

    def meta_state_dict(self) -> dict[str, torch.Tensor]:
        """Shape-and-dtype stand-ins (no storage) for the compatibility checks."""
        return {k: torch.empty(shape, dtype=dtype, device="meta")
                for k, (dtype, shape, _) in self.entries.items()}

    def get(self, key: str) -> torch.Tensor:
        dtype, shape, (begin, end) = self.entries[key]
        tensor = torch.empty(shape, dtype=dtype)
        if end > begin:
            view = memoryview(tensor.reshape(-1).view(torch.uint8).numpy())
            if os.preadv(self._file.fileno(), [view], self._data_start + begin) != end - begin:
                raise ValueError(f"{self.path} is truncated at tensor {key!r}")
        return tensor

    def close(self) -> None:
        self._file.close()


class SafetensorsWriter:
    """A safetensors file laid out in advance and filled in any order."""

    def __init__(self, handle, layout: Mapping[str, tuple[torch.dtype, tuple[int, ...]]],
                 metadata: Mapping[str, str] | None = None):
        # Widest dtypes first, as safetensors itself does, keeps every tensor aligned.
        order = sorted(layout, key=lambda k: -layout[k][0].itemsize)
        header: dict = {"__metadata__": dict(metadata or {})}
        offset = 0
        self._offsets = {}
        for key in order:
            dtype, shape = layout[key]
            size = dtype.itemsize * int(torch.Size(shape).numel())
            header[key] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape),
                           "data_offsets": [offset, offset + size]}
            self._offsets[key] = (offset, size)
            offset += size
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # data starts 8-byte aligned
        self._handle = handle
        self._data_start = 8 + len(text)
        handle.write(struct.pack("<Q", len(text)) + text)
        handle.truncate(self._data_start + offset)
        self._written: set[str] = set()

    def write(self, key: str, tensor: torch.Tensor) -> None:
        offset, size = self._offsets[key]
        if size:
            data = memoryview(tensor.contiguous().reshape(-1).view(torch.uint8).numpy())
            os.pwrite(self._handle.fileno(), data, self._data_start + offset)
        self._written.add(key)

    def missing(self) -> list[str]:
        return [k for k in self._offsets if k not in self._written]


def merge_safetensors_files(paths: Sequence[str | os.PathLike],
                            weights: Sequence[float] | None = None, buffers: str = "pooled", *,
                            out_path: str | os.PathLike,
                            metadata: Mapping[str, str] | None = None) -> Path:
    """``fusion.merge_linear`` of K safetensors files, written to ``out_path`` atomically.

    Equal, tensor for tensor, to merging the loaded files in memory; peak memory
    is about one tensor per model instead of K models.
    """
    readers = [SafetensorsReader(p) for p in paths]
    try:
        try:
            keys = check_compatible([r.meta_state_dict() for r in readers])
        except ValueError as error:
            raise ValueError(f"{error} (model i is file {[str(r.path) for r in readers]}[i])") from None
        weights = check_weights(weights, len(readers))
        check_rule(buffers)
        layout = {k: readers[0].entries[k][:2] for k in keys}
        units = plan_merge(keys, {k: v[0] for k, v in layout.items()})
        out_path = Path(out_path)
        with atomic_file(out_path) as tmp, open(tmp, "r+b") as handle:
            writer = SafetensorsWriter(handle, layout, {"format": "pt", **dict(metadata or {})})
            merge_entries(units, lambda i, k: readers[i].get(k), len(readers), weights, buffers,
                          writer.write)
            if writer.missing():  # pragma: no cover - the plan covers every key
                raise AssertionError(f"keys not written: {writer.missing()}")
            handle.flush()
    finally:
        for reader in readers:
            reader.close()
    return out_path
