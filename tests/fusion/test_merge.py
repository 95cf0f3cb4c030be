"""fusion: linear merges, BatchNorm pooling, refusals and the literature baselines."""

import math

import pytest
import torch

import fusion
from fusion.batchnorm import merge_batchnorm_statistics
from state_dicts import random_state as _random_state


def _bn_state(mean, var, count, weight=None):
    channels = mean.numel()
    weight = torch.ones(channels, dtype=mean.dtype) if weight is None else weight
    return {"conv.weight": weight.clone(), "bn.weight": weight.clone(),
            "bn.bias": torch.zeros(channels, dtype=mean.dtype), "bn.running_mean": mean,
            "bn.running_var": var, "bn.num_batches_tracked": torch.tensor(count)}


@pytest.mark.parametrize("count", [2, 3, 4, 5])
def test_pooled_statistics_equal_statistics_of_pooled_data(count):
    # Model k saw n_k batches of B activations. Its BatchNorm statistics are
    # defined as the mean and biased variance of everything it saw (what a
    # cumulative, momentum=None average of batch means gives for the mean), and
    # num_batches_tracked = n_k. Pooling must give the statistics of all the
    # activations of all the models together.
    generator = torch.Generator().manual_seed(count)
    batch, channels = 8, 5
    data, states = [], []
    for k in range(count):
        batches = int(torch.randint(1, 12, (), generator=generator))
        x = torch.randn(batches * batch, channels, generator=generator, dtype=torch.float64)
        x = x * (k + 1) + 3.0 * k  # different scale and centre per model
        data.append(x)
        states.append(_bn_state(x.mean(0), x.var(0, unbiased=False), batches))
    merged = fusion.merge_linear(states, buffers="pooled")
    everything = torch.cat(data)
    torch.testing.assert_close(merged["bn.running_mean"], everything.mean(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(merged["bn.running_var"], everything.var(0, unbiased=False),
                               rtol=1e-12, atol=1e-12)
    assert merged["bn.num_batches_tracked"].item() == sum(len(x) // batch for x in data)
    # averaging the variances like weights misses the spread between the means
    averaged = fusion.merge_linear(states, buffers="average")
    assert (averaged["bn.running_var"] < merged["bn.running_var"]).all()


def test_pooled_mean_matches_a_batchnorm_that_saw_all_batches():
    torch.manual_seed(0)
    layers, all_batches = [], []
    for batches in (3, 7):
        layer = torch.nn.BatchNorm1d(4, momentum=None)  # cumulative average
        for _ in range(batches):
            x = torch.randn(16, 4) * 2 + torch.randn(4)
            layer(x)
            all_batches.append(x)
        layers.append(layer.state_dict())
    joint = torch.nn.BatchNorm1d(4, momentum=None)
    for x in all_batches:
        joint(x)
    merged = fusion.merge_linear(layers, buffers="pooled")
    torch.testing.assert_close(merged["running_mean"], joint.running_mean, rtol=1e-6, atol=1e-6)
    assert merged["num_batches_tracked"].dtype == torch.int64
    assert merged["num_batches_tracked"].item() == 10


@pytest.mark.parametrize("count", [2, 3, 4, 5])
def test_weighted_average_of_parameters_any_count(count):
    states = [_random_state(seed) for seed in range(count)]
    weights = torch.rand(count, dtype=torch.float64)
    weights = (weights / weights.sum()).tolist()
    merged = fusion.merge_linear(states, weights)
    for key in ("backbone.conv.weight", "decode_head.conv_seg.bias"):
        expected = sum(w * s[key].double() for w, s in zip(weights, states)).float()
        assert torch.equal(merged[key], expected)
        assert merged[key].dtype == torch.float32
    assert list(merged) == list(states[0])


def test_midpoint_of_identical_models_is_the_model():
    state = _random_state(0)
    for count in (2, 3):
        merged = fusion.merge_linear([state] * count)
        for key, value in state.items():
            if key.endswith("num_batches_tracked"):
                assert merged[key].item() == count * value.item()  # pooled data: N = sum n_k
            else:
                assert torch.equal(merged[key], value), key


def test_interpolation_endpoints_are_the_inputs_exactly():
    a, b = _random_state(1), _random_state(2)
    for alpha, expected in ((0.0, a), (1.0, b)):
        point = fusion.interpolate(a, b, alpha)
        for key in a:
            assert torch.equal(point[key], expected[key]), (alpha, key)
            assert point[key].dtype == expected[key].dtype
    middle = fusion.interpolate(a, b, 0.3)
    direct = fusion.merge_linear([a, b], [0.7, 0.3], buffers="pooled_by_weight")
    assert all(torch.equal(middle[k], direct[k]) for k in a)
    with pytest.raises(ValueError, match="alpha 1.5"):
        fusion.interpolate(a, b, 1.5)


@pytest.mark.parametrize("weights, message", [
    ([0.5, 0.6], r"sum to"), ([1.5, -0.5], r"non-negative"), ([1.0], r"1 entries for 2"),
    ([float("nan"), 1.0], r"non-negative"),
])
def test_weights_are_checked(weights, message):
    with pytest.raises(ValueError, match=r"weights \[.*" + message):
        fusion.merge_linear([_random_state(0), _random_state(1)], weights)


def test_refusals_name_the_keys():
    a, b = _random_state(0), _random_state(1)
    missing = dict(b)
    del missing["decode_head.conv_seg.bias"]
    with pytest.raises(ValueError, match="missing keys.*decode_head.conv_seg.bias"):
        fusion.merge_linear([a, missing])
    with pytest.raises(ValueError, match="keys that model 0 lacks.*'extra.weight'"):
        fusion.merge_linear([a, {**b, "extra.weight": torch.zeros(1)}])
    with pytest.raises(ValueError, match=r"shape mismatch.*backbone.bn.bias \(4,\) vs \(5,\)"):
        fusion.merge_linear([a, {**b, "backbone.bn.bias": torch.zeros(5)}])
    with pytest.raises(ValueError, match="dtype mismatch.*decode_head.conv_seg.bias"):
        fusion.merge_linear([a, {**b, "decode_head.conv_seg.bias": torch.zeros(19).half()}])
    for bad in (float("nan"), float("inf")):
        weight = b["backbone.conv.weight"].clone()
        weight[1, 2, 0, 0] = bad
        with pytest.raises(ValueError, match=r"\[1\] hold NaN or Inf.*backbone.conv.weight"):
            fusion.merge_linear([a, {**b, "backbone.conv.weight": weight}])
        with pytest.raises(ValueError, match=r"NaN or Inf.*backbone.conv.weight"):
            fusion.merge_linear([a, {**b, "backbone.conv.weight": weight}], [1.0, 0.0])
    mean = b["backbone.bn.running_mean"].clone()
    mean[0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf.*backbone.bn.running_mean"):
        fusion.merge_linear([a, {**b, "backbone.bn.running_mean": mean}])
    index_a = {**a, "attn.relative_position_index": torch.arange(4)}
    index_b = {**b, "attn.relative_position_index": torch.arange(4).flip(0)}
    with pytest.raises(ValueError, match="attn.relative_position_index"):
        fusion.merge_linear([index_a, index_b])
    with pytest.raises(ValueError, match="without their pair.*'lonely.running_mean'"):
        fusion.merge_linear([{"lonely.running_mean": torch.zeros(2)}] * 2)
    with pytest.raises(ValueError, match="unknown buffers rule 'mean'"):
        fusion.merge_linear([a, b], buffers="mean")
    with pytest.raises(ValueError, match="no state dicts"):
        fusion.merge_linear([])


def test_pooling_needs_counts():
    zero = _bn_state(torch.zeros(3), torch.ones(3), 0)
    with pytest.raises(ValueError, match=r"bn\.: num_batches_tracked \[0, 0\]"):
        fusion.merge_linear([zero, zero])
    merged = fusion.merge_linear([zero, zero], buffers="pooled_by_weight")
    assert torch.equal(merged["bn.running_var"], torch.ones(3))


def test_counters_stay_integers_and_are_never_truncated():
    a = _bn_state(torch.zeros(2), torch.ones(2), 3)
    b = _bn_state(torch.ones(2), torch.ones(2), 4)
    for rule, expected in (("pooled", 7), ("pooled_by_weight", 7), ("average", 7), ("first", 3)):
        merged = fusion.merge_linear([a, b], buffers=rule)
        assert merged["bn.num_batches_tracked"].dtype == torch.int64
        assert merged["bn.num_batches_tracked"].item() == expected
    # a member with weight 0 contributed no data to a pooled_by_weight merge
    assert fusion.interpolate(a, b, 0.0)["bn.num_batches_tracked"].item() == 3
    big = torch.tensor(2**31 - 10, dtype=torch.int32)
    counters = [{"step.num_batches_tracked": big}] * 2
    with pytest.raises(ValueError, match="step.num_batches_tracked.*overflows torch.int32"):
        fusion.merge_linear(counters)


def test_buffer_rules():
    a = _bn_state(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 1.0]), 1)
    b = _bn_state(torch.tensor([2.0, 2.0]), torch.tensor([3.0, 1.0]), 3)
    pooled = fusion.merge_linear([a, b], buffers="pooled")  # pi = (1/4, 3/4)
    assert torch.equal(pooled["bn.running_mean"], torch.tensor([1.5, 2.0]))
    # var = 1/4 (1 + 1.5^2) + 3/4 (3 + 0.5^2) = 0.8125 + 2.4375
    assert torch.equal(pooled["bn.running_var"], torch.tensor([3.25, 1.0]))
    by_weight = fusion.merge_linear([a, b], buffers="pooled_by_weight")  # pi = (1/2, 1/2)
    assert torch.equal(by_weight["bn.running_var"], torch.tensor([3.0, 1.0]))
    average = fusion.merge_linear([a, b], buffers="average")
    assert torch.equal(average["bn.running_var"], torch.tensor([2.0, 1.0]))
    first = fusion.merge_linear([a, b], buffers="first")
    assert torch.equal(first["bn.running_mean"], a["bn.running_mean"])
    assert torch.equal(first["bn.running_var"], a["bn.running_var"])
    means = [a["bn.running_mean"], b["bn.running_mean"]]
    variances = [a["bn.running_var"], b["bn.running_var"]]
    mean, var, count = merge_batchnorm_statistics(means, variances, rule="pooled_by_weight")
    assert count is None and torch.equal(var, by_weight["bn.running_var"])
    with pytest.raises(ValueError, match="layer1.bn: no num_batches_tracked"):
        merge_batchnorm_statistics(means, variances, rule="pooled", key="layer1.bn")


def test_encoder_only_merge_keeps_each_head():
    states = [_random_state(seed) for seed in range(3)]
    heads = fusion.merge_by_prefix(states, "backbone.")
    whole = fusion.merge_linear(states)
    assert len(heads) == 3
    for state, result in zip(states, heads):
        assert list(result) == list(state)
        for key in state:
            expected = whole[key] if key.startswith("backbone.") else state[key]
            assert torch.equal(result[key], expected), key
    with pytest.raises(ValueError, match="no key starts with.*'encoder.'"):
        fusion.merge_by_prefix(states, "encoder.")


def test_merged_model_loads_and_runs():
    """A merged state dict loads strictly into the network and computes, in eval mode, the
    convolution with the averaged weights normalised by the pooled statistics."""
    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)) for _ in range(3)]
    for k, net in enumerate(nets):
        for _ in range(k + 1):  # different counts: pi_k = n_k / N is not uniform
            net(torch.randn(2, 3, 8, 8) + k)
    merged = fusion.merge_linear([n.state_dict() for n in nets])
    target = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    target.load_state_dict(merged, strict=True)
    assert target[1].num_batches_tracked.item() == 1 + 2 + 3
    x = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        out = target.eval()(x)
        weight = sum(n[0].weight for n in nets) / 3
        bias = sum(n[0].bias for n in nets) / 3
        pi = torch.tensor([1.0, 2.0, 3.0]) / 6
        mean = sum(p * n[1].running_mean for p, n in zip(pi, nets))
        var = sum(p * (n[1].running_var + (n[1].running_mean - mean) ** 2) for p, n in zip(pi, nets))
        gamma = sum(n[1].weight for n in nets) / 3
        beta = sum(n[1].bias for n in nets) / 3
        y = torch.nn.functional.conv2d(x, weight, bias)
        expected = (y - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + 1e-5) * \
            gamma.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_task_arithmetic_by_hand():
    base = {"w": torch.tensor([1.0, 1.0, 1.0])}
    tuned = [{"w": torch.tensor([2.0, 1.0, 0.0])}, {"w": torch.tensor([1.0, 3.0, 0.0])}]
    # tau_1 = (1, 0, -1), tau_2 = (0, 2, -1); sum = (1, 2, -2)
    merged = fusion.task_arithmetic(base, tuned, scale=0.5)
    assert torch.equal(merged["w"], torch.tensor([1.5, 2.0, 0.0]))
    assert torch.equal(fusion.task_arithmetic(base, tuned, 0.5)["w"],
                       fusion.merge_linear(tuned)["w"])  # scale 1/K is the midpoint


