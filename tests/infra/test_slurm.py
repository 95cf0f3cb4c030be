"""Hydra sweeps through a real single-node SLURM cluster (Debian packages, no systemd).

The session fixture installs and starts the cluster under its own temp dir and stops
only the daemons it started. Needs root (apt-get, daemons); skipped otherwise, and
when apt cannot install the packages, unless MTDA_REQUIRE_SLURM=1 or CI is set, in
which case those conditions fail the run instead.

Sweeps: a toy app (every job completes; a job that dies fails its sweep with a message,
never hangs), then the miniature itself: `experiments.train -m launcher=slurm` over
seeds and `experiments.reproduce -m` over seeds, each job a task of one SLURM job array;
and a training job signalled mid-run, requeued, resumed, equal to an uninterrupted run.
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

import slurm_cluster

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

APP = Path(__file__).resolve().parents[1] / "support" / "slurm_app" / "app.py"
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


# The miniature through the cluster: experiments.train as a SLURM job array, one job per seed.
MINI_SEEDS = (0, 1)
MINI_SWEEP_TIMEOUT_S = 420
MINI_TRAIN = ["experiment=smoke", "segmentor=mini_r18", "schedule.max_iters=2", "schedule.val_interval=0", "schedule.val_images=2",
              "logger.progress=false", "pretrain.steps=2", "pretrain.batch_size=4", "pretrain.crop=32",
              "resources=cpu_mini"]


def _slurm_resources() -> list[str]:
    """The cluster's launcher settings (sweep_overrides) as the resources.slurm keys launcher=slurm reads."""
    mapped = []
    for override in slurm_cluster.sweep_overrides():
        key, _, value = override.partition("=")
        if key.startswith("hydra.launcher."):
            mapped.append(f"resources.slurm.{key.removeprefix('hydra.launcher.')}={value}")
    assert len(mapped) == len(slurm_cluster.sweep_overrides()) - 1, "a launcher setting has no resources key"
    return mapped


def _check_job_array(env: dict[str, str], sweep: Path, jobs: int) -> None:
    """Each job of the sweep ran as a task of one SLURM job array, and accounting saw each complete."""
    tasks = sorted(p.name for p in (sweep / ".submitit").iterdir() if p.is_dir() and "_" in p.name)
    assert len(tasks) == jobs and len({t.split("_")[0] for t in tasks}) == 1, tasks
    assert {_final_sacct_state(env, task) for task in tasks} == {"COMPLETED"}


def test_miniature_training_sweep_runs_on_the_cluster(cluster, tmp_path, mini_data):
    import torch
    from hydra import compose, initialize_config_dir

    from experiments.infra.runs import read_manifest, sha256_file
    from experiments.selftraining.loop import run_dir_for
    from experiments.selftraining.pretraining import prepare_backbone

    data, runs, sweep = mini_data, tmp_path / "runs", tmp_path / "multirun"
    overrides = [*MINI_TRAIN, f"data_root={data}", f"runs_root={runs}"]
    with initialize_config_dir(str(Path(__file__).resolve().parents[2] / "configs"), version_base="1.3"):
        cfgs = [compose("train", overrides=[*overrides, f"seed={s}"]) for s in MINI_SEEDS]
    # Pretraining is shared by every job of the sweep: done once up front, as the study
    # pipeline does, so the jobs never race on it.
    prepare_backbone(cfgs[0])
    argv = [sys.executable, "-m", "experiments.train", "-m", "launcher=slurm", *_slurm_resources(),
            *overrides, "seed=" + ",".join(map(str, MINI_SEEDS)), f"hydra.sweep.dir={sweep}"]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(argv, env=cluster, cwd=Path(__file__).resolve().parents[2], capture_output=True,
                              text=True, timeout=MINI_SWEEP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"miniature sweep hung for {MINI_SWEEP_TIMEOUT_S} s")
    print(f"\n[slurm] miniature sweep of {len(MINI_SEEDS)} trainings took {time.monotonic() - t0:.1f} s")
    assert proc.returncode == 0, proc.stderr[-4000:]
    _check_job_array(cluster, sweep, len(MINI_SEEDS))
    weights = []
    for cfg in cfgs:
        run_dir = run_dir_for(cfg)
        manifest = read_manifest(run_dir)
        assert manifest["status"] == "complete", manifest
        assert json.loads((run_dir / "metrics.json").read_text())["iterations"] == 2
        assert manifest["model"] == {"segmentor": "mini_r18", "overrides": {}, "network": "student"}
        recorded = manifest["outputs"]["model"]
        assert recorded["path"] == "model.pth" and recorded["sha256"] == sha256_file(run_dir / "model.pth")
        state = torch.load(run_dir / "model.pth", map_location="cpu", weights_only=False)["state_dict"]
        weights.append(state["model.decode_head.conv_seg.weight"])
    # The seed override reached each job: the two runs trained differently.
    assert not torch.equal(weights[0], weights[1])


