"""Wall time and peak resident memory of one step of a run, measured in-process.

Peak memory is the process's resident-set high-water mark (``VmHWM`` of
``/proc/self/status``) after resetting it (writing 5 to ``/proc/self/clear_refs``,
Linux >= 4.0), minus the resident memory when the step began: the memory the step
itself added at its peak, whatever allocated it (torch's CPU allocator is invisible to
``tracemalloc``). Where the reset is not possible the peak is reported as ``None``
(not measured) rather than a process-wide figure that would include earlier steps.
Freed heap memory is handed back to the system first (glibc ``malloc_trim``), so memory an
earlier step freed but kept resident does not hide what this step allocates.
"""

from __future__ import annotations

import contextlib
import ctypes
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_bytes(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _trim_heap() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to hand back
        pass


def reset_peak() -> bool:
    """Reset the resident-set high-water mark to the current resident set; False if impossible."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


@dataclass
class Measurement:
    seconds: float = 0.0
    peak_bytes: int | None = None   # resident memory added at the step's peak; None: not measured

    def describe(self) -> dict:
        return {"seconds": round(self.seconds, 4), "peak_bytes": self.peak_bytes}


@contextlib.contextmanager
def measured() -> Iterator[Measurement]:
    """``with measured() as m: ...`` fills ``m.seconds`` and ``m.peak_bytes`` on exit."""
    result = Measurement()
    _trim_heap()
    start_rss = _status_bytes("VmRSS")
    can_reset = start_rss is not None and reset_peak()
    started = time.perf_counter()
    try:
        yield result
    finally:
        result.seconds = time.perf_counter() - started
        peak = _status_bytes("VmHWM") if can_reset else None
        result.peak_bytes = None if peak is None or start_rss is None else max(0, peak - start_rss)
