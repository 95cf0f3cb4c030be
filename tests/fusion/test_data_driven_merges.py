"""fusion: merges that use the domains' data (RegMean, Fisher merging, AdaMerging, REPAIR),
their statistics and files, on a tiny segmentation network."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fusion


class TinySegmenter(nn.Module):
    """conv-BN-ReLU, grouped conv-BN-ReLU, a Linear over channels, a 1x1 classifier."""

    def __init__(self, classes=3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1, groups=3, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.mix = nn.Linear(6, 6)
        self.head = nn.Conv2d(6, classes, 1)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.mix(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.head(x)


def _member(seed, dtype=torch.float32):
    """A domain model's state dict: its own weights, BatchNorm statistics and counters."""
    torch.manual_seed(seed)
    state = TinySegmenter().to(dtype).state_dict()
    for key, value in state.items():
        if key.endswith("running_mean"):
            state[key] = 0.3 * torch.randn_like(value)
        elif key.endswith("running_var"):
            state[key] = torch.rand_like(value) + 0.5
        elif key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(10 * seed + 3)
    return state


def _batches(count=2, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 3, 6, 6, generator=generator, dtype=dtype) for _ in range(count)]


def _random_gram(width, seed, groups=None):
    generator = torch.Generator().manual_seed(seed)
    shape = (width, 2 * width) if groups is None else (groups, width, 2 * width)
    x = torch.randn(*shape, generator=generator, dtype=torch.float64)
    return x @ x.transpose(-1, -2) / (2 * width)


@pytest.fixture(scope="module")
def model():
    return TinySegmenter()


# ----------------------------------------------------------------------------- RegMean


@pytest.mark.parametrize("count", [2, 3, 4])
def test_regmean_with_equal_grams_is_the_average(model, count):
    states = [_member(seed) for seed in range(count)]
    grams = fusion.regmean_grams(model, _batches(), state=states[0])
    merged = fusion.regmean(states, [grams] * count, alpha=0.7)
    average = fusion.merge_linear(states)
    assert list(merged) == list(average)
    for key in merged:
        torch.testing.assert_close(merged[key], average[key], rtol=1e-5, atol=1e-6)
        assert merged[key].dtype == average[key].dtype
    for key in ("bn1.running_mean", "bn1.running_var", "bn2.num_batches_tracked"):
        assert torch.equal(merged[key], average[key])  # statistics pooled, not solved for


