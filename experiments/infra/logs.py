"""Training logs: a local JSONL file always, wandb when asked, and a progress bar.

wandb runs offline unless the user has logged in (an API key in the environment or in
~/.netrc) and ``mode`` is ``auto``/``online``; ``logger=none`` turns it off. The JSONL file
(one record per logged iteration: losses, learning rate, pseudo-label confidence,
throughput, validation mIoU) is what later analysis reads; wandb is for watching.
"""

from __future__ import annotations

import json
import logging
import netrc
import os
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

# The wandb project of every run unless ``logger.project`` names another.
PROJECT = "mtda-merge"


def quiet_libraries() -> None:
    """mmengine prints one INFO block per initialised tensor; keep warnings only."""
    for name in ("mmengine", "mmseg", "mmcv"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        from mmengine.logging import MMLogger

        MMLogger.get_current_instance().setLevel(logging.WARNING)
    except Exception:  # mmengine absent or no instance yet
        pass


def wandb_logged_in() -> bool:
    """True when an API key is available without asking the user."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(mode: str) -> str:
    """``auto`` -> online when logged in, else offline; ``none``/``disabled`` -> disabled."""
    if mode in ("none", "disabled", "off"):
        return "disabled"
    if mode not in ("auto", "online", "offline"):
        raise ValueError(f"logger.wandb.mode must be auto, online, offline or none, got {mode!r}")
    if os.environ.get("WANDB_MODE") in ("offline", "disabled") and mode == "auto":
        return os.environ["WANDB_MODE"]
    if mode == "auto":
        return "online" if wandb_logged_in() else "offline"
    return mode


class TrainingLogger:
    """Write metrics to ``<run_dir>/log.jsonl``, to wandb (unless disabled) and a tqdm bar.

    The JSONL file is appended to, so a resumed run continues the same log; records carry
    the iteration, so readers keep the last record of each iteration.
    """

    def __init__(self, run_dir: str | os.PathLike, name: str, config: dict | None = None,
                 wandb_mode: str = "auto", project: str | None = None, total: int = 0,
                 start: int = 0, progress: bool = True):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "log.jsonl"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.mode = resolve_wandb_mode(wandb_mode)
        self.wandb = None
        if self.mode != "disabled":
            import wandb

            # The run id is the run name, so a resumed run continues the same wandb run.
            self.wandb = wandb.init(project=project or PROJECT, name=name, id=name.replace("+", "-"), dir=str(self.run_dir),
                                    mode=self.mode, config=config, resume="allow", reinit="finish_previous")
        self.bar = tqdm(total=total, initial=start, desc=name, unit="it", dynamic_ncols=True,
                        disable=not progress, mininterval=1.0)
        self._last_time, self._last_iter = time.perf_counter(), start

    def log(self, iteration: int, metrics: dict[str, Any]) -> dict[str, Any]:
        """Record ``metrics`` at ``iteration`` and add the throughput since the last call."""
        now = time.perf_counter()
        if iteration > self._last_iter:
            metrics = dict(metrics, iters_per_s=(iteration - self._last_iter) / max(now - self._last_time, 1e-9))
        self._last_time, self._last_iter = now, iteration
        record = {"iteration": iteration, "time": time.time(), **{k: _plain(v) for k, v in metrics.items()}}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in record.items() if k not in ("iteration", "time")}, step=iteration)
        shown = {k: f"{v:.3g}" for k, v in record.items() if k in ("loss", "loss_source", "lr", "confidence", "val_miou")}
        self.bar.set_postfix(shown, refresh=False)
        return record

    def advance(self, steps: int = 1) -> None:
        self.bar.update(steps)

    def close(self) -> None:
        self.bar.close()
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a JSONL log, the last one kept for each iteration and key set."""
    records: dict[tuple, dict] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            records[(record["iteration"], tuple(sorted(record)))] = record
    return sorted(records.values(), key=lambda r: r["iteration"])


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return value


def log_study(name: str, config: dict, records: list[dict], files: list[Path], wandb_mode: str = "auto",
              project: str | None = None, group: str | None = None, directory: str | os.PathLike = "runs") -> None:
    """One wandb run per study: its config, every result record, and tables/figures as an artifact.

    Runs of one sweep share ``group`` (the sweep's folder), so they are shown together.
    Nothing is logged with ``wandb_mode`` none.
    """
    mode = resolve_wandb_mode(wandb_mode)
    if mode == "disabled":
        return
    import wandb

    project = project or PROJECT

    Path(directory).mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=project, name=name, group=group or name, job_type="study", dir=str(directory),
                     mode=mode, config=config, reinit="finish_previous")
    try:
        columns = sorted({key for record in records for key in record})
        run.log({"records": wandb.Table(columns=columns,
                                        data=[[_plain(r.get(c)) for c in columns] for r in records])})
        artifact = wandb.Artifact(f"{name}-results", type="results")
        for path in files:
            artifact.add_file(str(path))
        run.log_artifact(artifact)
    finally:
        run.finish()