def test_task_arithmetic_pools_the_finetuned_statistics():
    base = _random_state(0)
    tuned = [_random_state(1), _random_state(2)]
    merged = fusion.task_arithmetic(base, tuned, 0.3)
    pooled = fusion.merge_linear(tuned)
    for key in ("backbone.bn.running_mean", "backbone.bn.running_var",
                "backbone.bn.num_batches_tracked"):
        assert torch.equal(merged[key], pooled[key])


def test_ties_merging_by_hand():
    base = {"a": torch.zeros(4), "b": torch.zeros(2)}
    tuned = [
        {"a": torch.tensor([3.0, -1.0, 0.5, 2.0]), "b": torch.tensor([-4.0, 0.1])},
        {"a": torch.tensor([-2.0, -3.0, 0.2, 1.0]), "b": torch.tensor([1.0, 5.0])},
        {"a": torch.tensor([1.0, 0.3, -6.0, -0.1]), "b": torch.tensor([2.0, 0.0])},
    ]
    # density 0.5 of 6 entries: keep the 3 largest magnitudes of each task vector
    #   1: (3, 0, 0, 2 | -4, 0)   2: (-2, -3, 0, 0 | 0, 5)   3: (1, 0, -6, 0 | 2, 0)
    # elected signs of the sums (2, -3, -6, 2 | -2, 5): (+, -, -, + | -, +)
    # disjoint means: (3+1)/2, -3, -6, 2 | -4, 5
    merged = fusion.ties_merging(base, tuned, density=0.5, scale=1.0)
    assert torch.equal(merged["a"], torch.tensor([2.0, -3.0, -6.0, 2.0]))
    assert torch.equal(merged["b"], torch.tensor([-4.0, 5.0]))
    half = fusion.ties_merging(base, tuned, density=0.5, scale=0.5)
    assert torch.equal(half["a"], torch.tensor([1.0, -1.5, -3.0, 1.0]))
    with pytest.raises(ValueError, match="density 0.0"):
        fusion.ties_merging(base, tuned, density=0.0)