def test_regmean_by_hand_on_4x3():
    generator = torch.Generator().manual_seed(1)
    weights = [torch.randn(4, 3, generator=generator, dtype=torch.float64) for _ in range(2)]
    grams = [_random_gram(3, 2), _random_gram(3, 3)]
    alpha = 0.9
    shrunk = [alpha * g + (1 - alpha) * torch.diag(torch.diagonal(g)) for g in grams]
    expected = (weights[0] @ shrunk[0] + weights[1] @ shrunk[1]) @ torch.linalg.inv(shrunk[0] + shrunk[1])
    states = [{"fc.weight": w, "fc.bias": w[:, 0].clone()} for w in weights]
    merged = fusion.regmean(states, [{"fc.weight": g} for g in grams], alpha=alpha)
    torch.testing.assert_close(merged["fc.weight"], expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(merged["fc.bias"], (weights[0][:, 0] + weights[1][:, 0]) / 2)
    # alpha = 0: each input feature j is a Gram-diagonal-weighted average of its column
    diagonal = fusion.regmean(states, [{"fc.weight": g} for g in grams], alpha=0.0)["fc.weight"]
    d = [torch.diagonal(g) for g in grams]
    torch.testing.assert_close(diagonal, (weights[0] * d[0] + weights[1] * d[1]) / (d[0] + d[1]),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("count", [2, 3, 4])
def test_regmean_solves_the_normal_equations_of_a_grouped_conv(count):
    # alpha = 1: W* minimises sum_k |X_k W^T - X_k W_k^T|^2, so sum_k (W* - W_k) G_k = 0 per group
    generator = torch.Generator().manual_seed(count)
    weights = [torch.randn(6, 2, 3, 3, generator=generator, dtype=torch.float64) for _ in range(count)]
    grams = [_random_gram(18, 10 + k, groups=3) for k in range(count)]
    merged = fusion.regmean([{"conv.weight": w} for w in weights],
                            [{"conv.weight": g} for g in grams], alpha=1.0)["conv.weight"]
    residual = sum((merged - w).reshape(3, 2, 18) @ g for w, g in zip(weights, grams))
    assert residual.abs().max() < 1e-10


def test_regmean_averages_input_features_no_domain_saw():
    generator = torch.Generator().manual_seed(4)
    weights = [torch.randn(4, 3, generator=generator, dtype=torch.float64) for _ in range(3)]
    grams = []
    for seed in range(3):
        gram = _random_gram(3, 20 + seed)
        gram[1, :] = 0.0  # feature 1 was zero in every domain's inputs
        gram[:, 1] = 0.0
        grams.append({"fc.weight": gram})
    merged = fusion.regmean([{"fc.weight": w} for w in weights], grams)["fc.weight"]
    torch.testing.assert_close(merged[:, 1], sum(w[:, 1] for w in weights) / 3, rtol=0, atol=1e-12)
    assert torch.isfinite(merged).all()


def test_regmean_grams_are_the_layer_inputs_inner_products():
    # Linear: G = X^T X / N exactly. Conv (reflect padding, stride, dilation, groups):
    # tr(W_g G_g W_g^T) summed over groups is the mean over output positions of |W x|^2,
    # which pins the patch layout against the weight's.
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2, padding_mode="reflect").double()
    network = nn.Sequential(conv, nn.Flatten(2), nn.Linear(16, 5).double())  # 4 x 4 outputs
    x = torch.randn(3, 4, 7, 7, dtype=torch.float64)
    batches = [x[:2], x[2:]]
    grams = fusion.regmean_grams(network, batches)
    assert set(grams) == {"0.weight", "2.weight"}
    assert grams["0.weight"].shape == (2, 18, 18) and grams["2.weight"].shape == (16, 16)
    with torch.no_grad():
        y = conv._conv_forward(x, conv.weight, None)
        rows = network[1](conv(x)).reshape(-1, 16)
    torch.testing.assert_close(grams["2.weight"], rows.T @ rows / rows.shape[0], rtol=1e-12, atol=1e-12)
    per_group = conv.weight.reshape(2, 3, 18)
    energy = sum(torch.trace(w @ g @ w.T) for w, g in zip(per_group, grams["0.weight"]))
    positions = y.shape[0] * y.shape[2] * y.shape[3]
    torch.testing.assert_close(energy, y.square().sum() / positions, rtol=1e-10, atol=0)


def test_regmean_merges_a_network_and_refuses_bad_statistics(model, tmp_path):
    states = [_member(seed) for seed in range(2)]
    grams = [fusion.regmean_grams(model, _batches(seed=k), state=s) for k, s in enumerate(states)]
    assert all(g["conv2.weight"].shape == (3, 18, 18) for g in grams)  # per group
    merged = fusion.regmean(states, grams)
    torch.nn.Module.load_state_dict(TinySegmenter(), merged)
    # a shared Gram file is one safetensors file of known size
    path = tmp_path / "gram.safetensors"
    size = fusion.save_statistic(grams[0], path, "regmean_gram")
    assert size == fusion.statistic_bytes(grams[0]) == 4 * (27 * 27 + 3 * 18 * 18 + 6 * 6 + 6 * 6)
    loaded = fusion.load_statistic(path, "regmean_gram")
    assert all(torch.equal(loaded[k], grams[0][k]) for k in grams[0])
    with pytest.raises(ValueError, match="holds statistic 'regmean_gram', not 'fisher'"):
        fusion.load_statistic(path, "fisher")
    missing = {k: v for k, v in grams[1].items() if k != "mix.weight"}
    with pytest.raises(ValueError, match="model 1 differ in keys.*mix.weight"):
        fusion.regmean(states, [grams[0], missing])
    with pytest.raises(ValueError, match="not float parameters.*bn1.running_var"):
        fusion.regmean(states, [dict(g, **{"bn1.running_var": torch.eye(6)}) for g in grams])
    poisoned = dict(grams[1], **{"head.weight": torch.full((6, 6), float("nan"))})
    with pytest.raises(ValueError, match="model 1 hold NaN or Inf in: 'head.weight'"):
        fusion.regmean(states, [grams[0], poisoned])
    wrong = dict(grams[1], **{"head.weight": torch.eye(5)})
    with pytest.raises(ValueError, match="do not fit weight 'head.weight'"):
        fusion.regmean(states, [dict(grams[0], **{"head.weight": torch.eye(5)}), wrong])
    with pytest.raises(ValueError, match="alpha"):
        fusion.regmean(states, grams, alpha=1.5)


# ------------------------------------------------------------------------------ Fisher


@pytest.mark.parametrize("count", [2, 3, 4])
def test_fisher_merge_with_equal_fishers_is_the_weighted_average(model, count):
    states = [_member(seed) for seed in range(count)]
    fisher = fusion.fisher_information(model, _batches(), state=states[0], labels="argmax")
    weights = torch.softmax(torch.arange(count, dtype=torch.float64), 0).tolist()
    merged = fusion.fisher_merge(states, [fisher] * count, weights)
    average = fusion.merge_linear(states, weights)
    for key in merged:
        torch.testing.assert_close(merged[key], average[key], rtol=1e-6, atol=1e-7)
        assert merged[key].dtype == average[key].dtype
    for key in ("bn1.running_mean", "bn1.running_var", "bn2.num_batches_tracked"):
        assert torch.equal(merged[key], average[key])


def test_fisher_merge_by_hand_and_its_floor():
    thetas = torch.tensor([[[1.0, 2.0, 3.0]], [[5.0, 6.0, 7.0]]], dtype=torch.float64)
    fishers = torch.tensor([[[3.0, 0.0, 0.0]], [[1.0, 2.0, 0.0]]], dtype=torch.float64)
    merged = fusion.fisher_merge([{"w": t} for t in thetas], [{"w": f} for f in fishers],
                                 weights=[0.25, 0.75], epsilon=1e-6)["w"]
    first = (0.25 * 3 * 1 + 0.75 * 1 * 5) / (0.25 * 3 + 0.75 * 1)
    second = (0.25 * 1e-6 * 2 + 0.75 * 2 * 6) / (0.25 * 1e-6 + 0.75 * 2)
    third = 0.25 * 3 + 0.75 * 7  # no Fisher anywhere: the weighted average
    torch.testing.assert_close(merged, torch.tensor([[first, second, third]], dtype=torch.float64),
                               rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="negative Fisher information in: 'w'"):
        fusion.fisher_merge([{"w": t} for t in thetas], [{"w": -f} for f in fishers])
    with pytest.raises(ValueError, match="epsilon"):
        fusion.fisher_merge([{"w": t} for t in thetas], [{"w": f} for f in fishers], epsilon=0.0)
    with pytest.raises(ValueError, match="another shape.*'w'"):
        fusion.fisher_merge([{"w": t} for t in thetas], [{"w": f.T} for f in fishers])
    with pytest.raises(ValueError, match="1 Fisher information for 2 models"):
        fusion.fisher_merge([{"w": t} for t in thetas], [{"w": fishers[0]}])


def test_fisher_of_a_pixel_classifier_by_hand():
    # 1x1 conv: z = W x + b per pixel; for the predicted label y,
    # d/dW mean_pixels log softmax(z)_y = mean_pixels (e_y - p) x^T, squared per image
    classifier = nn.Conv2d(3, 4, 1).double()
    images = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    fisher = fusion.fisher_information(classifier, [images[:2], images[2:]], labels="argmax")
    with torch.no_grad():
        p = torch.softmax(classifier(images), 1)
        error = F.one_hot(p.argmax(1), 4).permute(0, 3, 1, 2).double() - p  # (B, 4, H, W)
        grad_w = torch.einsum("bchw,bdhw->bcd", error, images) / 16
        grad_b = error.mean((2, 3))
    torch.testing.assert_close(fisher["weight"].view(4, 3), grad_w.square().mean(0), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(fisher["bias"], grad_b.square().mean(0), rtol=1e-10, atol=1e-14)


def test_fisher_is_per_image_and_leaves_the_model_alone(model):
    state = _member(3)
    images = _batches(1, seed=5)[0]
    model.train()
    before = copy.deepcopy(model.state_dict())
    whole = fusion.fisher_information(model, [images], state=state, labels="argmax")
    singles = [fusion.fisher_information(model, [images[i:i + 1]], state=state, labels="argmax")
               for i in range(images.shape[0])]
    for key in whole:
        torch.testing.assert_close(whole[key], sum(s[key] for s in singles) / len(singles),
                                   rtol=1e-5, atol=1e-10)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()
    sampled = fusion.fisher_information(model, [images], state=state, seed=1)
    assert all(torch.equal(sampled[k], v) for k, v in
               fusion.fisher_information(model, [images], state=state, seed=1).items())
    assert set(sampled) == {n for n, _ in model.named_parameters()}
    with pytest.raises(ValueError, match="labels"):
        fusion.fisher_information(model, [images], labels="true")


# -------------------------------------------------------------------------- AdaMerging


def test_adamerging_lowers_the_entropy_and_returns_its_merge(model):
    base = _member(10)
    tuned = [_member(seed) for seed in range(3)]
    before = copy.deepcopy(model.state_dict())
    frozen = fusion.adamerging(model, base, tuned, _batches(), steps=0)
    assert all(torch.equal(c, torch.full((3,), 0.3, dtype=torch.float64))
               for c in frozen.coefficients.values())
    assert all(torch.equal(frozen.state_dict[k], v) for k, v in
               fusion.merge_layerwise(base, tuned, [0.3] * 3).items())
    assert frozen.entropy == []
    learned = fusion.adamerging(model, base, tuned, _batches(), steps=12, lr=0.05)
    assert len(learned.entropy) == 12 and learned.entropy[-1] < learned.entropy[0]
    assert set(learned.coefficients) == {n for n, _ in model.named_parameters()}
    assert all(((c >= 0) & (c <= 1)).all() for c in learned.coefficients.values())
    expected = fusion.merge_layerwise(base, tuned, learned.coefficients)
    assert all(torch.equal(learned.state_dict[k], v) for k, v in expected.items())
    pooled = fusion.merge_linear(tuned)
    for key in ("bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked"):
        assert torch.equal(learned.state_dict[key], pooled[key])
    # the objective it reports is the merged model's mean entropy on the batch it used
    first = fusion.merge_layerwise(base, tuned, [0.3] * 3)
    probe = TinySegmenter().eval()
    probe.load_state_dict(first)
    with torch.no_grad():
        torch.testing.assert_close(learned.entropy[0],
                                   float(fusion.prediction_entropy(probe(_batches()[0]))),
                                   rtol=1e-5, atol=1e-6)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_adamerging_stops_with_a_spent_stream_and_refuses_bad_input(model):
    base, tuned = _member(10), [_member(0), _member(1)]
    spent = fusion.adamerging(model, base, tuned, (b for b in _batches(2)), steps=5, lr=0.01)
    assert len(spent.entropy) == 2
    with pytest.raises(ValueError, match="no batches"):
        fusion.adamerging(model, base, tuned, [], steps=3)
    with pytest.raises(ValueError, match="lr > 0"):
        fusion.adamerging(model, base, tuned, _batches(), lr=0.0)
    wrong = {k: v for k, v in base.items() if k != "head.bias"}
    with pytest.raises(ValueError, match="base does not fit the network.*missing keys.*head.bias"):
        fusion.adamerging(model, wrong, [{k: t[k] for k in wrong} for t in tuned], _batches())


# ------------------------------------------------------------------------------ REPAIR


def _channel_statistics(state, batches):
    """Each BatchNorm output's per-channel (mean, std) over the batches, in eval mode."""
    network = TinySegmenter().double().eval()
    network.load_state_dict(state)
    outputs = {"bn1": [], "bn2": []}
    handles = [getattr(network, name).register_forward_hook(
        lambda module, inputs, output, name=name: outputs[name].append(output)) for name in outputs]
    with torch.no_grad():
        for batch in batches:
            network(batch)
    for handle in handles:
        handle.remove()
    result = {}
    for name, parts in outputs.items():
        values = torch.cat(parts).transpose(0, 1).reshape(6, -1)
        std, mean = torch.std_mean(values, dim=1, correction=0)
        result[name] = (mean, std)
    return result


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5])
def test_repair_restores_each_channel_mean_and_std(alpha):
    a, b = _member(1, torch.float64), _member(2, torch.float64)
    batches = _batches(2, seed=7, dtype=torch.float64)
    repaired = fusion.repair(TinySegmenter().double(), a, b, batches, alpha=alpha)
    goal_a, goal_b = _channel_statistics(a, batches), _channel_statistics(b, batches)
    found = _channel_statistics(repaired, batches)
    for name in ("bn1", "bn2"):
        mean, std = found[name]
        torch.testing.assert_close(mean, (1 - alpha) * goal_a[name][0] + alpha * goal_b[name][0],
                                   rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(std, (1 - alpha) * goal_a[name][1] + alpha * goal_b[name][1],
                                   rtol=1e-10, atol=1e-10)
    # only the BatchNorm affine parameters change; the statistics are the interpolation's
    plain = fusion.interpolate(a, b, alpha)
    changed = {k for k in plain if not torch.equal(plain[k], repaired[k])}
    assert changed <= {"bn1.weight", "bn1.bias", "bn2.weight", "bn2.bias"}
    if alpha == 0.5:
        assert changed  # the plain midpoint's channels had collapsed spread
        assert (_channel_statistics(plain, batches)["bn2"][1] != found["bn2"][1]).any()


def test_repair_refuses_what_it_cannot_fold():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.norm = nn.BatchNorm2d(4, affine=False)

        def forward(self, x):
            return self.norm(self.conv(x))

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 1)
            self.norm = nn.BatchNorm2d(4)

        def forward(self, x):
            return self.norm(self.conv(self.norm(x)))

    plain = Plain()
    with pytest.raises(ValueError, match="without affine weight and bias.*'norm'"):
        fusion.repair(plain, plain.state_dict(), plain.state_dict(), [torch.randn(2, 3, 4, 4)])
    twice = Twice()
    with pytest.raises(ValueError, match="called more than once per forward: 'norm'"):
        fusion.repair(twice, twice.state_dict(), twice.state_dict(), [torch.randn(2, 4, 4, 4)])
    with pytest.raises(ValueError, match="no batches"):
        fusion.repair(twice, twice.state_dict(), twice.state_dict(), [])


