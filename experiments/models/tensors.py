"""Small constant tensors made once per device.

Building a constant with ``torch.tensor(values, device="cuda")`` copies it from
pageable host memory, which waits for every kernel queued before it: inside a
loop that stalls the pipeline once per batch. Constants are therefore made once
per (values, device, dtype) and reused; callers must not modify them.
"""

from __future__ import annotations

import functools

import torch

# ImageNet channel statistics on the 0..255 scale (mmseg's data preprocessor).
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


@functools.lru_cache(maxsize=64)
def _cached(values: tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype).to(device)


def device_constant(values, device: torch.device | str, dtype: torch.dtype = torch.float32
                    ) -> torch.Tensor:
    """``torch.tensor(values, dtype=dtype, device=device)``, made once and shared (read-only)."""
    values = tuple(tuple(v) if isinstance(v, (list, tuple)) else v for v in values)
    return _cached(values, torch.device(device), dtype)
