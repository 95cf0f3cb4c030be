"""Optional compiled kernel for the weighted sum behind every merge.

Accumulating in float64 with torch operations costs one pass per step
(convert, multiply, add, convert back), so the merge runs at about a third of
the memory-copy bound (``benchmarks/merge.py``). ``_weighted_sum.c`` does the
same arithmetic in one pass: each input read once, the output written once,
the float64 accumulator kept in the L1 cache. It is compiled on first use with
the system C compiler (``$CC``, else ``cc``/``gcc``/``clang``) into a cache
folder and loaded with ctypes; no build step or extra package is needed.

Where there is no compiler, the build fails, ``MTDA_NATIVE=0`` is set, or the
tensors are not float32/float64 on the CPU, the merge uses torch operations
instead: the same contract (float64 accumulation in the order k = 0..K-1,
rounded once to the input dtype). On CPUs with FMA both paths use a fused
multiply-add for k >= 1, so they agree bit for bit in the tests; a compiler or
CPU without FMA may differ from torch in the last bit of rare elements.

Environment: ``MTDA_NATIVE=0`` turns the kernel off; ``MTDA_NATIVE_CACHE``
sets the cache folder (default ``$XDG_CACHE_HOME/mtda-merge/native``, else
``~/.cache/mtda-merge/native``). The library's name holds a hash of the source,
compiler, flags and machine, so a shared home on a mixed cluster keeps one
build per kind of node.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("_weighted_sum.c")
_FUNCTIONS = {torch.float32: "mtda_weighted_sum_f32", torch.float64: "mtda_weighted_sum_f64"}
_BASE_FLAGS = ["-O3", "-shared", "-fPIC", "-ffp-contract=off", "-fno-math-errno"]


class NativeUnavailable(RuntimeError):
    """The kernel cannot be built or loaded here; the message says why."""


def enabled() -> bool:
    return os.environ.get("MTDA_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    if os.environ.get("MTDA_NATIVE_CACHE"):
        return Path(os.environ["MTDA_NATIVE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mtda-merge" / "native"


def find_compiler() -> str:
    """``$CC`` if set, else the first of cc, gcc, clang on PATH."""
    chosen = os.environ.get("CC", "").strip()
    if chosen:
        if not shutil.which(chosen.split()[0]):
            raise NativeUnavailable(f"CC={chosen!r} is not an executable on PATH")
        return chosen
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return name
    raise NativeUnavailable("no C compiler found (set CC, or install cc, gcc or clang)")


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def compile_flags() -> list[str]:
    """Vector and FMA instructions only where this CPU reports them (no -march=native,
    whose build could crash on an older node sharing the cache)."""
    flags = list(_BASE_FLAGS)
    if platform.machine() in ("x86_64", "AMD64") and {"avx2", "fma"} <= _cpu_flags():
        flags += ["-mavx2", "-mfma"]
    return flags


def library_path(compiler: str, flags: Sequence[str]) -> Path:
    try:
        version = subprocess.run([*compiler.split(), "--version"], capture_output=True,
                                 text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as error:
        raise NativeUnavailable(f"C compiler {compiler!r} does not run: {error}") from error
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), compiler.encode(), version.encode(),
                 " ".join(flags).encode(), platform.machine().encode()):
        digest.update(part)
        digest.update(b"\0")
    return cache_dir() / f"weighted_sum-{digest.hexdigest()[:16]}.so"


def build() -> Path:
    """Compile the kernel into the cache unless it is already there; return its path.

    The library is written to a temporary name and renamed, so processes
    building at once never load a half-written file.
    """
    compiler = find_compiler()
    flags = compile_flags()
    target = library_path(compiler, flags)
    if target.exists():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp",
                                             dir=target.parent)
        os.close(handle)
    except OSError as error:
        raise NativeUnavailable(f"cache folder {target.parent} is not writable: {error}") from error
    try:
        result = subprocess.run([*compiler.split(), *flags, str(SOURCE), "-o", temporary],
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise NativeUnavailable(f"{compiler} failed on {SOURCE.name}: "
                                    f"{(result.stderr or result.stdout).strip()[:500]}")
        os.replace(temporary, target)
    except (OSError, subprocess.SubprocessError) as error:
        raise NativeUnavailable(f"building {SOURCE.name} with {compiler!r} failed: {error}") from error
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return target


class Kernel:
    """The loaded library: one ctypes function per supported dtype."""

    def __init__(self, path: Path):
        library = ctypes.CDLL(str(path))
        self.path = path
        self.functions = {}
        for dtype, name in _FUNCTIONS.items():
            function = getattr(library, name)
            function.restype = ctypes.c_int
            function.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                 ctypes.c_void_p, ctypes.c_int64]
            self.functions[dtype] = function

    def weighted_sum(self, tensors: Sequence[torch.Tensor], weights: Sequence[float],
                     out: torch.Tensor) -> bool | None:
        """Write ``sum_k w_k t_k`` into ``out``; return True if it holds NaN/Inf.

        Returns None, touching nothing, when the kernel does not apply (dtype,
        device, layout); the caller then uses torch operations.
        """
        function = self.functions.get(out.dtype)
        size = out.element_size()
        if function is None or out.device.type != "cpu" or not out.is_contiguous() \
                or out.data_ptr() % size:
            return None
        for tensor in tensors:
            if tensor.dtype != out.dtype or tensor.device.type != "cpu" \
                    or not tensor.is_contiguous() or tensor.numel() != out.numel() \
                    or tensor.data_ptr() % size:
                return None
        pointers = (ctypes.c_void_p * len(tensors))(*[t.data_ptr() for t in tensors])
        factors = (ctypes.c_double * len(weights))(*[float(w) for w in weights])
        return bool(function(pointers, factors, len(tensors), out.data_ptr(), out.numel()))


_lock = threading.Lock()
_state: dict[str, object] = {}


def kernel() -> Kernel | None:
    """The kernel, built and loaded once per process; None (with one warning) if unavailable."""
    if not enabled():
        return None
    with _lock:
        if "kernel" not in _state:
            try:
                _state["kernel"] = Kernel(build())
            except (NativeUnavailable, OSError, AttributeError) as error:
                _state["kernel"] = None
                _state["reason"] = str(error)
                warnings.warn(f"fusion: compiled merge kernel unavailable ({error}); "
                              f"merging with torch operations (slower, same result)",
                              RuntimeWarning, stacklevel=3)
        return _state["kernel"]  # type: ignore[return-value]


def describe() -> str:
    """Which engine merges run on, for logs and benchmark output."""
    if not enabled():
        return "torch operations (MTDA_NATIVE=0)"
    loaded = kernel()
    if loaded is None:
        return f"torch operations ({_state.get('reason')})"
    return f"compiled kernel ({loaded.path})"


def reset() -> None:
    """Forget the loaded kernel, so the next merge re-reads the environment and cache."""
    with _lock:
        _state.clear()