def test_ties_with_full_density_and_agreeing_signs_is_the_mean():
    base = _random_state(0)
    tuned = [{k: v + 1.0 if v.is_floating_point() else v for k, v in base.items()},
             {k: v + 3.0 if v.is_floating_point() else v for k, v in base.items()}]
    merged = fusion.ties_merging(base, tuned, density=1.0)
    key = "backbone.conv.weight"
    torch.testing.assert_close(merged[key], base[key] + 2.0, rtol=0, atol=1e-6)


def test_slerp_endpoints_norm_and_fallback():
    a, b = _random_state(3), _random_state(4)
    for t, expected in ((0.0, a), (1.0, b)):
        point = fusion.slerp(a, b, t)
        assert all(torch.equal(point[k], expected[k]) for k in a)
    x = {"w": torch.tensor([1.0, 0.0, 0.0]), "v": torch.tensor([2.0, 0.0])}
    y = {"w": torch.tensor([0.0, 1.0, 0.0]), "v": torch.tensor([4.0, 0.0])}  # v: colinear
    middle = fusion.slerp(x, y, 0.5)
    half = 1 / math.sqrt(2)
    torch.testing.assert_close(middle["w"], torch.tensor([half, half, 0.0]))
    assert torch.equal(middle["v"], torch.tensor([3.0, 0.0]))  # straight line
    # tensors of equal norm keep it all along the arc (a straight line would not)
    generator = torch.Generator().manual_seed(0)
    p, q = torch.randn(50, generator=generator), torch.randn(50, generator=generator)
    q = q * p.norm() / q.norm()
    for t in (0.2, 0.5, 0.9):
        norm = fusion.slerp({"w": p}, {"w": q}, t)["w"].norm()
        torch.testing.assert_close(norm, p.norm(), rtol=1e-5, atol=0)
    assert ((0.5 * p + 0.5 * q).norm() < p.norm() - 1e-3)


