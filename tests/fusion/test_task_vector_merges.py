"""fusion: the data-free task-vector merges (DARE, Model Breadcrumbs, TSV-M, Iso-C, Iso-CTS)
and layer-wise coefficients, pinned by the identities and formulas of their papers."""

import inspect
from pathlib import Path

import pytest
import torch
import yaml

import fusion
from fusion.spectral import iso_cts_dimensions
from state_dicts import random_state


def _members(count, mixed_dtypes=False):
    base = random_state(100, mixed_dtypes=mixed_dtypes)
    return base, [random_state(seed, mixed_dtypes=mixed_dtypes) for seed in range(count)]


def _orthonormal(rows, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(rows, rows, generator=generator, dtype=torch.float64))[0]


def _update(merged, base, key):
    return merged[key].double() - base[key].double()


# Every method as f(base, finetuned, buffers) with its other parameters fixed.
METHODS = {
    "dare": lambda base, tuned, buffers: fusion.dare(base, tuned, 0.5, 0.5, seed=1, buffers=buffers),
    "model_breadcrumbs": lambda base, tuned, buffers: fusion.model_breadcrumbs(
        base, tuned, 0.1, 0.3, 0.5, buffers=buffers),
    "tsv_merge": lambda base, tuned, buffers: fusion.tsv_merge(base, tuned, 0.7, buffers=buffers),
    "iso_c": lambda base, tuned, buffers: fusion.iso_c(base, tuned, 0.7, buffers=buffers),
    "iso_cts": lambda base, tuned, buffers: fusion.iso_cts(base, tuned, 0.7, 0.5, buffers=buffers),
    "merge_layerwise": lambda base, tuned, buffers: fusion.merge_layerwise(
        base, tuned, [0.2] * len(tuned), buffers=buffers),
}


@pytest.mark.parametrize("count", [2, 3, 4])
@pytest.mark.parametrize("method", list(METHODS))
def test_statistics_pooled_from_the_members_dtypes_and_keys_kept(method, count):
    base, tuned = _members(count, mixed_dtypes=True)
    merged = METHODS[method](base, tuned, "pooled")
    assert list(merged) == list(base)
    assert all(merged[k].dtype == base[k].dtype and merged[k].shape == base[k].shape for k in base)
    # BatchNorm statistics are pooled as Gaussians, never moved like weights;
    # theta_0's statistics play no part
    pooled = fusion.merge_linear(tuned, buffers="pooled")
    for key in ("backbone.bn.running_mean", "backbone.bn.running_var",
                "backbone.bn.num_batches_tracked", "backbone.pos.relative_index", "backbone.mask"):
        assert torch.equal(merged[key], pooled[key]), key
    assert all(torch.isfinite(merged[k]).all() for k in merged if merged[k].is_floating_point())


