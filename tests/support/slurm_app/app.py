"""A tiny Hydra app that the SLURM integration test sweeps over.

Each job does real, checkable work (squares its value, records where and under
which SLURM job it ran); one chosen value can make its job die abruptly, the way
an out-of-memory kill or a segfault would, without a Python exception.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig


def run(cfg: DictConfig) -> int:
    """Write value_<value>.json into `results_dir`; die first if `value == die_on`."""
    if cfg.die_on is not None and cfg.value == cfg.die_on:
        if cfg.die_how == "kill":  # like the out-of-memory killer
            os.kill(os.getpid(), signal.SIGKILL)
        elif cfg.die_how == "scancel":  # like an administrator or a preemption
            subprocess.run(["scancel", os.environ["SLURM_JOB_ID"]], check=True)
            time.sleep(120)
        os._exit(3)  # skips submitit's result file, as a crash would
    out = Path(cfg.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {"value": cfg.value, "square": cfg.value ** 2, "hostname": socket.gethostname(),
              "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
              "slurm_array_task": "{}_{}".format(os.environ.get("SLURM_ARRAY_JOB_ID"),
                                                 os.environ.get("SLURM_ARRAY_TASK_ID"))}
    tmp = out / f".value_{cfg.value}.json.tmp"
    tmp.write_text(json.dumps(record))
    tmp.replace(out / f"value_{cfg.value}.json")
    return cfg.value ** 2


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> int:
    return run(cfg)


if __name__ == "__main__":
    main()
