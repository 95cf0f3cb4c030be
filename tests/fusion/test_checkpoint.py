"""fusion checkpoint I/O: DAFormer-style reading, merged output, streaming merges."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import fusion
from experiments.infra.runs import sha256_file
from state_dicts import random_state


def _state(seed):
    return random_state(seed, mixed_dtypes=True)


def _daformer_checkpoint(path, student, teacher, imagenet=None):
    state = {f"model.{k}": v for k, v in student.items()}
    state.update({f"ema_model.{k}": v for k, v in teacher.items()})
    if imagenet is not None:
        state.update({f"imnet_model.{k}": v for k, v in imagenet.items()})
    torch.save({"state_dict": state, "meta": {"iter": 40000}}, path)


def _same(a, b):  # safetensors files do not keep key order
    return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)


def test_student_teacher_and_imagenet_selection(tmp_path):
    student, teacher, imagenet = _state(0), _state(1), _state(2)
    path = tmp_path / "iter_40000.pth"
    _daformer_checkpoint(path, student, teacher, imagenet)
    assert _same(fusion.load_checkpoint(path, "student"), student)
    assert _same(fusion.load_checkpoint(path, "teacher"), teacher)
    assert _same(fusion.load_checkpoint(path, "imagenet"), imagenet)


def test_plain_mmseg_and_safetensors_checkpoints(tmp_path):
    state = _state(3)
    torch.save({"state_dict": state, "meta": {}}, tmp_path / "plain.pth")
    torch.save(state, tmp_path / "bare.pth")
    save_file(state, str(tmp_path / "weights.safetensors"))
    for name in ("plain.pth", "bare.pth", "weights.safetensors"):
        assert _same(fusion.load_checkpoint(tmp_path / name, "teacher"), state)


def test_checkpoint_errors_name_the_file(tmp_path):
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        fusion.load_checkpoint(missing)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(ValueError, match="cannot read checkpoint .*corrupt.pth"):
        fusion.load_checkpoint(corrupt)
    truncated = tmp_path / "cut.safetensors"
    save_file(_state(0), str(truncated))
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(ValueError, match="cut.safetensors"):
        fusion.load_checkpoint(truncated)
    student_only = tmp_path / "student_only.pth"
    torch.save({"state_dict": {f"model.{k}": v for k, v in _state(0).items()}}, student_only)
    with pytest.raises(ValueError, match=r"student_only.pth has no teacher network .*'ema_model\.'.*"
                                         r"available prefixes: \['model\.'\]"):
        fusion.load_checkpoint(student_only, "teacher")
    with pytest.raises(ValueError, match="network 'ema'"):
        fusion.load_checkpoint(student_only, "ema")
    no_tensors = tmp_path / "meta_only.pth"
    torch.save({"state_dict": {}, "meta": {}}, no_tensors)
    with pytest.raises(ValueError, match="meta_only.pth holds no state dict"):
        fusion.load_checkpoint(no_tensors)


def test_save_merged_writes_loadable_files_with_hashes(tmp_path):
    merged = fusion.merge_linear([_state(0), _state(1)])
    paths = fusion.save_merged(merged, tmp_path / "out", {"members": ["a", "b"], "method": "midpoint"})
    assert _same(load_file(paths["safetensors"]), merged)
    saved = torch.load(paths["pth"], weights_only=True)
    assert _same(saved["state_dict"], merged) and saved["meta"]["method"] == "midpoint"
    manifest = json.loads(paths["manifest"].read_text())
    for path in (paths["safetensors"], paths["pth"]):
        assert manifest["files"][path.name]["sha256"] == sha256_file(path)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "manifest.json", "merged.pth", "merged.safetensors"]  # no temporary files left
    assert _same(fusion.load_checkpoint(paths["pth"]), merged)


def test_failed_save_leaves_no_partial_file(tmp_path, monkeypatch):
    fusion.save_merged({"w": torch.zeros(2)}, tmp_path, {})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def crash_halfway(obj, path):
        open(path, "wb").write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(fusion.checkpoint.torch, "save", crash_halfway)
    with pytest.raises(OSError, match="disk full"):
        fusion.save_merged({"w": torch.ones(2)}, tmp_path, {})
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before  # the old files, whole, and no temporary file left behind


def test_merged_pth_loads_into_mmseg_resnet_strictly(tmp_path):
    from mmengine.runner import load_checkpoint as mmengine_load
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules()
    torch.manual_seed(0)
    config = dict(type="ResNetV1c", depth=18)
    members = []
    for seed in range(2):
        model = MODELS.build(config)
        model.train()
        model(torch.randn(2, 3, 32, 32))  # real running statistics and counters
        members.append(model.state_dict())
    paths = fusion.save_merged(fusion.merge_linear(members), tmp_path, {"method": "midpoint"})
    target = MODELS.build(config)
    target.load_state_dict(torch.load(paths["pth"], weights_only=True)["state_dict"], strict=True)
    mmengine_load(MODELS.build(config), str(paths["pth"]), strict=True)
    counter = target.layer1[0].bn1.num_batches_tracked
    assert counter.dtype == torch.int64 and counter.item() == 2


@pytest.mark.parametrize("buffers", ["pooled", "pooled_by_weight", "first"])
def test_streaming_merge_equals_in_memory_merge(tmp_path, buffers):
    states = [_state(seed) for seed in range(3)]
    paths = []
    for index, state in enumerate(states):
        paths.append(tmp_path / f"m{index}.safetensors")
        save_file(state, str(paths[-1]))
    weights = [0.2, 0.5, 0.3]
    out = fusion.merge_safetensors_files(paths, weights, buffers, out_path=tmp_path / "o.safetensors",
                                         metadata={"method": "weighted"})
    streamed, expected = load_file(out), fusion.merge_linear(states, weights, buffers)
    assert sorted(streamed) == sorted(expected)
    assert all(torch.equal(streamed[k], expected[k]) and streamed[k].dtype == expected[k].dtype
               for k in expected)
    assert _same(fusion.load_checkpoint(out), {k: streamed[k] for k in streamed})


def test_streaming_merge_refuses_like_the_in_memory_one(tmp_path):
    good, bad = _state(0), _state(1)
    bad["backbone.conv.weight"][0, 0, 0, 0] = float("nan")
    save_file(good, str(tmp_path / "good.safetensors"))
    save_file(bad, str(tmp_path / "bad.safetensors"))
    out = tmp_path / "out.safetensors"
    with pytest.raises(ValueError, match="NaN or Inf.*backbone.conv.weight"):
        fusion.merge_safetensors_files([tmp_path / "good.safetensors", tmp_path / "bad.safetensors"],
                                       out_path=out)
    assert not out.exists()
    del bad["decode_head.conv_seg.bias"]
    save_file(bad, str(tmp_path / "short.safetensors"))
    with pytest.raises(ValueError, match="missing keys.*decode_head.conv_seg.bias.*short.safetensors"):
        fusion.merge_safetensors_files([tmp_path / "good.safetensors", tmp_path / "short.safetensors"],
                                       out_path=out)
    with pytest.raises(FileNotFoundError, match="absent.safetensors"):
        fusion.merge_safetensors_files([tmp_path / "absent.safetensors"], out_path=out)