@pytest.mark.parametrize("method", list(METHODS))
def test_refusals_name_the_keys(method):
    base, tuned = _members(2)
    poisoned = dict(tuned[1], **{"backbone.conv.weight": tuned[1]["backbone.conv.weight"].clone()})
    poisoned["backbone.conv.weight"][0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf.*backbone.conv.weight"):
        METHODS[method](base, [tuned[0], poisoned], "pooled")
    short = {k: v for k, v in tuned[1].items() if k != "decode_head.conv_seg.bias"}
    with pytest.raises(ValueError, match="missing keys.*decode_head.conv_seg.bias"):
        METHODS[method](base, [tuned[0], short], "pooled")
    with pytest.raises(ValueError, match="no fine-tuned models"):
        METHODS[method](base, [], "pooled")
    with pytest.raises(ValueError, match="unknown buffers rule"):
        METHODS[method](base, tuned, "median")


@pytest.mark.parametrize("count", [2, 3, 4])
def test_dare_without_dropping_is_task_arithmetic(count):
    base, tuned = _members(count)
    assert all(torch.equal(a, b) for a, b in zip(
        fusion.dare(base, tuned, drop_rate=0.0, scale=0.3).values(),
        fusion.task_arithmetic(base, tuned, scale=0.3).values()))


def test_dare_drops_and_rescales_by_hand():
    base = {"w": torch.zeros(4, 3)}
    tau = torch.arange(1.0, 13.0).view(4, 3)
    merged = fusion.dare(base, [{"w": tau}], drop_rate=0.75, scale=1.0, seed=3)["w"]
    kept = merged != 0
    assert 0 < int(kept.sum()) < 12
    assert torch.equal(merged[kept], 4.0 * tau[kept])  # survivors times 1 / (1 - p)
    again = fusion.dare(base, [{"w": tau}], drop_rate=0.75, scale=1.0, seed=3)["w"]
    assert torch.equal(merged, again)
    assert not torch.equal(merged, fusion.dare(base, [{"w": tau}], 0.75, 1.0, seed=4)["w"])
    # model 0's masks do not depend on what else is merged (a zero task vector adds nothing)
    with_zero = fusion.dare(base, [{"w": tau}, {"w": torch.zeros(4, 3)}], 0.75, 1.0, seed=3)["w"]
    assert torch.equal(with_zero, merged)


def test_dare_masks_average_to_task_arithmetic():
    base = {"w": torch.randn(4, 3, dtype=torch.float64)}
    tuned = [{"w": base["w"] + torch.randn(4, 3, dtype=torch.float64)} for _ in range(3)]
    draws = 1000
    mean = sum(fusion.dare(base, tuned, drop_rate=0.5, scale=0.5, seed=s)["w"] for s in range(draws)) / draws
    expected = fusion.task_arithmetic(base, tuned, scale=0.5)["w"]
    # each draw of an entry has std scale * sqrt(p/(1-p) * sum_k tau_k^2); 5 standard errors
    spread = 0.5 * torch.sqrt(sum((t["w"] - base["w"]).square() for t in tuned))
    assert ((mean - expected).abs() <= 5 * spread / draws ** 0.5).all()


@pytest.mark.parametrize("drop_rate", [1.0, -0.1, 1.5])
def test_dare_refuses_a_drop_rate_outside_0_1(drop_rate):
    base, tuned = _members(2)
    with pytest.raises(ValueError, match="drop_rate"):
        fusion.dare(base, tuned, drop_rate=drop_rate)


def test_breadcrumbs_by_hand():
    # magnitudes 1..12, signs alternating; 4 x 3 = 12 entries
    magnitudes = torch.tensor([[7., 1., 12.], [3., 9., 5.], [11., 2., 8.], [4., 10., 6.]])
    tau = magnitudes * torch.tensor([1., -1., 1.])
    base = {"w": torch.full((4, 3), 0.5)}
    merged = fusion.model_breadcrumbs(base, [{"w": base["w"] + tau}], top=0.1, bottom=0.25,
                                      scale=0.5)["w"]
    # floor(0.25 * 12) = 3 smallest (1, 2, 3) and floor(0.1 * 12) = 1 largest (12) removed
    keep = (magnitudes > 3) & (magnitudes < 12)
    assert torch.equal(merged, base["w"] + 0.5 * torch.where(keep, tau, 0.0))
    # K = 2: each task vector is masked on its own, then summed
    other = -2.0 * tau
    two = fusion.model_breadcrumbs(base, [{"w": base["w"] + tau}, {"w": base["w"] + other}],
                                   top=0.1, bottom=0.25, scale=1.0)["w"]
    torch.testing.assert_close(two, base["w"] + torch.where(keep, tau + other, 0.0))


def test_breadcrumbs_without_masking_is_task_arithmetic_and_refuses_bad_fractions():
    base, tuned = _members(3)
    merged = fusion.model_breadcrumbs(base, tuned, top=0.0, bottom=0.0, scale=0.4)
    assert all(torch.equal(merged[k], v) for k, v in fusion.task_arithmetic(base, tuned, 0.4).items())
    for top, bottom in ((0.5, 0.5), (-0.1, 0.2), (0.1, 1.0)):
        with pytest.raises(ValueError, match="top .* and bottom"):
            fusion.model_breadcrumbs(base, tuned, top=top, bottom=bottom)


def _orthogonal_tasks(count, rank=2, size=8):
    """Task matrices with mutually orthogonal column and row spaces, each of ``rank``."""
    left, right = _orthonormal(size, 1), _orthonormal(size, 2)
    generator = torch.Generator().manual_seed(3)
    tasks = []
    for k in range(count):
        columns = slice(k * rank, (k + 1) * rank)
        sigma = torch.rand(rank, generator=generator, dtype=torch.float64) + 0.5
        tasks.append((left[:, columns] * sigma) @ right[:, columns].T)
    return tasks


@pytest.mark.parametrize("count", [2, 3, 4])
def test_tsv_merge_of_orthogonal_tasks_is_task_arithmetic(count):
    # rank 2 per task: below the 1/K quota of 8 // K directions for K = 2, 3, exactly it for
    # K = 4; the concatenated singular vectors are orthonormal already, so the Procrustes
    # step changes nothing and TSV-M sums the task matrices
    tasks = _orthogonal_tasks(count)
    generator = torch.Generator().manual_seed(5)
    base = {"conv.weight": torch.randn(8, 2, 2, 2, generator=generator, dtype=torch.float64),
            "linear.weight": torch.randn(8, 8, generator=generator, dtype=torch.float64),
            "linear.bias": torch.randn(8, generator=generator, dtype=torch.float64)}
    tuned = [{"conv.weight": base["conv.weight"] + task.view(8, 2, 2, 2),
              "linear.weight": base["linear.weight"] + task.T,
              "linear.bias": base["linear.bias"] + torch.randn(8, generator=generator, dtype=torch.float64)}
             for task in tasks]
    merged = fusion.tsv_merge(base, tuned, alpha=0.6)
    arithmetic = fusion.task_arithmetic(base, tuned, scale=0.6)
    for key in ("conv.weight", "linear.weight"):
        torch.testing.assert_close(merged[key], arithmetic[key], rtol=0, atol=1e-12)
    # one-axis parameters take the mean task vector, scaled by alpha
    mean = torch.stack([t["linear.bias"] - base["linear.bias"] for t in tuned]).mean(0)
    torch.testing.assert_close(merged["linear.bias"], base["linear.bias"] + 0.6 * mean, rtol=0, atol=1e-12)


def test_tsv_merge_by_hand_on_4x3():
    generator = torch.Generator().manual_seed(7)
    taus = [torch.randn(4, 3, generator=generator, dtype=torch.float64) for _ in range(2)]
    base = {"w": torch.zeros(4, 3, dtype=torch.float64)}
    merged = fusion.tsv_merge(base, [{"w": t} for t in taus], alpha=1.0)["w"]
    # r = 3, K = 2: each task keeps floor(3 / 2) = 1 singular triplet
    triplets = [torch.linalg.svd(t) for t in taus]
    u = torch.stack([svd.U[:, 0] for svd in triplets], 1)
    v = torch.stack([svd.Vh[0] for svd in triplets], 1)
    sigma = torch.diag(torch.stack([svd.S[0] for svd in triplets]))
    p, _, qh = torch.linalg.svd(u, full_matrices=False)
    r, _, sh = torch.linalg.svd(v, full_matrices=False)
    torch.testing.assert_close(merged, (p @ qh) @ sigma @ (r @ sh).T, rtol=0, atol=1e-12)


@pytest.mark.parametrize("count", [2, 3, 4])
def test_iso_c_update_has_a_flat_spectrum_equal_to_the_mean(count):
    base, tuned = _members(count)
    merged = fusion.iso_c(base, tuned, alpha=0.8)
    for key in ("backbone.conv.weight", "decode_head.conv_seg.weight"):
        total = sum(_update(t, base, key) for t in tuned).reshape(base[key].shape[0], -1)
        update = _update(merged, base, key).reshape(total.shape)
        expected = 0.8 * torch.linalg.svdvals(total).mean()
        torch.testing.assert_close(torch.linalg.svdvals(update),
                                   expected.expand(min(total.shape)), rtol=1e-5, atol=1e-6)


def test_iso_c_by_hand_on_4x3():
    generator = torch.Generator().manual_seed(8)
    taus = [torch.randn(4, 3, generator=generator, dtype=torch.float64) for _ in range(3)]
    base = {"w": torch.ones(4, 3, dtype=torch.float64), "b": torch.zeros(4, dtype=torch.float64)}
    tuned = [{"w": base["w"] + t, "b": t[:, 0]} for t in taus]
    merged = fusion.iso_c(base, tuned, alpha=1.5)
    u, s, vh = torch.linalg.svd(sum(taus), full_matrices=False)
    torch.testing.assert_close(merged["w"], base["w"] + 1.5 * s.mean() * (u @ vh), rtol=0, atol=1e-12)
    torch.testing.assert_close(merged["b"], 1.5 * torch.stack([t[:, 0] for t in taus]).mean(0),
                               rtol=0, atol=1e-12)


def test_iso_cts_by_hand_and_its_limits():
    generator = torch.Generator().manual_seed(9)
    taus = [torch.randn(8, 6, generator=generator, dtype=torch.float64) for _ in range(2)]
    base = {"w": torch.zeros(8, 6, dtype=torch.float64)}
    tuned = [{"w": t} for t in taus]
    # r = 6, K = 2, f = 0.5: s = round((6 - 3) / 2) = 2 per task, k = 6 - 2 * 2 = 2 common
    assert iso_cts_dimensions(6, 2, 0.5) == (2, 2)
    merged = fusion.iso_cts(base, tuned, alpha=1.0, common_fraction=0.5)["w"]
    u, s, vh = torch.linalg.svd(sum(taus), full_matrices=False)
    lefts, rights, values = [u[:, :2]], [vh[:2].T], [s[:2]]
    for t in taus:
        ut, st, vth = torch.linalg.svd(t - u[:, :2] @ u[:, :2].T @ t, full_matrices=False)
        lefts.append(ut[:, :2])
        rights.append(vth[:2].T)
        values.append(st[:2])
    p, _, qh = torch.linalg.svd(torch.cat(lefts, 1), full_matrices=False)
    r, _, sh = torch.linalg.svd(torch.cat(rights, 1), full_matrices=False)
    expected = torch.cat(values).mean() * (p @ qh) @ (r @ sh).T
    torch.testing.assert_close(merged, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.linalg.svdvals(merged), torch.cat(values).mean().expand(6),
                               rtol=0, atol=1e-12)
    # no task-specific directions left: Iso-C
    only_common = fusion.iso_cts(base, tuned, alpha=1.0, common_fraction=1.0)["w"]
    torch.testing.assert_close(only_common, fusion.iso_c(base, tuned)["w"], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="common_fraction"):
        fusion.iso_cts(base, tuned, common_fraction=1.5)


@pytest.mark.parametrize("rank, tasks, fraction, expected", [
    (6, 2, 0.5, (2, 2)), (10, 4, 0.8, (6, 1)), (3, 4, 0.8, (3, 0)), (12, 3, 0.0, (0, 4)),
    (768, 8, 0.8, (616, 19)),
])
def test_iso_cts_dimensions(rank, tasks, fraction, expected):
    common, per_task = iso_cts_dimensions(rank, tasks, fraction)
    assert (common, per_task) == expected and common + tasks * per_task == rank


def test_spectral_merges_of_rank_deficient_tasks_ignore_null_directions():
    # A layer no task moved: every spectral merge leaves it at theta_0 exactly.
    base, tuned = _members(3)
    frozen = [dict(t, **{"decode_head.conv_seg.weight": base["decode_head.conv_seg.weight"]}) for t in tuned]
    for merge in (fusion.tsv_merge, fusion.iso_c, fusion.iso_cts):
        merged = merge(base, frozen)
        assert torch.equal(merged["decode_head.conv_seg.weight"], base["decode_head.conv_seg.weight"])


@pytest.mark.parametrize("count", [2, 3, 4])
def test_layerwise_coefficients_of_one_over_k_are_the_midpoint(count):
    base, tuned = _members(count)
    merged = fusion.merge_layerwise(base, tuned, [1.0 / count] * count)
    midpoint = fusion.merge_linear(tuned)
    for key in base:
        torch.testing.assert_close(merged[key], midpoint[key], rtol=1e-6, atol=1e-6)
        assert merged[key].dtype == midpoint[key].dtype


def test_layerwise_coefficients_by_hand_and_refusals():
    def entries(weight, bias):
        return {"a.weight": torch.full((4, 3), weight, dtype=torch.float64),
                "a.bias": torch.full((4,), bias, dtype=torch.float64)}

    base, tuned = entries(0.0, 1.0), [entries(2.0, 3.0), entries(-1.0, 0.0)]
    merged = fusion.merge_layerwise(base, tuned, {"a.weight": [0.5, 0.25], "a.bias": [0.1, 1.0]})
    assert torch.equal(merged["a.weight"], entries(0.5 * 2.0 + 0.25 * -1.0, 0)["a.weight"])
    assert torch.equal(merged["a.bias"], entries(0, 1.0 + 0.1 * 2.0 + 1.0 * -1.0)["a.bias"])
    with pytest.raises(ValueError, match="no coefficients for parameters: 'a.bias'"):
        fusion.merge_layerwise(base, tuned, {"a.weight": [0.5, 0.5]})
    with pytest.raises(ValueError, match="expected 2 coefficients.*a.weight"):
        fusion.merge_layerwise(base, tuned, {"a.weight": [0.5], "a.bias": [0.5, 0.5]})
    with pytest.raises(ValueError, match="non-finite coefficients.*a.bias"):
        fusion.merge_layerwise(base, tuned, {"a.weight": [0.5, 0.5], "a.bias": [0.5, float("nan")]})


# configs/fusion/<method>.yaml -> the function its keys are the parameters of
CONFIGS = {"dare": fusion.dare, "breadcrumbs": fusion.model_breadcrumbs, "tsv_merge": fusion.tsv_merge,
           "iso_c": fusion.iso_c, "iso_cts": fusion.iso_cts, "regmean": fusion.regmean,
           "fisher": fusion.fisher_merge, "adamerging": fusion.adamerging, "repair": fusion.repair}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_method_configs_name_their_function_parameters(name):
    path = Path(__file__).resolve().parents[2] / "configs" / "fusion" / f"{name}.yaml"
    config = yaml.safe_load(path.read_text())
    assert config.pop("method") == name
    nested = {key: config.pop(key) for key in [k for k, v in config.items() if isinstance(v, dict)]}
    for key in ("base", "base_network"):  # where theta_0 is read from, not a parameter
        config.pop(key, None)
    parameters = inspect.signature(CONFIGS[name]).parameters
    assert set(config) <= set(parameters), set(config) - set(parameters)
    for function, values in nested.items():  # e.g. fisher_information: how the statistic is made
        assert set(values) <= set(inspect.signature(getattr(fusion, function)).parameters)
    defaults = {k: p.default for k, p in parameters.items() if p.default is not inspect.Parameter.empty}
    assert config.get("buffers") == defaults.get("buffers")
