"""The torch thread count of a run, in one place.

CPU reductions split differently with the thread count, so results (pretraining above all)
are bit-reproducible only for a fixed count: every stage sets the count its config asks
for, clamped to the machine's cores.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch


def usable_threads(wanted: int | str) -> int:
    """``wanted`` clamped to [1, number of cores]."""
    return max(1, min(int(wanted), os.cpu_count() or 1))


@contextlib.contextmanager
def torch_threads(wanted: int | str | None) -> Iterator[None]:
    """Run the block with ``usable_threads(wanted)`` torch threads (unchanged when ``wanted``
    is empty), then restore the caller's count."""
    before = torch.get_num_threads()
    if wanted:
        torch.set_num_threads(usable_threads(wanted))
    try:
        yield
    finally:
        torch.set_num_threads(before)