def test_networks_with_non_persistent_buffers_run_on_swapped_weights():
    # A fixed input normalisation registered with persistent=False (EfficientNet-Lite0's
    # input_scale/input_shift) is in no state dict: it keeps the module's own value, while a
    # persistent entry missing from the state is still refused.
    class Normalised(TinySegmenter):
        def __init__(self):
            super().__init__()
            self.register_buffer("scale", torch.full((1, 3, 1, 1), 2.0), persistent=False)

        def forward(self, x):
            return super().forward(x * self.scale)

    network = Normalised().eval()
    plain = TinySegmenter().eval()
    plain.load_state_dict(network.state_dict())
    x = _batches(1)[0]
    state = {k: v.clone() for k, v in network.state_dict().items()}
    assert "scale" not in state
    with torch.no_grad():
        torch.testing.assert_close(fusion.forward.run(network, state, x), plain(2.0 * x))
        grams = fusion.regmean_grams(network, [x])
        reference = fusion.regmean_grams(plain, [2.0 * x])
    assert grams.keys() == reference.keys()
    for key in grams:
        torch.testing.assert_close(grams[key], reference[key])
    del state["bn1.running_mean"]
    with pytest.raises(RuntimeError, match="bn1.running_mean"):
        fusion.forward.run(network, state, x)


class _SamePadConv(nn.Conv2d):
    """TensorFlow "SAME" padding done inside forward (the EfficientNet ports' dynamic-padding conv)."""

    def forward(self, x):
        pads = []
        for size, k, s, d in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride),
                                 reversed(self.dilation)):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


@pytest.mark.parametrize("size", [(8, 6), (7, 9)])
def test_regmean_grams_of_a_conv_that_pads_itself_are_its_patches(size):
    # Even sizes with stride 2 pad one more row/column at the end: the energy identity
    # tr(W G W^T) = mean |W x|^2 holds only with the padding the layer really applied.
    conv = _SamePadConv(4, 6, 5, stride=2, groups=2, bias=False).double()
    x = torch.randn(2, 4, *size, dtype=torch.float64)
    grams = fusion.regmean_grams(conv, [x])
    with torch.no_grad():
        y = conv(x)
    energy = sum(torch.trace(w @ g @ w.T) for w, g in zip(conv.weight.reshape(2, 3, 50), grams["weight"]))
    torch.testing.assert_close(energy, y.square().sum() / (y.shape[0] * y.shape[2] * y.shape[3]),
                               rtol=1e-10, atol=0)
