"""Run folders, manifests and atomic writes shared by every stage.

A run folder holds the resolved config (``config.yaml``), a ``manifest.json``
(inputs with sha256, outputs, status, git SHA, library versions, whether it comes from
the miniature stand-in) and, when the stage produces them, ``metrics.json``. Stages find
each other through these folders by deterministic names (``experiments.infra.names``),
never by parsing logs. A stage runs inside ``stage(...)``: status ``running`` while it
works, ``complete`` with its outputs at the end, ``failed`` with the error when it raises
(a rerun retries a failed stage).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from analysis.io import read_json
from analysis.report import STAND_IN_NOTE
from fusion.checkpoint import atomic_file, sha256_of

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX: run folders are not locked
    fcntl = None

# One atomic writer and one checksum for the whole project: fusion's (the lowest layer).
# ``atomic_path`` yields a temporary path beside the target and renames it onto the
# target only when the body succeeds, so a reader never sees a half-written file.
atomic_path = atomic_file
sha256_file = sha256_of


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def environment_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in ("torch", "mmcv", "mmengine", "mmseg", "numpy", "hydra"):
        with contextlib.suppress(Exception):
            versions[name] = __import__(name).__version__
    return versions


def read_manifest(run_dir: str | os.PathLike) -> dict | None:
    """The manifest of ``run_dir``, or None when the run never started."""
    path = Path(run_dir) / "manifest.json"
    return read_json(path, "manifest") if path.exists() else None


def is_complete(run_dir: str | os.PathLike) -> bool:
    manifest = read_manifest(run_dir)
    return bool(manifest) and manifest.get("status") == "complete"


LOCK_NAME = ".lock"
_CLAIMS: dict[Path, int] = {}  # run folders this process holds -> open lock file


class RunInUse(RuntimeError):
    """Another live process works in this run folder."""


def claim(run_dir: str | os.PathLike) -> None:
    """Hold ``run_dir`` for this process until ``release`` (or ``finish_run``) or exit.

    Two processes must never write one run folder (two SLURM jobs training the same
    model, a requeued job whose first copy still runs): the second is refused, with the
    holder named. The lock is an ``flock`` on ``run_dir/.lock``, which the operating
    system drops when the holder dies, so a killed or preempted run leaves nothing to
    clean up. Claiming a folder this process already holds is a no-op.
    """
    key = Path(run_dir).resolve()
    if fcntl is None or key in _CLAIMS:
        return
    key.mkdir(parents=True, exist_ok=True)
    fd = os.open(key / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 512).decode(errors="replace").strip() or "holder unknown"
        os.close(fd)
        raise RunInUse(f"run folder {key} is in use by another process ({holder}); wait for "
                       f"it to finish or stop it (lock: {key / LOCK_NAME})") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                 f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode())
    _CLAIMS[key] = fd


def release(run_dir: str | os.PathLike) -> None:
    """Give up ``run_dir`` (no-op when this process does not hold it)."""
    fd = _CLAIMS.pop(Path(run_dir).resolve(), None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def claimed(run_dir: str | os.PathLike):
    """``claim`` for the duration of a block, released however the block ends."""
    claim(run_dir)
    try:
        yield
    finally:
        release(run_dir)


def start_run(run_dir: str | os.PathLike, stage: str, config: Any = None,
              inputs: dict[str, str | os.PathLike] | None = None, *, stand_in: bool) -> dict:
    """Create (or reopen) ``run_dir`` and write a manifest with status ``running``.

    ``inputs`` maps a role to a file; each is recorded with its sha256 so a later
    stage can tell which exact files a result came from. Claims the folder first
    (``claim``): a folder another live process works in is refused with ``RunInUse``.
    """
    run_dir = Path(run_dir)
    claim(run_dir)
    if config is not None:
        try:
            from omegaconf import OmegaConf

            text = OmegaConf.to_yaml(config, resolve=True)
        except Exception:  # a plain dict
            text = json.dumps(config, indent=2, default=str)
        write_text_atomic(run_dir / "config.yaml", text)
    manifest = read_manifest(run_dir) or {}
    manifest.update(
        stage=stage,
        status="running",
        started=manifest.get("started", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
        git_sha=git_sha(),
        versions=environment_versions(),
        inputs={role: {"path": str(p), "sha256": sha256_file(p)} for role, p in (inputs or {}).items()},
        outputs=manifest.get("outputs", {}),
        stand_in=bool(stand_in),
    )
    manifest.pop("error", None)
    if stand_in:
        manifest["note"] = STAND_IN_NOTE
    else:
        manifest.pop("note", None)
    write_json_atomic(run_dir / "manifest.json", manifest)
    return manifest


def finish_run(run_dir: str | os.PathLike, outputs: dict[str, str | os.PathLike] | None = None,
               metrics: dict | None = None, **extra: Any) -> dict:
    """Record outputs (with sha256) and metrics, then mark the run complete."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir) or {}
    recorded = manifest.get("outputs", {})
    for role, p in (outputs or {}).items():
        p = Path(p)
        recorded[role] = {"path": os.path.relpath(p, run_dir), "sha256": sha256_file(p)}
    manifest.update(outputs=recorded, status="complete",
                    finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra)
    if metrics is not None:
        write_json_atomic(run_dir / "metrics.json", metrics)
    write_json_atomic(run_dir / "manifest.json", manifest)
    release(run_dir)
    return manifest


