"""One-pass interpolation curves: identical to one full evaluation per point, and strict on keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from experiments.inference.evaluation import evaluate_model
from experiments.inference.interpolation import evaluate_path, evaluate_path_naive, path_state_dicts
from experiments.models.segmentors import build_segmentor


def _state(seed: int) -> dict[str, torch.Tensor]:
    """A mini_r18 state with non-trivial BatchNorm statistics (they differ per point)."""
    torch.manual_seed(seed)
    model = build_segmentor("mini_r18")
    for name, buffer in model.named_buffers():
        if name.endswith("running_mean"):
            buffer.normal_(0.0, 0.2)
        elif name.endswith("running_var"):
            buffer.uniform_(0.5, 2.0)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    # Two image sizes in one batch (IDD mixes resolutions) and ignored pixels (255).
    sizes = [(32, 64), (32, 64), (48, 32), (32, 64), (48, 32)]
    dataset = []
    for i, (h, w) in enumerate(sizes):
        label = rng.integers(0, 19, (h, w)).astype(np.uint8)
        label[:4] = 255
        dataset.append({"image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "label": label, "path": f"{i}"})
    torch.manual_seed(0)
    model = build_segmentor("mini_r18").eval()
    return model, _state(1), _state(2), dataset


def test_one_pass_equals_the_naive_loop_exactly(setup):
    model, a, b, dataset = setup
    points = path_state_dicts(a, b, np.linspace(0.0, 1.0, 5))
    fast = evaluate_path(model, points, dataset, batch_size=3)
    naive = evaluate_path_naive(model, points, dataset, batch_size=3)
    assert fast.shape == (5, 19, 19) and fast.dtype == naive.dtype
    assert np.array_equal(fast, naive)
    # Every labelled, non-ignored pixel is counted once per point.
    counted = sum(int((d["label"] != 255).sum()) for d in dataset)
    assert all(int(c.sum()) == counted for c in fast)
    # The points are different models: a test of equality between identical outputs proves nothing.
    assert not np.array_equal(fast[0], fast[-1])


def test_endpoints_equal_each_models_own_evaluation(setup):
    model, a, b, dataset = setup
    confusions = evaluate_path(model, path_state_dicts(a, b, [0.0, 0.5, 1.0]), dataset, batch_size=2)
    for state, confusion in ((a, confusions[0]), (b, confusions[-1])):
        own = build_segmentor("mini_r18")
        own.load_state_dict(state)
        assert np.array_equal(evaluate_model(own, dataset, batch_size=2, progress=False), confusion)


def test_the_module_itself_is_left_unchanged(setup):
    model, a, b, dataset = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    evaluate_path(model, [a, b], dataset[:2], batch_size=2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_state_dict_that_does_not_match_the_model_is_refused_by_name(setup):
    model, a, b, dataset = setup
    missing = {k: v for k, v in b.items() if k != "decode_head.conv_seg.weight"}
    with pytest.raises(ValueError, match=r"point 1 .*missing keys \['decode_head\.conv_seg\.weight'\]"):
        evaluate_path(model, [a, missing], dataset, batch_size=2)
    extra = dict(a, **{"backbone.extra.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"point 0 .*unexpected keys \['backbone\.extra\.weight'\]"):
        evaluate_path(model, [extra, b], dataset, batch_size=2)


def test_unlabelled_items_are_refused(setup):
    model, a, _, dataset = setup
    with pytest.raises(ValueError, match="needs labels"):
        evaluate_path(model, [a], [dict(dataset[0], label=None)], batch_size=1)
