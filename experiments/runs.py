"""Run folders, manifests and atomic writes shared by every stage.

A run folder holds the resolved config (``config.yaml``), a ``manifest.json``
(inputs with sha256, outputs, status, git SHA, library versions) and, when the
stage produces them, ``metrics.json``. Stages find each other through these
folders by deterministic names, never by parsing logs.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fusion.checkpoint import atomic_file, sha256_of

STAND_IN_NOTE = (
    "Results on the miniature benchmark: a procedurally generated stand-in for the "
    "paper's datasets. Not comparable with the paper's numbers."
)


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
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"corrupt manifest {path}: {error}") from error


def is_complete(run_dir: str | os.PathLike) -> bool:
    manifest = read_manifest(run_dir)
    return bool(manifest) and manifest.get("status") == "complete"


def start_run(run_dir: str | os.PathLike, stage: str, config: Any = None,
              inputs: dict[str, str | os.PathLike] | None = None,
              stand_in: bool = True) -> dict:
    """Create (or reopen) ``run_dir`` and write a manifest with status ``running``.

    ``inputs`` maps a role to a file; each is recorded with its sha256 so a later
    stage can tell which exact files a result came from.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
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
    )
    if stand_in:
        manifest["note"] = STAND_IN_NOTE
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
    return manifest
