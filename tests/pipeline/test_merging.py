"""experiments.merge: the Hydra merge stage on tiny DAFormer-style checkpoints."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import fusion
from safetensors.torch import save_file
from experiments.pipeline.merging import run_merge
from experiments.infra.runs import sha256_file

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
METHODS = sorted(p.stem for p in (CONFIGS / "fusion").glob("*.yaml"))


def _network(seed):
    generator = torch.Generator().manual_seed(seed)
    return {
        "backbone.conv.weight": torch.randn(4, 3, 3, 3, generator=generator),
        "backbone.bn.weight": torch.rand(4, generator=generator),
        "backbone.bn.bias": torch.randn(4, generator=generator),
        "backbone.bn.running_mean": torch.randn(4, generator=generator),
        "backbone.bn.running_var": torch.rand(4, generator=generator) + 0.5,
        "backbone.bn.num_batches_tracked": torch.tensor(10 * (seed + 1)),
        "decode_head.conv_seg.weight": torch.randn(19, 4, 1, 1, generator=generator),
        "decode_head.conv_seg.bias": torch.randn(19, generator=generator),
    }


@pytest.fixture()
def members(tmp_path):
    """Two training checkpoints as DAFormer writes them (student, teacher, ImageNet model), each
    beside the initial weights its run starts from (theta_0, shared)."""
    imagenet = _network(100)
    paths = []
    for seed in range(2):
        state = {f"model.{k}": v for k, v in _network(seed).items()}
        state.update({f"ema_model.{k}": v for k, v in _network(seed + 10).items()})
        state.update({f"imnet_model.{k}": v for k, v in _network(200).items()})
        path = tmp_path / f"member{seed}" / "model.pth"
        path.parent.mkdir()
        torch.save({"state_dict": state, "meta": {"segmentor": "mini_r18"}}, path)
        save_file(imagenet, str(path.parent / "initial.safetensors"))
        paths.append(path)
    return paths


def _config(tmp_path, members, method, *overrides):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("merge", [f"fusion={method}", f"members=[{members[0]},{members[1]}]",
                                 f"name={method}", f"runs_root={tmp_path / 'runs'}", *overrides])


def test_midpoint_merge_writes_weights_and_manifest(tmp_path, members):
    cfg = _config(tmp_path, members, "midpoint", "network=teacher")
    run_dir = run_merge(cfg)
    assert run_dir == tmp_path / "runs" / "merge" / "midpoint"
    expected = fusion.merge_linear([_network(10), _network(11)])
    merged = fusion.load_checkpoint(run_dir / "merged.pth")
    assert sorted(merged) == sorted(expected)
    assert all(torch.equal(merged[k], expected[k]) for k in expected)
    assert merged["backbone.bn.num_batches_tracked"].item() == 110 + 120
    from_safetensors = fusion.load_checkpoint(run_dir / "merged.safetensors")
    assert all(torch.equal(from_safetensors[k], expected[k]) for k in expected)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["stage"] == "merge"
    assert manifest["inputs"]["member1"]["sha256"] == sha256_file(members[1])
    assert manifest["outputs"]["merged_pth"]["sha256"] == sha256_file(run_dir / "merged.pth")
    assert (run_dir / "config.yaml").exists()
    # a complete run is skipped, a forced one redone
    stamp = (run_dir / "merged.pth").stat().st_mtime_ns
    run_merge(cfg)
    assert (run_dir / "merged.pth").stat().st_mtime_ns == stamp
    run_merge(_config(tmp_path, members, "midpoint", "network=teacher", "force=true"))
    assert (run_dir / "merged.pth").stat().st_mtime_ns != stamp


NEEDS_FILES = {"regmean": "grams", "fisher": "fishers"}
NEEDS_DATA = ("adamerging", "repair")


@pytest.mark.parametrize("method", [m for m in METHODS if m not in NEEDS_FILES and m not in NEEDS_DATA])
def test_every_fusion_config_runs(tmp_path, members, method):
    extra = ["fusion.weights=[0.25,0.75]"] if method == "weighted" else []
    run_dir = run_merge(_config(tmp_path, members, method, *extra))
    students = [_network(0), _network(1)]
    outputs = sorted(run_dir.glob("**/merged.pth"))
    assert len(outputs) == (2 if method == "encoder_only" else 1)
    results = [fusion.load_checkpoint(p) for p in outputs]
    if method == "encoder_only":
        for student, result in zip(students, results):  # head<i> keeps member i's head
            assert torch.equal(result["decode_head.conv_seg.bias"], student["decode_head.conv_seg.bias"])
        assert torch.equal(results[0]["backbone.conv.weight"], results[1]["backbone.conv.weight"])
    elif method == "weighted":
        expected = fusion.merge_linear(students, [0.25, 0.75])
        assert all(torch.equal(results[0][k], expected[k]) for k in expected)
    elif method == "task_arithmetic":
        expected = fusion.task_arithmetic(_network(100), students, 0.5)
        assert all(torch.equal(results[0][k], expected[k]) for k in expected)
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "complete"


@pytest.mark.parametrize("method", [*NEEDS_FILES, *NEEDS_DATA])
def test_methods_that_need_statistics_or_data_say_what_they_need(tmp_path, members, method):
    extra = [f"fusion.{NEEDS_FILES[method]}=[]"] if method in NEEDS_FILES else []
    need = "one statistic file per member" if method in NEEDS_FILES else "unlabelled images at merge time"
    with pytest.raises(ValueError, match=need):
        run_merge(_config(tmp_path, members, method, *extra))
    assert json.loads((tmp_path / "runs" / "merge" / method / "manifest.json").read_text())["status"] == "failed"


def test_regmean_and_fisher_read_one_statistic_file_per_member(tmp_path, members):
    """With equal statistics both methods give the plain average (docs/merging_methods.md)."""
    students = [_network(0), _network(1)]
    ones = {"backbone.conv.weight": torch.eye(27), "decode_head.conv_seg.weight": torch.eye(4)}
    files = {}
    for kind, name, statistic in (("regmean_gram", "grams", ones),
                                  ("fisher", "fishers", {k: torch.ones_like(v) for k, v in students[0].items()
                                                         if v.is_floating_point() and "running" not in k})):
        files[name] = [tmp_path / f"{name}{i}.safetensors" for i in range(2)]
        for path in files[name]:
            fusion.save_statistic(statistic, path, kind)
    expected = fusion.merge_linear(students)
    for method, key in (("regmean", "grams"), ("fisher", "fishers")):
        listing = "[" + ",".join(str(p) for p in files[key]) + "]"
        run_dir = run_merge(_config(tmp_path, members, method, f"fusion.{key}={listing}"))
        merged = fusion.load_checkpoint(run_dir / "merged.safetensors")
        for k, v in expected.items():
            torch.testing.assert_close(merged[k], v, rtol=1e-6, atol=1e-6)


def test_task_vectors_start_from_the_members_initial_weights_or_the_named_network(tmp_path, members):
    students = [_network(0), _network(1)]
    run_dir = run_merge(_config(tmp_path, members, "task_arithmetic", "name=initial"))
    expected = fusion.task_arithmetic(_network(100), students, 0.5)
    merged = fusion.load_checkpoint(run_dir / "merged.safetensors")
    assert all(torch.equal(merged[k], expected[k]) for k in expected)
    run_dir = run_merge(_config(tmp_path, members, "task_arithmetic", "name=imnet", "fusion.base_network=imagenet"))
    expected = fusion.task_arithmetic(_network(200), students, 0.5)
    merged = fusion.load_checkpoint(run_dir / "merged.safetensors")
    assert all(torch.equal(merged[k], expected[k]) for k in expected)


def test_members_from_different_starts_share_no_task_vector_base(tmp_path, members):
    save_file(_network(300), str(members[1].parent / "initial.safetensors"))
    with pytest.raises(ValueError, match="started from different weights"):
        run_merge(_config(tmp_path, members, "ties", "name=different"))
    (members[1].parent / "initial.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="initial.safetensors"):
        run_merge(_config(tmp_path, members, "ties", "name=absent"))
    assert run_merge(_config(tmp_path, members, "midpoint", "name=fine")).is_dir()  # needs no theta_0


def test_bad_configs_are_refused(tmp_path, members):
    with pytest.raises(ValueError, match="weights"):
        run_merge(_config(tmp_path, members, "weighted", "fusion.weights=[0.5,0.7]"))
    with pytest.raises(ValueError, match="members is empty"):
        run_merge(_config(tmp_path, members, "midpoint", "members=[]"))
    missing = tmp_path / "absent.pth"
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        run_merge(_config(tmp_path, [members[0], missing], "midpoint", "name=missing"))


def test_command_line(tmp_path, members):
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    result = subprocess.run(
        [sys.executable, "-m", "experiments.merge", f"members=[{members[0]},{members[1]}]",
         "name=cli", f"runs_root={tmp_path / 'runs'}", "fusion=encoder_only"],
        cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = tmp_path / "runs" / "merge" / "cli"
    assert (run_dir / "head0" / "merged.safetensors").exists()
    assert (run_dir / "head1" / "merged.pth").exists()


def test_a_merge_refused_for_nan_weights_names_the_key_and_records_failed(tmp_path, members):
    bad = torch.load(members[1], weights_only=False)
    bad["state_dict"]["model.backbone.conv.weight"][0, 0, 0, 0] = float("nan")
    torch.save(bad, members[1])
    cfg = _config(tmp_path, members, "midpoint")
    with pytest.raises(ValueError, match=r"backbone\.conv\.weight"):
        run_merge(cfg)
    manifest = json.loads((tmp_path / "runs" / "merge" / "midpoint" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "backbone.conv.weight" in manifest["error"]


def test_encoder_only_heads_are_run_folders_named_in_the_merge_manifest(tmp_path, members):
    from experiments.inference import sources
    from experiments.infra.runs import finish_run, start_run

    # Members inside training run folders: their manifests say the network and the targets.
    for member, target in zip(members, ("cityscapes", "idd")):
        start_run(member.parent, "train", stand_in=True)
        finish_run(member.parent, {"model": member}, targets=[target],
                   model={"segmentor": "mini_r18", "overrides": {}, "network": "student"})
    run_dir = run_merge(_config(tmp_path, [m.parent for m in members], "encoder_only"))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [h["domains"] for h in manifest["heads"]] == [["cityscapes"], ["idd"]]
    assert manifest["stand_in"] is True and manifest["model"]["network"] == "merged"
    source = sources.from_run(run_dir)
    assert source.weights_for("idd").path == run_dir / "head1" / "merged.safetensors"
    with pytest.raises(ValueError, match="no head for domain 'acdc'"):
        source.weights_for("acdc")
    head = json.loads((run_dir / "head0" / "manifest.json").read_text())
    assert head["status"] == "complete" and head["model"]["segmentor"] == "mini_r18" and "heads" not in head
    assert sources.from_run(run_dir / "head0").weights[0].path == run_dir / "head0" / "merged.safetensors"
