"""Run folders: manifests, atomic writes, failure records, locks; the wandb study log."""

from __future__ import annotations

import json

import pytest

from experiments.infra.runs import (STAND_IN_NOTE, finish_run, is_complete, read_manifest, sha256_file,
                              start_run, write_text_atomic)


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "table.md"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        from experiments.infra.runs import atomic_path

        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["table.md"]


def test_manifest_records_inputs_outputs_with_sha256_and_completion(tmp_path):
    member = tmp_path / "member.bin"
    member.write_bytes(b"weights")
    run = tmp_path / "run"
    start_run(run, "merge", {"a": 1}, {"member0": member}, stand_in=True)
    assert not is_complete(run)
    out = run / "merged.bin"
    out.write_bytes(b"merged")
    finish_run(run, {"merged": out}, metrics={"miou": 1.0})
    manifest = read_manifest(run)
    assert is_complete(run) and manifest["stage"] == "merge" and manifest["note"] == STAND_IN_NOTE
    assert manifest["inputs"]["member0"]["sha256"] == sha256_file(member)
    assert manifest["outputs"]["merged"] == {"path": "merged.bin", "sha256": sha256_file(out)}
    assert json.loads((run / "metrics.json").read_text()) == {"miou": 1.0}
    (run / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt manifest .*manifest.json"):
        read_manifest(run)














def test_a_study_is_logged_to_wandb_offline_with_its_records_and_files(tmp_path, monkeypatch):
    from experiments.infra.logs import log_study

    monkeypatch.setenv("WANDB_MODE", "offline")
    table = tmp_path / "t.csv"
    table.write_text("a,b\n1,2\n")
    records = [{"method": "a", "seed": 0, "domain": "cityscapes", "miou": 40.0}]
    log_study("table1", {"seeds": [0]}, records, [table], "auto", group="sweep", directory=tmp_path / "w")
    runs = list((tmp_path / "w" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    log_study("table1", {}, records, [table], "none", directory=tmp_path / "off")
    assert not (tmp_path / "off").exists()








def _claim_in_child(run_dir, hold_seconds=0.0):
    """Start a run in another process; returns (returncode, stderr)."""
    import subprocess
    import sys

    code = ("import sys, time; from experiments.infra import runs\n"
            f"runs.start_run({str(run_dir)!r}, 'child', stand_in=False)\n"
            "print('claimed', flush=True)\n"
            f"time.sleep({hold_seconds})\n")
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_run_folder_is_held_by_one_process_at_a_time(tmp_path):
    import os

    from experiments.infra import runs

    run_dir = tmp_path / "run"
    runs.start_run(run_dir, "parent", stand_in=False)
    runs.claim(run_dir)  # re-entrant in the holder
    child = _claim_in_child(run_dir)
    _, err = child.communicate(timeout=120)
    assert child.returncode != 0
    assert "RunInUse" in err and f"pid {os.getpid()}" in err and str(run_dir.resolve()) in err
    assert runs.read_manifest(run_dir)["stage"] == "parent"  # the refused process wrote nothing
    runs.finish_run(run_dir)
    child = _claim_in_child(run_dir)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert runs.read_manifest(run_dir)["stage"] == "child"


def test_a_killed_holder_leaves_the_folder_free(tmp_path):
    from experiments.infra import runs

    run_dir = tmp_path / "run"
    child = _claim_in_child(run_dir, hold_seconds=600)
    assert child.stdout.readline().strip() == "claimed"
    with pytest.raises(runs.RunInUse, match=f"pid {child.pid} on "):
        runs.claim(run_dir)
    child.kill()
    child.wait(timeout=60)
    child.stdout.close()
    child.stderr.close()
    with runs.claimed(run_dir):  # the operating system dropped the dead holder's lock
        assert runs.read_manifest(run_dir)["status"] == "running"  # its run stays resumable
    with pytest.raises(ZeroDivisionError):
        with runs.claimed(run_dir):
            1 / 0
    runs.claim(run_dir)  # released by the failed block
    runs.release(run_dir)


def test_a_stage_that_raises_is_recorded_failed_and_released(tmp_path):
    from experiments.infra.runs import claim, release, stage

    run = tmp_path / "run"
    with pytest.raises(ValueError, match="bad member"):
        with stage(run, "merge", {"a": 1}, stand_in=False):
            raise ValueError("bad member")
    manifest = read_manifest(run)
    assert manifest["status"] == "failed" and manifest["error"] == "ValueError: bad member"
    assert not is_complete(run)
    claim(run)  # released: this process (or any other) may start it again
    release(run)
    with stage(run, "merge", {"a": 1}, stand_in=False):
        finish_run(run, {})
    manifest = read_manifest(run)
    assert manifest["status"] == "complete" and "error" not in manifest and manifest["stand_in"] is False


def test_config_conflicts_name_the_keys_that_differ_and_ignore_run_independent_ones(tmp_path):
    from omegaconf import OmegaConf

    from experiments.infra.runs import config_conflicts

    run = tmp_path / "run"
    start_run(run, "train", OmegaConf.create({"schedule": {"lr": 1.0}, "logger": {"mode": "a"}}), stand_in=True)
    assert config_conflicts(OmegaConf.create({"schedule": {"lr": 1.0}, "logger": {"mode": "b"}}), run) == []
    assert config_conflicts(OmegaConf.create({"schedule": {"lr": 2.0}, "logger": {"mode": "a"}}), run) == [
        "schedule.lr: run has 1.0, asked 2.0"]
