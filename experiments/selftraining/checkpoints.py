"""Training checkpoints that survive being killed at any instant, and exact resume.

``checkpoints/latest.pth`` holds everything a run needs to continue bit-for-bit: student,
teacher, optimiser, scheduler, the RNG states of torch, numpy and Python, and the iteration
(which is also the data position: batches are drawn from generators seeded by
(seed, iteration)). Before a new latest is written the old one becomes ``previous.pth``;
both writes are atomic renames, so at every moment at least one complete checkpoint exists.
A latest file that cannot be read falls back to the previous one with a warning.
"""

from __future__ import annotations

import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.infra.runs import atomic_path

LATEST = "latest.pth"
PREVIOUS = "previous.pth"


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch; ask torch for deterministic kernels where it has them."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def iteration_seed(seed: int, iteration: int, stream: int = 0) -> int:
    """A seed for one iteration and one random stream, independent of what ran before.

    Drawing every iteration's randomness from its own seed makes an iteration a pure
    function of (seed, iteration): resuming needs no replay of earlier draws.
    """
    mixed = np.random.SeedSequence([seed, iteration, stream]).generate_state(2, dtype=np.uint32)
    return int(mixed[0]) << 31 ^ int(mixed[1])


def iteration_generator(seed: int, iteration: int, stream: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(iteration_seed(seed, iteration, stream))


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` as the new latest checkpoint, keeping the old one as previous."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    latest = directory / LATEST
    if latest.exists():
        os.replace(latest, directory / PREVIOUS)
    with atomic_path(latest) as tmp:
        torch.save(state, tmp)
    return latest


def _read(path: Path) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "iteration" not in state:
        raise ValueError(f"{path} is not a training checkpoint (no 'iteration' key)")
    return state


def load_checkpoint(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The newest readable checkpoint in ``directory``, or None when there is none.

    A corrupt or truncated latest file is reported with a warning and the previous one is
    used; if both are unreadable the error names both files.
    """
    directory = Path(directory)
    errors = []
    for name in (LATEST, PREVIOUS):
        path = directory / name
        if not path.exists():
            continue
        try:
            state = _read(path)
        except Exception as error:  # unpickling errors have many types
            errors.append(f"{path}: {error}")
            warnings.warn(f"checkpoint {path} cannot be read ({error}); trying the previous one",
                          RuntimeWarning, stacklevel=2)
            continue
        state["loaded_from"] = str(path)
        return state
    if errors:
        raise RuntimeError("no readable checkpoint: " + "; ".join(errors))
    return None
