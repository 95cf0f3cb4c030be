"""fusion.native: the compiled weighted-sum kernel, its build, and the torch fallback."""

import os
import warnings

import pytest
import torch

import fusion
from fusion import native
from fusion.linear import _weighted_sum_torch, weighted_sum


@pytest.fixture
def fresh_native(monkeypatch, tmp_path):
    """A private kernel cache and a kernel loaded anew; restored afterwards."""
    monkeypatch.setenv("MTDA_NATIVE_CACHE", str(tmp_path / "native"))
    monkeypatch.delenv("MTDA_NATIVE", raising=False)
    native.reset()
    yield tmp_path / "native"
    native.reset()


@pytest.fixture
def kernel(fresh_native):
    try:
        native.find_compiler()
    except native.NativeUnavailable as error:
        pytest.skip(f"no C compiler: {error}")
    loaded = native.kernel()
    assert loaded is not None, native.describe()
    return loaded


def _inputs(count, size, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(size, generator=generator, dtype=torch.float64).mul(3).to(dtype)
            for _ in range(count)]


def _torch_path(tensors, weights):
    out = torch.empty_like(tensors[0])
    assert not _weighted_sum_torch(tensors, weights, out, None)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 8, 9, 11])
@pytest.mark.parametrize("size", [0, 1, 7, 2047, 2048, 2049, 70_001])
def test_kernel_equals_torch_operations_bit_for_bit(kernel, dtype, count, size):
    tensors = _inputs(count, size, dtype, seed=size + count)
    weights = torch.rand(count, dtype=torch.float64, generator=torch.Generator().manual_seed(count))
    weights = (weights / weights.sum()).tolist()
    out = torch.empty_like(tensors[0])
    assert kernel.weighted_sum(tensors, weights, out) is False
    assert torch.equal(out, _torch_path(tensors, weights))
    # the float64 sum (here without fused multiply-adds), rounded once to the input dtype:
    # float32 outputs hide the fused/unfused difference, float64 ones show it in the last bit
    reference = sum(w * t.double() for w, t in zip(weights, tensors))
    if dtype == torch.float32:
        assert torch.equal(out, reference.float())
    else:
        scale = sum(w * t.abs() for w, t in zip(weights, tensors))  # error bound of the sum
        assert bool(((out - reference).abs() <= count * 2.3e-16 * scale).all())


def test_kernel_flags_nan_inf_and_overflow(kernel):
    for bad in (float("nan"), float("inf"), -float("inf")):
        tensors = _inputs(2, 5000, torch.float32)
        tensors[1][4321] = bad
        assert kernel.weighted_sum(tensors, [0.5, 0.5], torch.empty(5000)) is True
    big = [torch.full((3,), 3e38), torch.full((3,), 3e38)]
    assert kernel.weighted_sum(big, [1.0, 1.0], torch.empty(3)) is True  # sum beyond float32
    assert kernel.weighted_sum(big, [0.5, 0.5], torch.empty(3)) is False


def test_kernel_declines_what_it_does_not_handle(kernel):
    half = _inputs(2, 100, torch.float16)
    assert kernel.weighted_sum(half, [0.5, 0.5], torch.empty(100, dtype=torch.float16)) is None
    strided = [torch.randn(10, 20).t(), torch.randn(10, 20).t()]
    assert kernel.weighted_sum(strided, [0.5, 0.5], torch.empty(20, 10)) is None
    mixed = [torch.randn(100), torch.randn(100, dtype=torch.float64)]
    assert kernel.weighted_sum(mixed, [0.5, 0.5], torch.empty(100)) is None
    # merges of such tensors still follow the contract, on torch operations
    merged = weighted_sum(half, [0.25, 0.75], "k")
    assert torch.equal(merged, (0.25 * half[0].double() + 0.75 * half[1].double()).half())
    merged = weighted_sum(strided, [0.25, 0.75], "k")
    assert torch.equal(merged, (0.25 * strided[0].double() + 0.75 * strided[1].double()).float())


