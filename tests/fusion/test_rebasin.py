"""Git Re-Basin: permutation specs preserve the function, matching recovers planted
permutations exactly, and the default ResNet spec leaves the backbone outputs alone."""

import time

import pytest
import torch
from torch import nn

from fusion.rebasin import (
    apply_permutation,
    mlp_permutation_spec,
    permutation_fraction_nonidentity,
    resnet_v1c_permutation_spec,
    weight_matching,
)

STATISTICS = ("running_mean", "running_var")


def build_resnet(depth: int, seed: int, width: int = 16, stem_channels: int | None = None) -> nn.Module:
    """mmseg ResNetV1c with every float entry randomised (BN affine and running
    statistics included, variances positive) so no unit is tied with another.

    Running statistics start from one real batch (so activations stay O(1) through
    the depth) and are then perturbed per channel."""
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules()
    model = MODELS.build(
        dict(type="ResNetV1c", depth=depth, stem_channels=stem_channels or width, base_channels=width)
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if not value.is_floating_point() or key.endswith(STATISTICS):
                continue
            noise = torch.randn(value.shape, generator=generator)
            if value.dim() == 1:  # BN weight near 1, bias near 0
                value.copy_(0.3 * noise + (1.0 if key.endswith("weight") else 0.0))
            else:
                value.copy_(noise * (2.0 / value[0].numel()) ** 0.5)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 1.0  # running statistics := this batch's statistics
        model.train()
        model(torch.randn(2, 3, 64, 64, generator=generator))
        for key, value in model.state_dict().items():
            noise = torch.randn(value.shape, generator=generator)
            if key.endswith("running_var"):
                value.mul_(torch.exp(0.3 * noise))
            elif key.endswith("running_mean"):
                value.add_(0.3 * noise)
    model.eval()  # mmseg's ResNet.train() returns None, so no chaining
    return model


class MLP(nn.Module):
    """Keys ``layers.{i}.weight`` / ``layers.{i}.bias``, as mlp_permutation_spec expects."""

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)