@pytest.mark.parametrize("rule", ["pooled", "pooled_by_weight", "average", "first"])
def test_many_layers_pooled_together_equal_each_layer_pooled_alone(rule):
    # merge_linear pools the statistics of many BatchNorm layers as one tensor;
    # each layer has its own counters, so its own pi_k, and the result must be
    # exactly that of merge_batchnorm_statistics on the layer alone.
    generator = torch.Generator().manual_seed(3)
    dtypes = [torch.float32, torch.float64, torch.float16]
    states = [{} for _ in range(3)]
    for layer in range(40):
        channels = [3, 64, 700][layer % 3]
        dtype = dtypes[layer % len(dtypes)]
        for index, state in enumerate(states):
            state[f"l{layer}.running_mean"] = torch.randn(channels, generator=generator).to(dtype)
            state[f"l{layer}.running_var"] = (torch.rand(channels, generator=generator) + 0.1).to(dtype)
            state[f"l{layer}.num_batches_tracked"] = torch.tensor(1 + (layer * 7 + index * 13) % 50)
    weights = [0.5, 0.2, 0.3]
    merged = fusion.merge_linear(states, weights, buffers=rule)
    for layer in range(40):
        keys = [f"l{layer}.{leaf}" for leaf in ("running_mean", "running_var", "num_batches_tracked")]
        alone = merge_batchnorm_statistics(*[[s[k] for s in states] for k in keys], weights, rule)
        for key, expected in zip(keys, alone):
            assert torch.equal(merged[key], expected) and merged[key].dtype == expected.dtype, key
            assert merged[key].untyped_storage().nbytes() == expected.numel() * expected.element_size()
