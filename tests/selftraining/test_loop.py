"""Tiny real training runs: every recipe variant, skip-when-done, and exact resume after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from experiments.selftraining import checkpoints as ckpt
from experiments.infra.logs import read_log
from experiments.infra.runs import read_manifest
from experiments.infra.names import train_run
from experiments.selftraining.loop import train

ROOT = Path(__file__).resolve().parents[2]
TINY = ["schedule=smoke", "segmentor=mini_r18", "schedule.max_iters=2", "schedule.val_interval=0", "schedule.val_images=2",
        "schedule.checkpoint_interval=1", "logger=none", "logger.progress=false",
        "pretrain.steps=2", "pretrain.batch_size=4", "pretrain.crop=32"]


def _cfg(data: Path, runs: Path, *overrides: str):
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=[*TINY, f"data_root={data}", f"runs_root={runs}", *overrides])


def _model(run_dir: Path) -> dict:
    return torch.load(run_dir / "model.pth", map_location="cpu", weights_only=False)


@pytest.mark.parametrize("overrides, teacher", [
    ([], True),
    (["recipe=source_only"], False),
    (["recipe=oracle"], False),
    (["target=cityscapes_idd"], True),
    (["init=no_ema"], False),
    (["init=other_pretrained"], True),
    (["init=same_random"], True),
    (["init=different_random", "target=idd"], True),
])
def test_every_recipe_variant_trains_and_saves_a_daformer_checkpoint(mini_data, tmp_path, overrides, teacher):
    cfg = _cfg(mini_data, tmp_path, *overrides)
    run_dir = train(cfg)
    assert run_dir.name == train_run(cfg.source.name, list(cfg.target.names), "mini_r18", cfg.recipe.name,
                                    cfg.init.name, 0)
    saved = _model(run_dir)
    keys = saved["state_dict"].keys()
    assert any(k.startswith("model.backbone.") for k in keys)
    assert any(k.startswith("ema_model.decode_head.") for k in keys) == teacher
    manifest = read_manifest(run_dir)
    assert manifest["status"] == "complete"
    assert manifest["model"] == {"segmentor": "mini_r18", "overrides": {}, "network": saved["meta"]["saved_network"]}
    assert saved["meta"]["saved_network"] == "student"
    log = read_log(run_dir / "log.jsonl")
    assert log[-1]["iteration"] == 2 and any("loss" in r for r in log)
    if cfg.recipe.mode == "selftrain":
        assert any("confidence" in r for r in log)
    if cfg.init.backbone == "pretrained":
        assert "pretrained_backbone" in manifest["inputs"]


def test_teacher_is_saved_when_asked_and_finished_runs_are_skipped(mini_data, tmp_path):
    cfg = _cfg(mini_data, tmp_path, "save_network=teacher")
    run_dir = train(cfg)
    saved = _model(run_dir)
    assert saved["meta"]["saved_network"] == "teacher" and read_manifest(run_dir)["model"]["network"] == "teacher"
    # After 2 iterations the teacher is an EMA (alpha_1 = 0.5) of the student: not equal to it.
    student = {k[6:]: v for k, v in saved["state_dict"].items() if k.startswith("model.")}
    teacher = {k[10:]: v for k, v in saved["state_dict"].items() if k.startswith("ema_model.")}
    assert student.keys() == teacher.keys()
    assert not all(torch.equal(student[k], teacher[k]) for k in student)
    stamp = (run_dir / "model.pth").stat().st_mtime_ns
    assert train(cfg) == run_dir and (run_dir / "model.pth").stat().st_mtime_ns == stamp


def test_random_inits_are_shared_or_differ_by_target(mini_data, tmp_path):
    from experiments.selftraining.loop import build_networks
    from experiments.selftraining.pretraining import prepare_backbone

    def weights(*overrides):
        cfg = _cfg(mini_data, tmp_path, *overrides)
        prepare_backbone(cfg)  # the explicit step that makes the miniature's pretrained backbone
        torch.manual_seed(123)  # the init seed, not the global state, must decide
        nets = build_networks(cfg, torch.device("cpu"))
        return nets["student"].state_dict()

    same_a, same_b = weights("init=same_random"), weights("init=same_random", "target=idd")
    diff_a, diff_b = weights("init=different_random"), weights("init=different_random", "target=idd")
    assert all(torch.equal(same_a[k], same_b[k]) for k in same_a)
    assert not torch.equal(diff_a["backbone.stem.0.weight"], diff_b["backbone.stem.0.weight"])
    with pytest.raises(FileNotFoundError, match="pretrained backbone .*backbone.pth not found"):
        build_networks(_cfg(mini_data, tmp_path / "fresh"), torch.device("cpu"))  # looking up runs nothing
    shared = weights()
    pretrained = torch.load(next((tmp_path / "pretrain").glob("mini_r18_s0/backbone.pth")), weights_only=True)
    assert torch.equal(shared["backbone.stem.0.weight"], pretrained["state_dict"]["backbone.stem.0.weight"])


def _command(data: Path, runs: Path, iters: int) -> list[str]:
    return [sys.executable, "-m", "experiments.train", *TINY, f"data_root={data}", f"runs_root={runs}",
            f"schedule.max_iters={iters}", "schedule.checkpoint_interval=2", "hydra.run.dir=" + str(runs / "hydra"),
            "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(mini_data, tmp_path):
    iters = 10
    env = dict(os.environ, PYTHONHASHSEED="0")
    whole = tmp_path / "whole"
    # Pretrain once and share it, so both runs start from the same file.
    cut = tmp_path / "cut"
    subprocess.run(_command(mini_data, whole, iters), check=True, cwd=ROOT, env=env, capture_output=True)
    (cut / "pretrain").mkdir(parents=True)
    os.symlink(whole / "pretrain" / "mini_r18_s0", cut / "pretrain" / "mini_r18_s0")
    proc = subprocess.Popen(_command(mini_data, cut, iters), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    run_dir = cut / "train" / "gta2cs_mini_r18_daformer_shared_s0"
    deadline = time.time() + 120
    while not (run_dir / "checkpoints" / ckpt.PREVIOUS).exists():  # latest is at iteration >= 4
        assert proc.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = ckpt.load_checkpoint(run_dir / "checkpoints")["iteration"]
    assert 2 <= killed_at < iters and not (run_dir / "model.pth").exists()
    subprocess.run(_command(mini_data, cut, iters), check=True, cwd=ROOT, env=env, capture_output=True)
    a = _model(whole / "train" / run_dir.name)["state_dict"]
    b = _model(run_dir)["state_dict"]
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed run differs in {different[:5]}"


def test_every_config_option_composes_and_names_a_distinct_run(tmp_path):
    from experiments.selftraining.loop import run_dir_for

    names = set()
    for group in ("source", "target", "segmentor", "recipe", "schedule", "resources", "logger", "init",
                  "launcher", "experiment"):
        for option in sorted((ROOT / "configs" / group).glob("*.yaml")):
            cfg = _cfg(tmp_path, tmp_path, f"{group}={option.stem}")
            assert cfg.schedule.max_iters > 0 and cfg.resources.slurm.timeout_min >= 5
            if group in ("source", "target", "segmentor", "recipe", "init"):
                names.add(run_dir_for(cfg).name)
    # One run folder per choice of source, target, segmentor, recipe and initialisation.
    counted = sum(len(list((ROOT / "configs" / g).glob("*.yaml"))) for g in ("source", "target", "segmentor",
                                                                          "recipe", "init"))
    assert len(names) == counted - 4  # the defaults (gta, cityscapes, mini_r18, daformer, shared) repeat


def test_a_run_folder_started_with_another_config_is_refused_not_reused(mini_data, tmp_path):
    run_dir = train(_cfg(mini_data, tmp_path))
    # Another logger or runs root computes the same run: reused.
    assert train(_cfg(mini_data, tmp_path, "logger.progress=true")) == run_dir
    # Another learning rate is another run under the same name: refused, naming the key.
    with pytest.raises(ValueError, match=r"schedule\.lr: run has"):
        train(_cfg(mini_data, tmp_path, "schedule.lr=0.5"))


def test_run_state_is_the_one_skip_decision_and_snapshots_reopen_a_finished_run(mini_data, tmp_path):
    from experiments.selftraining.loop import run_state

    cfg = _cfg(mini_data, tmp_path)
    assert not run_state(cfg).complete and not run_state(cfg).done
    train(cfg)
    assert run_state(cfg).done
    asked = _cfg(mini_data, tmp_path, "schedule.snapshot_iters=[1]")
    state = run_state(asked)
    assert state.complete and state.missing_snapshots == [1] and not state.done


def test_missing_data_names_the_generating_command_and_a_failed_run_is_recorded(mini_data, tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m experiments.miniature scale.data_root="):
        train(_cfg(tmp_path / "no_data", tmp_path))
    # A run that fails after it started says so in its manifest; the next start redoes it.
    cfg = _cfg(mini_data, tmp_path, "schedule.val_images=1", "schedule.val_batch_size=0")
    with pytest.raises(Exception):
        train(cfg)
    from experiments.selftraining.loop import run_dir_for

    manifest = read_manifest(run_dir_for(cfg))
    assert manifest["status"] == "failed" and manifest["error"]


def test_a_tree_with_wrong_labels_is_refused_before_the_run_folder_is_touched(mini_data, tmp_path):
    """An IDD tree whose csTrainIds files hold label ids (a common mix-up): refused, naming the
    file, before training starts; no run folder, manifest or checkpoint is written."""
    import shutil

    import numpy as np
    from PIL import Image

    data = tmp_path / "data"
    for name in ("gta", "idd"):
        shutil.copytree(mini_data / name, data / name)
    shutil.copy(mini_data / "manifest.json", data / "manifest.json")
    first = sorted((data / "idd" / "gtFine" / "val").rglob("*_gtFine_labelcsTrainIds.png"))[0]
    label = np.array(Image.open(first))
    label[0, 0] = 26  # the label id of car, not a trainId
    Image.fromarray(label).save(first)
    cfg = _cfg(data, tmp_path / "runs", "target=idd", "schedule.val_images=2")
    from experiments.selftraining.loop import run_dir_for

    with pytest.raises(ValueError, match=r"labelcsTrainIds.png: label values 26 are not Cityscapes trainIds"):
        train(cfg)
    assert not (run_dir_for(cfg) / "manifest.json").exists()
    assert not (run_dir_for(cfg) / "checkpoints").exists()


def test_the_default_segmentor_trains_from_real_imagenet_weights_and_records_its_start(mini_data, tmp_path):
    """mini_lite0 (the miniature's default): its ImageNet backbone is written once into a
    pretraining run folder, the student starts from it, and theta_0 is kept beside the model."""
    from safetensors.torch import load_file

    from experiments.models.lite0 import imagenet_backbone_state

    cfg = _cfg(mini_data, tmp_path, "segmentor=mini_lite0")
    run_dir = train(cfg)
    assert run_dir.name == train_run("gta", ["cityscapes"], "mini_lite0", "daformer", "shared", 0)
    backbone = torch.load(tmp_path / "pretrain" / "mini_lite0_s0" / "backbone.pth", weights_only=True)["state_dict"]
    imagenet = imagenet_backbone_state()
    assert all(torch.equal(backbone[f"backbone.{k}"], v) for k, v in imagenet.items())
    initial = load_file(run_dir / "initial.safetensors")
    assert all(torch.equal(initial[f"backbone.{k}"], v) for k, v in imagenet.items() if "num_batches" not in k)
    trained = _model(run_dir)["state_dict"]
    assert set(initial) == {k[len("model."):] for k in trained if k.startswith("model.")}
    assert not torch.equal(initial["backbone._conv_stem.weight"], trained["model.backbone._conv_stem.weight"])
    assert read_manifest(run_dir)["outputs"]["initial"]["sha256"]