def random_permutations(spec, state_dict, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    sizes = {name: state_dict[key].shape[axis] for name, ((key, axis), *_) in spec.perm_to_axes.items()}
    return {name: torch.randperm(n, generator=generator) for name, n in sorted(sizes.items())}


def copy_model(model: nn.Module, state_dict) -> nn.Module:
    import copy

    clone = copy.deepcopy(model)
    clone.load_state_dict(state_dict, strict=True)
    clone.eval()
    return clone


def assert_state_dicts_equal(x, y) -> None:
    assert x.keys() == y.keys()
    for key in x:
        assert torch.equal(x[key], y[key]), key


@pytest.fixture(scope="module")
def resnet18():
    return build_resnet(18, seed=0)


@pytest.fixture(scope="module")
def bottleneck_resnet50():
    return build_resnet(50, seed=0, width=8)


@pytest.mark.parametrize("permute_outputs", [False, True])
@pytest.mark.parametrize("depth", [18, 50])
def test_permuted_resnet_computes_same_function(request, depth, permute_outputs):
    resnet = request.getfixturevalue("resnet18" if depth == 18 else "bottleneck_resnet50")
    spec = resnet_v1c_permutation_spec(depth, permute_outputs=permute_outputs)
    a = resnet.state_dict()
    perm = random_permutations(spec, a, seed=1)
    assert permutation_fraction_nonidentity(perm) > 0.5
    # float64 so that only a wrong permutation, not summation order, can exceed 1e-5.
    reference = copy_model(resnet, a).double()
    permuted = copy_model(resnet, apply_permutation(spec, perm, a)).double()
    x = torch.randn(2, 3, 48, 40, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        expected, actual = reference(x), permuted(x)
    assert len(expected) == 4
    for stage, (e, o) in enumerate(zip(expected, actual), start=1):
        if permute_outputs:
            # Stage s returns its residual stream, permuted: out_b = out_a[:, P].
            e = e[:, perm[f"layer{stage}"]]
        torch.testing.assert_close(o, e, atol=1e-5, rtol=0)
    assert ("layer1" in perm) == permute_outputs


def test_forgetting_running_statistics_breaks_the_function(resnet18):
    """The authors' flaw (docs/method.md): permuting BN affine parameters but not
    the running statistics changes the network; the test above would catch it."""
    spec = resnet_v1c_permutation_spec(18)
    a = resnet18.state_dict()
    perm = random_permutations(spec, a, seed=1)
    wrong = apply_permutation(spec, perm, a)
    for key in wrong:
        if key.endswith(STATISTICS):
            wrong[key] = a[key].clone()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(copy_model(resnet18, wrong)(x)[-1], resnet18(x)[-1], atol=1e-3)


def test_segmentor_with_unpermuted_head(resnet18):
    """Default rule: backbone outputs unpermuted, so the decode head keeps its weights."""
    spec = resnet_v1c_permutation_spec(18, prefix="backbone.")
    head = nn.Conv2d(16 + 32 + 64 + 128, 5, 1)
    a = {f"backbone.{k}": v for k, v in resnet18.state_dict().items()}
    a.update({f"decode_head.{k}": v for k, v in head.state_dict().items()})
    full = spec.with_unpermuted({k: v for k, v in a.items() if k.startswith("decode_head.")})
    perm = random_permutations(full, a, seed=3)
    b = apply_permutation(full, perm, a)
    for key in a:
        if key.startswith("decode_head."):
            assert torch.equal(a[key], b[key])
    with pytest.raises(ValueError, match="decode_head.weight"):
        apply_permutation(spec, perm, a)


def test_head_permuted_consistently_with_permuted_outputs(resnet18):
    """Option (b): with permuted stage outputs, a head that reads each stage through
    its own 1x1 conv is permuted on that conv's input axis and the logits agree."""

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.ModuleList(nn.Conv2d(c, 6, 1) for c in (16, 32, 64, 128))

        def forward(self, features):
            size = features[0].shape[2:]
            return sum(nn.functional.interpolate(e(f), size=size) for e, f in zip(self.embed, features))

    head = Head().double().eval()
    axes = {f"embed.{s}.weight": (None, f"layer{s + 1}", None, None) for s in range(4)}
    axes.update({f"embed.{s}.bias": (None,) for s in range(4)})
    spec = resnet_v1c_permutation_spec(18, permute_outputs=True, prefix="backbone.").extend(
        {f"decode_head.{key}": value for key, value in axes.items()}
    )
    a = {f"backbone.{k}": v for k, v in resnet18.state_dict().items()}
    a.update({f"decode_head.{k}": v for k, v in head.state_dict().items()})
    b = apply_permutation(spec, random_permutations(spec, a, seed=6), a)
    backbone = copy_model(resnet18, {k[len("backbone."):]: v for k, v in b.items() if k.startswith("backbone.")})
    permuted_head = copy_model(head, {k[len("decode_head."):]: v for k, v in b.items() if k.startswith("decode_head.")})
    x = torch.randn(1, 3, 40, 40, dtype=torch.float64)
    with torch.no_grad():
        expected = head(copy_model(resnet18, resnet18.state_dict()).double()(x))
        actual = permuted_head(backbone.double()(x))
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def test_matching_refuses_non_finite_weights(resnet18):
    spec = resnet_v1c_permutation_spec(18)
    a = resnet18.state_dict()
    b = {k: v.clone() for k, v in a.items()}
    b["layer2.1.conv1.weight"][0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="layer2.1.conv1.weight"):
        weight_matching(spec, a, b)


def test_planted_permutation_is_recovered_exactly(resnet18):
    spec = resnet_v1c_permutation_spec(18, permute_outputs=True)
    a = resnet18.state_dict()
    planted = random_permutations(spec, a, seed=4)
    b = apply_permutation(spec, planted, a)
    found = weight_matching(spec, a, b, seed=0)
    # b = a[P] along each axis, so the matching permutation is P's inverse.
    for name, index in planted.items():
        assert torch.equal(found[name], torch.argsort(index)), name
    assert_state_dicts_equal(apply_permutation(spec, found, b), a)


def test_identical_models_give_identity(resnet18):
    spec = resnet_v1c_permutation_spec(18, permute_outputs=True)
    a = resnet18.state_dict()
    found = weight_matching(spec, a, {k: v.clone() for k, v in a.items()})
    assert permutation_fraction_nonidentity(found) == 0.0
    for name, index in found.items():
        assert torch.equal(index, torch.arange(index.numel())), name


def test_matching_is_deterministic_and_improves_alignment(resnet18):
    spec = resnet_v1c_permutation_spec(18)
    a, b = resnet18.state_dict(), build_resnet(18, seed=5).state_dict()
    first, second = weight_matching(spec, a, b, seed=7), weight_matching(spec, a, b, seed=7)
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert permutation_fraction_nonidentity(first) > 0.5

    def distance(x):
        return sum(float((x[k] - a[k]).pow(2).sum()) for k in a if x[k].is_floating_point())

    assert distance(apply_permutation(spec, first, b)) < distance(b)


@pytest.mark.parametrize(("depth", "stem_channels"), [(18, 16), (18, 8), (50, 16)])
def test_spec_covers_every_key_with_correct_sizes(depth, stem_channels):
    model = build_resnet(depth, seed=0, width=4 if depth == 50 else 16, stem_channels=stem_channels)
    state = model.state_dict()
    layer1_downsample = "layer1.0.downsample.0.weight" in state
    for permute_outputs in (False, True):
        spec = resnet_v1c_permutation_spec(depth, permute_outputs, layer1_downsample=layer1_downsample)
        assert set(spec.axes_to_perm) == set(state)
        assert spec.axes_to_perm["stem.0.weight"][1] is None  # RGB input
        for key, axes in spec.axes_to_perm.items():
            assert len(axes) == state[key].dim(), key
            if key.endswith("num_batches_tracked"):
                assert axes == ()
        for name, entries in spec.perm_to_axes.items():
            assert len({state[key].shape[axis] for key, axis in entries}) == 1, name
        streams = {name for name in spec.perm_to_axes if name.startswith("layer") and "." not in name}
        assert streams == ({"layer1", "layer2", "layer3", "layer4"} if permute_outputs else set())
        # Every BN's four channel tensors move with its channels.
        for key in state:
            if key.endswith("running_var"):
                base = key[: -len("running_var")]
                assert {spec.axes_to_perm[base + f] for f in ("weight", "bias", "running_mean")} == {
                    spec.axes_to_perm[key]
                }


def test_spec_refuses_mismatched_state_dict(resnet18):
    a = resnet18.state_dict()
    with pytest.raises(ValueError, match="layer1.0.downsample"):
        apply_permutation(resnet_v1c_permutation_spec(18, layer1_downsample=True), {}, a)
    spec = resnet_v1c_permutation_spec(18)
    perm = random_permutations(spec, a, seed=0)
    perm["stem.0"] = torch.zeros_like(perm["stem.0"])
    with pytest.raises(ValueError, match="stem.0"):
        apply_permutation(spec, perm, a)
    with pytest.raises(ValueError, match="depth"):
        resnet_v1c_permutation_spec(42)


def test_mlp_permutation_preserves_function_and_is_recovered():
    torch.manual_seed(0)
    model = MLP([7, 32, 24, 16, 3]).eval()
    spec = mlp_permutation_spec(3)
    a = model.state_dict()
    assert set(spec.axes_to_perm) == set(a)
    planted = random_permutations(spec, a, seed=1)
    b = apply_permutation(spec, planted, a)
    x = torch.randn(10, 7)
    with torch.no_grad():
        torch.testing.assert_close(copy_model(model, b)(x), model(x), atol=1e-6, rtol=1e-6)
    found = weight_matching(spec, a, b, seed=3)
    for name, index in planted.items():
        assert torch.equal(found[name], torch.argsort(index)), name
    assert_state_dicts_equal(apply_permutation(spec, found, b), a)
    identity = weight_matching(spec, a, a)
    assert permutation_fraction_nonidentity(identity) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("depth", [50, 101])
def test_full_width_resnet_matching(depth):
    """Paper-size backbones: planted permutation recovered, and the run time of a
    matching between two independent random networks."""
    a = build_resnet(depth, seed=0, width=64).state_dict()
    spec = resnet_v1c_permutation_spec(depth, permute_outputs=True)
    planted = random_permutations(spec, a, seed=1)
    found = weight_matching(spec, a, apply_permutation(spec, planted, a))
    assert all(torch.equal(found[n], torch.argsort(planted[n])) for n in planted)
    b = build_resnet(depth, seed=1, width=64).state_dict()
    start = time.perf_counter()
    weight_matching(resnet_v1c_permutation_spec(depth), a, b)
    print(f"ResNetV1c-{depth} weight matching, random weights: {time.perf_counter() - start:.1f} s")