def test_build_is_cached_and_leaves_no_temporary_files(kernel, fresh_native):
    files = sorted(p.name for p in fresh_native.iterdir())
    assert len(files) == 1 and files[0].startswith("weighted_sum-") and files[0].endswith(".so")
    stamp = (fresh_native / files[0]).stat().st_mtime_ns
    native.reset()
    assert native.build() == fresh_native / files[0]
    assert (fresh_native / files[0]).stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert "compiled kernel" in native.describe()


def _merge_both_ways(monkeypatch, states, **options):
    results = {}
    for setting in ("1", "0"):
        monkeypatch.setenv("MTDA_NATIVE", setting)
        native.reset()
        results[setting] = fusion.merge_linear(states, **options)
    return results["1"], results["0"]


def test_merge_is_the_same_on_both_engines(kernel, monkeypatch):
    generator = torch.Generator().manual_seed(0)
    states = [{"a.weight": torch.randn(3000, 17, generator=generator),  # large: one tensor
               "b.weight": torch.randn(5, generator=generator),        # small: batched
               "c.weight": torch.randn(64, 64, generator=generator, dtype=torch.float64),
               "bn.running_mean": torch.randn(5, generator=generator),
               "bn.running_var": torch.rand(5, generator=generator) + 0.5,
               "bn.num_batches_tracked": torch.tensor(7 + i)} for i in range(3)]
    compiled, plain = _merge_both_ways(monkeypatch, states, weights=[0.2, 0.3, 0.5])
    assert list(compiled) == list(plain)
    assert all(torch.equal(compiled[k], plain[k]) and compiled[k].dtype == plain[k].dtype
               for k in plain)
    assert native.describe() == "torch operations (MTDA_NATIVE=0)"


@pytest.mark.parametrize("setting", ["1", "0"])
def test_refusal_names_the_key_on_either_engine(kernel, monkeypatch, setting):
    monkeypatch.setenv("MTDA_NATIVE", setting)
    native.reset()
    good = {"big.weight": torch.zeros(9000), "tiny.bias": torch.zeros(3)}
    for key in good:
        bad = {k: v.clone() for k, v in good.items()}
        bad[key][2] = float("nan")
        with pytest.raises(ValueError, match=rf"model\(s\) \[1\] hold NaN or Inf.*{key}"):
            fusion.merge_linear([good, bad])


def test_failed_build_warns_once_and_falls_back(fresh_native, monkeypatch):
    monkeypatch.setenv("CC", "false")  # runs, but compiles nothing
    with pytest.warns(RuntimeWarning, match="compiled merge kernel unavailable.*false failed"):
        assert native.kernel() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second request is silent
        assert native.kernel() is None
        merged = fusion.merge_linear([{"w": torch.ones(5000)}, {"w": torch.zeros(5000)}])
    assert torch.equal(merged["w"], torch.full((5000,), 0.5))
    assert "torch operations" in native.describe() and "false" in native.describe()
    assert not any(fresh_native.glob("*.tmp"))  # the failed build left nothing behind


def test_missing_compiler_is_named(fresh_native, monkeypatch):
    monkeypatch.setenv("CC", "no-such-compiler-here")
    with pytest.raises(native.NativeUnavailable, match="CC='no-such-compiler-here'"):
        native.build()
    monkeypatch.delenv("CC")
    monkeypatch.setenv("PATH", str(fresh_native))  # nothing on PATH
    with pytest.raises(native.NativeUnavailable, match="no C compiler found"):
        native.build()


def test_unwritable_cache_is_named(fresh_native, monkeypatch, tmp_path):
    try:
        native.find_compiler()
    except native.NativeUnavailable as error:
        pytest.skip(f"no C compiler: {error}")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("MTDA_NATIVE_CACHE", str(blocker / "native"))
    with pytest.raises(native.NativeUnavailable, match="not writable"):
        native.build()
    assert os.path.isfile(blocker)