def test_study_pipeline_sweep_runs_on_the_cluster(cluster, tmp_path, mini_data):
    """``experiments.reproduce -m`` through submitit: one table1 study per seed, as SLURM jobs.

    Each job composes its training configs inside the job (hydra's compose API), trains,
    merges, evaluates and writes its own table.
    """
    from hydra import compose, initialize_config_dir

    from experiments.pipeline import stages
    from experiments.selftraining.pretraining import prepare_backbone

    tiny = ["schedule=smoke", "schedule.max_iters=2", "schedule.val_interval=0", "schedule.val_images=2",
            "segmentor=${scale.segmentors.main}", "data_root=${scale.data_root}", "logger=none",
            "logger.progress=false", "resources=cpu_mini", "pretrain.steps=2", "pretrain.batch_size=4",
            "pretrain.crop=32"]
    common = ["study=table1", "scale=smoke", f"runs_root={tmp_path / 'runs'}", f"scale.data_root={mini_data}",
              "workers=1"]
    root = Path(__file__).resolve().parents[2]
    with initialize_config_dir(str(root / "configs"), version_base="1.3"):
        cfg = compose("reproduce", overrides=[*common, "seeds=[0]"])
        cfg.scale.train_overrides = tiny
        # Data and pretraining are shared by both jobs: made once up front (as run_study does
        # before it trains) so that the jobs never race on them.
        stages.ensure_data(cfg)
        prepare_backbone(stages.compose_train(cfg, [], 0))
    argv = [sys.executable, "-m", "experiments.reproduce", "-m", *slurm_cluster.sweep_overrides(), *common,
            "seeds=[0],[1]", "scale.train_overrides=[" + ",".join(f"'{o}'" for o in tiny) + "]",
            f"results_dir='{tmp_path}/results_${{hydra:job.num}}'", f"hydra.sweep.dir={tmp_path / 'multirun'}"]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(argv, env=cluster, cwd=root, capture_output=True, text=True,
                              timeout=MINI_SWEEP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"study sweep hung for {MINI_SWEEP_TIMEOUT_S} s")
    print(f"\n[slurm] table1 sweep over 2 seeds took {time.monotonic() - t0:.1f} s")
    assert proc.returncode == 0, proc.stderr[-4000:]
    _check_job_array(cluster, tmp_path / "multirun", 2)
    for job, seed in ((0, 0), (1, 1)):
        rows = (tmp_path / f"results_{job}" / "table1" / "table1.csv").read_text().splitlines()
        assert len(rows) == 1 + 6, rows  # header + 3 trained models + 3 merges
        assert all(row.split(",")[1] == "1" for row in rows[1:])  # one seed per job
        assert (tmp_path / "runs" / "train" / f"gta2cs_mini_r18_daformer_shared_s{seed}" / "model.pth").exists()
        assert (tmp_path / "runs" / "merge" / f"table1_merged_pooled_s{seed}" / "merged.safetensors").exists()