def fail_run(run_dir: str | os.PathLike, error: BaseException) -> None:
    """Mark a started run ``failed`` with the error (a rerun retries it), and release it."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir) or {}
    manifest.update(status="failed", failed=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    error=f"{type(error).__name__}: {error}")
    write_json_atomic(run_dir / "manifest.json", manifest)
    release(run_dir)


@contextlib.contextmanager
def stage(run_dir: str | os.PathLike, name: str, config: Any = None,
          inputs: dict[str, str | os.PathLike] | None = None, *, stand_in: bool):
    """``start_run`` ... body ... where the body raising records ``failed`` and re-raises.

    The body must end with ``finish_run`` (which marks the run complete and releases it).
    A ``KeyboardInterrupt`` or a preemption signal also counts as a failure: the manifest
    then says why the run stopped, and the next start resumes or redoes it.
    """
    manifest = start_run(run_dir, name, config, inputs, stand_in=stand_in)
    try:
        yield manifest
    except BaseException as error:
        fail_run(run_dir, error)
        raise


def is_stand_in(run_dir: str | os.PathLike) -> bool:
    """Whether a run folder's manifest says its results come from the miniature stand-in."""
    manifest = read_manifest(run_dir)
    if manifest is None:
        raise FileNotFoundError(f"{run_dir}/manifest.json not found: is it a run folder?")
    return bool(manifest.get("stand_in"))


# Keys that do not change what a run computes: a run folder may be resumed or reused
# with other values of these (another logger, machine, launcher, runs root).
RUN_INDEPENDENT = ("logger", "resources", "launcher", "runs_root", "local", "schedule.snapshot_iters",
                   "schedule.log_interval")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def config_conflicts(cfg: Any, run_dir: str | os.PathLike, independent: tuple[str, ...] = RUN_INDEPENDENT
                     ) -> list[str]:
    """Keys whose value differs from the config a run folder was started with.

    Run names carry what identifies a run, not every value; this catches the rest (e.g.
    another schedule) instead of silently reusing the run.
    """
    from omegaconf import OmegaConf

    saved_path = Path(run_dir) / "config.yaml"
    if not saved_path.exists():
        return []
    saved = _flatten(OmegaConf.to_container(OmegaConf.load(saved_path), resolve=False))
    wanted = _flatten(OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg))
    keys = sorted(set(saved) | set(wanted))
    return [f"{k}: run has {saved.get(k)!r}, asked {wanted.get(k)!r}" for k in keys
            if not k.startswith(independent) and saved.get(k) != wanted.get(k)]
