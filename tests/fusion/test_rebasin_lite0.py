"""Git Re-Basin on mini_lite0: the EfficientNet-Lite spec preserves the segmentor's function,
weight matching recovers a planted permutation and finds the identity between copies."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fusion import (apply_permutation, efficientnet_lite_permutation_spec,
                    permutation_fraction_nonidentity, weight_matching)

STATISTICS = ("running_mean", "running_var")


@pytest.fixture(scope="module")
def segmentor() -> nn.Module:
    """mini_lite0, random weights, BN affine randomised and running statistics taken from one
    batch then perturbed per channel (so no two units are tied and statistics matter)."""
    from experiments.models.segmentors import build_segmentor

    torch.manual_seed(0)
    model = build_segmentor("mini_lite0")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if value.is_floating_point() and value.dim() == 1 and not key.endswith(STATISTICS):
                noise = torch.randn(value.shape, generator=generator)
                value.copy_(0.3 * noise + (1.0 if key.endswith("weight") else 0.0))
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 1.0
        model.train()
        model.decode_head(model.extract_feat(torch.randn(4, 3, 64, 64, generator=generator)))
        for key, value in model.state_dict().items():
            noise = torch.randn(value.shape, generator=generator)
            if key.endswith("running_var"):
                value.mul_(torch.exp(0.3 * noise))
            elif key.endswith("running_mean"):
                value.add_(0.3 * noise)
    return model.eval()


def full_spec(model: nn.Module, **options):
    """Backbone spec + every other entry (the decode head) unpermuted, as the pipeline builds it."""
    spec = efficientnet_lite_permutation_spec(prefix="backbone.", **options)
    state = model.state_dict()
    return spec.with_unpermuted({k: v for k, v in state.items() if k not in spec.axes_to_perm})


def random_permutations(spec, state, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    sizes = {name: state[key].shape[axis] for name, ((key, axis), *_) in spec.perm_to_axes.items()}
    return {name: torch.randperm(n, generator=generator) for name, n in sorted(sizes.items())}


def with_state(model: nn.Module, state) -> nn.Module:
    clone = copy.deepcopy(model)
    clone.load_state_dict(state, strict=True)
    return clone.eval()


def outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        features = model.extract_feat(x)
        return [*features, model.decode_head(features)]


@pytest.mark.parametrize("options", [{}, {"permute_stem": False}, {"permute_streams": True}],
                         ids=["default", "no_stem", "streams"])
def test_spec_covers_the_backbone(segmentor, options):
    state = {k: v for k, v in segmentor.state_dict().items() if k.startswith("backbone.")}
    spec = efficientnet_lite_permutation_spec(**options)
    assert set(spec.axes_to_perm) == set(state)
    assert spec.axes_to_perm["backbone._conv_stem.weight"][1] is None  # RGB input
    for key, axes in spec.axes_to_perm.items():
        assert len(axes) == state[key].dim(), key
    for name, entries in spec.perm_to_axes.items():
        assert len({state[key].shape[axis] for key, axis in entries}) == 1, name
    names = set(spec.perm_to_axes)
    expanded = {f"_blocks.{i}" for i in range(1, 16)}  # block 0 has expand ratio 1
    stem = {"_conv_stem"} if options.get("permute_stem", True) else set()
    streams = {"stage0", "stage3", "stage5"} if options.get("permute_streams") else set()
    assert names == expanded | stem | streams
    # Every BN's four channel tensors move together; the tapped streams (block outputs of
    # stages 1, 2, 4, 6) are never permuted.
    for key in state:
        if key.endswith("running_var"):
            base = key[: -len("running_var")]
            assert {spec.axes_to_perm[base + f] for f in ("weight", "bias", "running_mean")} == {
                spec.axes_to_perm[key]}
    for block in (2, 4, 10, 15, 1, 9):
        assert spec.axes_to_perm[f"backbone._blocks.{block}._project_conv.weight"][0] is None
    assert spec.axes_to_perm["backbone._blocks.0._depthwise_conv.weight"][0] == (
        "_conv_stem" if stem else None)


@pytest.mark.parametrize("options", [{}, {"permute_streams": True}], ids=["default", "streams"])
def test_permuted_segmentor_computes_the_same_function(segmentor, options):
    spec = full_spec(segmentor, **options)
    a = segmentor.state_dict()
    perm = random_permutations(spec, a, seed=2)
    assert permutation_fraction_nonidentity(perm) > 0.9
    b = apply_permutation(spec, perm, a)
    assert not torch.equal(b["backbone._blocks.5._expand_conv.weight"], a["backbone._blocks.5._expand_conv.weight"])
    for key in a:
        if key.startswith("decode_head."):
            assert torch.equal(a[key], b[key]), key
    # float32 (float64 depthwise convolutions run one group at a time on a CPU: ~20x slower).
    # Permuting a sum only reorders it: observed differences ~1e-6 of the largest output,
    # a wrong permutation changes outputs by O(1) (the test below).
    x = torch.randn(2, 3, 64, 32, generator=torch.Generator().manual_seed(3))
    expected = outputs(with_state(segmentor, a), x)
    actual = outputs(with_state(segmentor, b), x)
    assert len(expected) == 5  # four taps and the logits
    for e, o in zip(expected, actual):
        scale = float(e.abs().max())
        assert scale > 1e-2
        torch.testing.assert_close(o, e, atol=1e-5 * scale, rtol=0)


def test_forgetting_running_statistics_breaks_the_function(segmentor):
    spec = full_spec(segmentor)
    a = segmentor.state_dict()
    wrong = apply_permutation(spec, random_permutations(spec, a, seed=2), a)
    for key in wrong:
        if key.endswith(STATISTICS):
            wrong[key] = a[key].clone()
    x = torch.randn(1, 3, 64, 32, generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(outputs(with_state(segmentor, wrong), x)[-1], outputs(segmentor, x)[-1], atol=1e-3)


def test_matching_recovers_a_planted_permutation(segmentor):
    """Default spec. (With ``permute_streams=True`` the coordinate descent can stop in a local
    optimum on the stage-3 stream and its blocks, depending on the visit order.)"""
    spec = full_spec(segmentor)
    a = segmentor.state_dict()
    planted = random_permutations(spec, a, seed=4)
    b = apply_permutation(spec, planted, a)
    found = weight_matching(spec, a, b, seed=0)
    # b = a[P] along each axis, so the permutation that moves b onto a is P's inverse.
    for name, index in planted.items():
        assert torch.equal(found[name], torch.argsort(index)), name
    aligned = apply_permutation(spec, found, b)
    for key in a:
        assert torch.equal(aligned[key], a[key]), key


def test_matching_copies_gives_the_identity(segmentor):
    spec = full_spec(segmentor, permute_streams=True)
    a = segmentor.state_dict()
    found = weight_matching(spec, a, {k: v.clone() for k, v in a.items()})
    assert permutation_fraction_nonidentity(found) == 0.0
    for name, index in found.items():
        assert torch.equal(index, torch.arange(index.numel())), name