def test_a_preempted_training_job_is_requeued_and_resumes_exactly(cluster, tmp_path, mini_data):
    """SLURM's warning signal mid-run: submitit checkpoints and requeues the job, the job
    resumes from the run folder's latest checkpoint, and the model it ends with equals an
    uninterrupted run's, weight for weight."""
    import torch
    from hydra import compose, initialize_config_dir

    from experiments.infra.runs import is_complete
    from experiments.selftraining.loop import run_dir_for, train
    from experiments.selftraining.pretraining import prepare_backbone

    data, sweep = mini_data, tmp_path / "multirun"
    long = [*MINI_TRAIN, "schedule.max_iters=120", "schedule.checkpoint_interval=5", f"data_root={data}"]
    with initialize_config_dir(str(Path(__file__).resolve().parents[2] / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[*long, f"runs_root={tmp_path / 'runs'}"])
        reference_cfg = compose("train", overrides=[*long, f"runs_root={tmp_path / 'reference'}"])
    # Pretraining results depend on the thread count: make both backbones (this one, and the
    # reference's inside train() below) with the one thread resources=cpu_mini sets.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        prepare_backbone(cfg)
    finally:
        torch.set_num_threads(threads)
    run_dir = run_dir_for(cfg)
    argv = [sys.executable, "-m", "experiments.train", "-m", "launcher=slurm", *_slurm_resources(),
            *long, f"runs_root={tmp_path / 'runs'}", "seed=0", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen(argv, env=cluster, cwd=Path(__file__).resolve().parents[2],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + MINI_SWEEP_TIMEOUT_S
        while not (run_dir / "checkpoints" / "latest.pth").exists():  # mid-run
            assert proc.poll() is None, proc.stderr.read()[-4000:]
            assert time.monotonic() < deadline, "the training job never wrote a checkpoint"
            time.sleep(0.1)
        job = next(p.name for p in (sweep / ".submitit").iterdir() if p.is_dir())
        # What SLURM sends before a preemption or the time limit (submitit's --signal=USR2).
        subprocess.run(["scancel", "--signal=USR2", job], env=cluster, check=True)
        # SLURM holds a requeued job for a while (begin time in the future): whenever it is
        # pending, let it start now. The job's own outcome is the run folder completing. (The
        # sweep process watches the job through accounting; under load it has once read the
        # interrupted attempt's transient FAILED record and given up while the requeued job
        # went on to finish. That is submitit's reading of sacct, not the job's result, so it
        # is reported below, not asserted.)
        states = []
        while not is_complete(run_dir):
            assert time.monotonic() < deadline, f"the requeued job never finished; states {states}"
            state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T %r"], env=cluster,
                                   capture_output=True, text=True).stdout.strip()
            if not states or states[-1] != state:
                states.append(state)
            if state.startswith("PENDING"):
                subprocess.run(["scontrol", "release", job], env=cluster, capture_output=True)
                subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=cluster,
                               capture_output=True)
            time.sleep(0.5)
        _, err = proc.communicate(timeout=MINI_SWEEP_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    if proc.returncode != 0:
        print(f"\n[slurm] the sweep process reported the requeued job as failed:\n{err[-1500:]}")
    logs = "".join(p.read_text(errors="replace") for p in (sweep / ".submitit" / job).glob("*_log.*"))
    assert "resuming " + run_dir.name in logs, logs[-4000:]  # the second start resumed
    assert json.loads((run_dir / "metrics.json").read_text())["iterations"] == 120
    try:
        train(reference_cfg)  # the same run, uninterrupted, in this process
    finally:
        torch.set_num_threads(threads)
    resumed = torch.load(run_dir / "model.pth", map_location="cpu", weights_only=False)["state_dict"]
    reference = torch.load(run_dir_for(reference_cfg) / "model.pth", map_location="cpu",
                           weights_only=False)["state_dict"]
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)
