"""Hydra sweeps through a real single-node SLURM cluster (Debian packages, no systemd).

The session fixture installs and starts the cluster under its own temp dir and stops
only the daemons it started. Needs root (apt-get, daemons); skipped otherwise, and
when apt cannot install the packages, unless MTDA_REQUIRE_SLURM=1 or CI is set, in
which case those conditions fail the run instead.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from experiments import slurm_cluster

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

APP = Path(__file__).parent / "slurm_app" / "app.py"
# A sweep that has not finished by then is hanging: each job takes about a second.
SWEEP_TIMEOUT_S = 150


def _cannot_run(reason: str) -> None:
    if os.environ.get("MTDA_REQUIRE_SLURM") == "1" or os.environ.get("CI"):
        pytest.fail(f"SLURM test required here but: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def cluster():
    """A running cluster for the whole session; yields the env that targets it."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        _cannot_run("needs root on Linux to install and run slurmctld/slurmd/slurmdbd/munged")
    t0 = time.monotonic()
    try:
        slurm_cluster.install_packages()
    except slurm_cluster.PackageInstallError as err:
        _cannot_run(f"apt-get could not provide the SLURM packages: {err}")
    t_install = time.monotonic() - t0
    # Short path: unix sockets live in it.
    state = Path(tempfile.mkdtemp(prefix="mtda-slurm-"))
    t0 = time.monotonic()
    try:
        env = slurm_cluster.start(state)
        t_start = time.monotonic() - t0
        print(f"\n[slurm] install {t_install:.1f} s, start {t_start:.1f} s, state {state}")
        yield {**os.environ, **env}
    finally:
        t0 = time.monotonic()
        stopped = slurm_cluster.stop(state)
        print(f"\n[slurm] stopped {stopped} in {time.monotonic() - t0:.1f} s")
        assert not any(slurm_cluster.status(state).values())
        shutil.rmtree(state, ignore_errors=True)


def _sweeps(env: dict[str, str], runs: dict[Path, tuple[str, ...]]) -> dict[Path, tuple[int, str]]:
    """Run several sweeps at once (output folder -> overrides); return (exit code, stderr) each.

    Concurrent because each failing sweep spends most of its time waiting (submitit
    gives a dead job 15 s to deliver a result before declaring it lost).
    """
    t0 = time.monotonic()
    procs = {}
    for out, overrides in runs.items():
        argv = [sys.executable, str(APP), "-m", *slurm_cluster.sweep_overrides(),
                f"results_dir={out / 'results'}", f"hydra.sweep.dir={out / 'multirun'}", *overrides]
        procs[out] = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True)
    results = {}
    for out, proc in procs.items():
        try:
            _, err = proc.communicate(timeout=max(1.0, SWEEP_TIMEOUT_S - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            for p in procs.values():
                p.kill()
            pytest.fail(f"sweep {runs[out]} hung for {SWEEP_TIMEOUT_S} s")
        results[out] = (proc.returncode, err)
    print(f"\n[slurm] {len(runs)} sweep(s) took {time.monotonic() - t0:.1f} s")
    return results


def _final_sacct_state(env: dict[str, str], job_id: str, wait_s: float = 20) -> str:
    """The job's state in accounting once it has left RUNNING/COMPLETING.

    submitit collects a result as soon as the job writes it, a moment before SLURM
    records the job's end, hence the short wait.
    """
    deadline = time.monotonic() + wait_s
    while True:
        state = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "State", "-j", job_id], env=env,
                               capture_output=True, text=True, check=True).stdout.strip()
        if state not in ("PENDING", "RUNNING", "COMPLETING", "") or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


def test_sweep_runs_every_job_on_the_cluster(cluster, tmp_path):
    values = [2, 3, 5]
    [(code, err)] = _sweeps(cluster, {tmp_path: ("value=" + ",".join(map(str, values)),)}).values()
    assert code == 0, err[-4000:]
    records = {v: json.loads((tmp_path / "results" / f"value_{v}.json").read_text())
               for v in values}
    for v, rec in records.items():
        assert rec["square"] == v * v
        assert rec["hostname"] == socket.gethostname()
        assert rec["slurm_job_id"], "job did not run under SLURM"
    # Each value ran as its own task of one SLURM job array, and accounting saw each complete.
    tasks = {rec["slurm_array_task"] for rec in records.values()}
    assert len(tasks) == len(values) and len({t.split("_")[0] for t in tasks}) == 1, tasks
    assert {_final_sacct_state(cluster, task) for task in tasks} == {"COMPLETED"}
    # Hydra kept one output folder per job of the sweep.
    assert sorted(p.name for p in (tmp_path / "multirun").iterdir() if p.name.isdigit()) == \
        ["0", "1", "2"]


def test_a_job_that_dies_fails_the_sweep_with_a_message(cluster, tmp_path):
    # How the job dies -> the state SLURM accounting must report for it.
    deaths = {"exit": "FAILED", "kill": "FAILED", "scancel": "CANCELLED"}
    runs = {tmp_path / how: ("value=1,4", "die_on=4", f"die_how={how}") for how in deaths}
    results = _sweeps(cluster, runs)
    for how, state in deaths.items():
        code, err = results[tmp_path / how]
        assert code != 0, f"die_how={how}: sweep with a dead job reported success"
        assert "has not produced any output" in err, f"die_how={how}:\n{err[-4000:]}"
        assert f"(state: {state}" in err, f"die_how={how}:\n{err[-4000:]}"
        # The healthy job of the same sweep still finished its work.
        results_dir = tmp_path / how / "results"
        assert json.loads((results_dir / "value_1.json").read_text())["square"] == 1
        assert not (results_dir / "value_4.json").exists()
