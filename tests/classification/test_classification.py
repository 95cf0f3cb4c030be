"""Classification check: loaders on files in the real formats, the barrier, the models, a tiny run."""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.classification import (backbone_state, build_classifier, class_halves,
                                        load_backbone, load_cifar100, load_fashion_mnist,
                                        loss_barrier, read_idx, run_classification,
                                        select_classes)
from experiments.classification.data import FASHION_MNIST_ROOT
from experiments.classification.models import ResNetClassifier

# ------------------------------------------------------------------ fixtures


def write_cifar100(root: Path, n: int = 6, seed: int = 0) -> dict:
    """A miniature ``cifar-100-python`` folder laid out and pickled like the release."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    made = {}
    for split in ("train", "test"):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, n).tolist()
        # Python 2's cPickle wrote bytes keys; protocol 2 is what it produced.
        record = {b"filenames": [f"img_{i}.png".encode() for i in range(n)],
                  b"batch_label": f"{split} batch".encode(), b"fine_labels": fine,
                  b"coarse_labels": [f // 5 for f in fine], b"data": data}
        (folder / split).write_bytes(pickle.dumps(record, protocol=2))
        made[split] = (data, fine)
    meta = {b"fine_label_names": [f"class{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"super{i}".encode() for i in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return made


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def write_fashion_mnist(root: Path, per_class: int = 4, seed: int = 0) -> Path:
    """Fashion-MNIST's four gzipped idx files, with images a small network can tell apart."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        labels = np.repeat(np.arange(10), per_class)
        images = rng.integers(0, 60, (len(labels), 28, 28))
        for i, label in enumerate(labels):  # one bright bar per class
            images[i, 2 * label + 4: 2 * label + 7, 4:24] = 250
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


# ------------------------------------------------------------------- loaders


def test_cifar100_reads_the_release_layout(tmp_path):
    made = write_cifar100(tmp_path)
    for split in ("train", "test"):
        loaded = load_cifar100(tmp_path, split)  # the parent folder works too
        data, fine = made[split]
        assert loaded.images.shape == (6, 32, 32, 3) and loaded.labels.tolist() == fine
        # Row layout: red plane, green plane, blue plane, each 32 rows of 32.
        i, y, x, c = 3, 7, 11, 2
        assert loaded.images[i, y, x, c] == data[i, c * 1024 + y * 32 + x]
    assert load_cifar100(tmp_path / "cifar-100-python").class_names[42] == "class42"


def test_cifar100_errors_name_the_file(tmp_path):
    write_cifar100(tmp_path)
    folder = tmp_path / "cifar-100-python"
    (folder / "meta").unlink()
    with pytest.raises(FileNotFoundError, match="meta"):
        load_cifar100(folder)
    write_cifar100(tmp_path / "again")
    folder = tmp_path / "again" / "cifar-100-python"
    (folder / "test").write_bytes(b"this is not a pickle")
    with pytest.raises(ValueError, match="test"):
        load_cifar100(folder, "test")
    (folder / "train").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}, protocol=2))
    with pytest.raises(KeyError, match="fine_labels"):
        load_cifar100(folder, "train")


def test_fashion_mnist_idx_round_trip_and_errors(tmp_path):
    root = write_fashion_mnist(tmp_path / "fm", per_class=3)
    train = load_fashion_mnist(root, "train")
    assert train.images.shape == (30, 28, 28, 1) and train.images.dtype == np.uint8
    assert np.bincount(train.labels).tolist() == [3] * 10
    assert train.images[7, 2 * train.labels[7] + 5, 10, 0] == 250
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as handle:
        handle.write(bytes([0, 0, 0x0D, 1]) + (4).to_bytes(4, "big") + b"\0" * 16)
    with pytest.raises(ValueError, match="unsigned-byte idx"):
        read_idx(bad)
    with gzip.open(bad, "wb") as handle:
        handle.write(bytes([0, 0, 0x08, 1]) + (9).to_bytes(4, "big") + b"\0" * 4)
    with pytest.raises(ValueError, match="header says shape"):
        read_idx(bad)
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.gz"):
        load_fashion_mnist(root, "test")


@pytest.mark.skipif(not Path(FASHION_MNIST_ROOT).is_dir(), reason="dataset-fashion-mnist not installed")
def test_installed_fashion_mnist_is_the_real_release():
    test = load_fashion_mnist(FASHION_MNIST_ROOT, "test")
    assert test.images.shape == (10000, 28, 28, 1)
    assert np.bincount(test.labels).tolist() == [1000] * 10


def test_halves_are_disjoint_and_balanced(tmp_path):
    first, second = class_halves(100)
    assert set(first).isdisjoint(second) and sorted(first + second) == list(range(100))
    data = load_fashion_mnist(write_fashion_mnist(tmp_path, per_class=4), "train")
    picked = select_classes(data, class_halves(10)[1], per_class=2, seed=5)
    assert sorted(np.unique(picked.labels).tolist()) == [5, 6, 7, 8, 9]
    assert np.bincount(picked.labels, minlength=10)[5:].tolist() == [2] * 5
    with pytest.raises(ValueError, match="class 5 has 4 examples"):
        select_classes(data, (5,), per_class=9, seed=0)


# ------------------------------------------------------------------- barrier


def test_loss_barrier_on_hand_computed_paths():
    assert loss_barrier([0.0, 0.5, 1.0], [1.0, 3.0, 2.0]) == pytest.approx(1.5)
    # A path that never rises above its higher end: only half the endpoints' gap.
    assert loss_barrier([0.0, 0.25, 0.5, 0.75, 1.0], [1.0, 0.4, 0.2, 0.9, 2.0]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="from 0 to 1"):
        loss_barrier([0.1, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="non-finite"):
        loss_barrier([0.0, 1.0], [1.0, float("nan")])


# -------------------------------------------------------------------- models


def test_resnet_loads_a_dino_style_checkpoint_by_name(tmp_path):
    torch.manual_seed(0)
    source = ResNetClassifier(depth=18, num_classes=7)
    wrapped = {"teacher": {f"module.{k}": v for k, v in source.state_dict().items()}}
    wrapped["teacher"]["module.head.mlp.0.weight"] = torch.zeros(3, 3)  # DINO projection head
    torch.save(wrapped, tmp_path / "dino.pth")
    torch.manual_seed(1)
    model = build_classifier("resnet18", 5, 32, tmp_path / "dino.pth")
    source.eval(), model.eval()
    images = torch.randn(2, 3, 32, 32)
    # Same backbone function, own output layer.
    torch.testing.assert_close(model.backbone(images)[-1], source.backbone(images)[-1])
    assert model.head.out_features == 5


def test_backbone_mismatch_names_the_keys():
    model = ResNetClassifier(depth=18, num_classes=3)
    state = backbone_state(model.state_dict())
    del state["layer2.0.conv1.weight"]
    state["layer9.extra"] = torch.zeros(1)
    state["conv1.weight"] = torch.zeros(1, 2, 3, 3)
    with pytest.raises(ValueError) as error:
        load_backbone(ResNetClassifier(depth=18, num_classes=3).backbone, state, "ckpt.pth")
    message = str(error.value)
    assert "ckpt.pth" in message and "layer2.0.conv1.weight" in message
    assert "layer9.extra" in message and "conv1.weight: checkpoint (1, 2, 3, 3)" in message


def test_efficientnet_lite0_gets_the_shipped_imagenet_weights():
    from experiments.classification.models import imagenet_efficientnet_lite0_path

    shipped = torch.load(imagenet_efficientnet_lite0_path(), map_location="cpu", weights_only=True)
    model = build_classifier("efficientnet_lite0", 10, 32, "imagenet")
    state = model.state_dict()
    for name in ("_conv_stem.weight", "_blocks.5._bn1.running_var", "_conv_head.weight"):
        torch.testing.assert_close(state[name], shipped[name])
    assert state["_fc.weight"].shape == (10, 1280)
    momenta = [m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert momenta and all(abs(m - 0.1) < 1e-9 for m in momenta)


# ------------------------------------------------------------ tiny real run


def tiny_config(tmp_path: Path, data_root: Path) -> dict:
    return {
        "name": "tiny", "runs_dir": str(tmp_path / "runs"), "output_dir": str(tmp_path / "results"),
        "force": False, "seeds": [0, 1], "num_alphas": 3, "num_threads": 1, "reestimate_per_class": 2,
        "data": {"name": "fashion_mnist", "root": str(data_root), "image_size": 32,
                 "train_per_class": 4, "test_per_class": 3},
        "model": {"name": "efficientnet_lite0", "bn_momentum": 0.1, "imagenet_weights": None,
                  "weights": {}},
        "recipe": {"epochs": 1, "batch_size": 10, "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0},
        "pretraining": {"epochs": 1, "seed": 0},
        "panels": {"pretrained": {"a": "imagenet", "b": "imagenet"},
                   "random": {"a": "random", "b": "random"}},
    }


def test_tiny_end_to_end_run(tmp_path):
    cfg = tiny_config(tmp_path, write_fashion_mnist(tmp_path / "fm", per_class=4))
    metrics = run_classification(cfg)
    run_dir = tmp_path / "runs" / "tiny"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and "Fashion-MNIST" in manifest["note"]
    seed = json.loads((run_dir / "seed0.json").read_text())
    for panel in ("pretrained", "random"):
        result = seed["panels"][panel]
        assert [row["alpha"] for row in result["path"]] == [0.0, 0.5, 1.0]
        # Equal batch counts: the pooled midpoint is the path's middle point exactly.
        assert result["accuracy_merged"] == result["path"][1]["accuracy"]
        assert result["loss_merged"] == pytest.approx(result["path"][1]["loss"], rel=1e-9)
        losses = [row["loss"] for row in result["path"]]
        assert result["barrier"] == pytest.approx(max(losses) - (losses[0] + losses[2]) / 2)
        assert metrics["summary"][panel]["accuracy_a"]["seeds"] == 2
    results = tmp_path / "results"
    for name in ("interpolation_accuracy", "interpolation_loss"):
        assert (results / f"{name}.pdf").read_bytes().startswith(b"%PDF")
        assert len((results / f"{name}.csv").read_text().splitlines()) == 1 + 2 * 3
    summary_md = (results / "summary.md").read_text()
    assert "± " in summary_md
    # The pre-declared rule decides the claims whose panels the run has, whichever way.
    assert "## Verdicts" in summary_md and "analysis/verdicts.py" in summary_md
    assert "pretrained merged > the better half: " in summary_md
    assert "random-init merged < pretrained merged: " in summary_md
    assert "two-pretrainings" not in summary_md  # no such panel in this run
    assert [v["claim"] for v in metrics["verdicts"]] == ["pretrained merged > the better half",
                                                          "random-init merged < pretrained merged"]
    assert "accuracy_merged_reestimated" in seed["panels"]["pretrained"]
    assert "re-estimated statistics" in summary_md
    # A finished run is not redone.
    (run_dir / "seed0.json").unlink()
    assert run_classification(cfg)["summary"] == metrics["summary"]
    assert not (run_dir / "seed0.json").exists()


def _without_seconds(value):
    if isinstance(value, dict):
        return {k: _without_seconds(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_without_seconds(v) for v in value]
    return value


def test_seeds_side_by_side_give_the_serial_results(tmp_path):
    """workers=2 trains the seeds in two processes (the digits pretraining made once,
    before them); each seed's result is the serial run's, where seed 0 made the
    pretraining itself: making it must not shift the random init that follows."""
    data = write_fashion_mnist(tmp_path / "fm", per_class=4)
    results = {}
    for workers in (1, 2):
        cfg = tiny_config(tmp_path / f"w{workers}", data)
        cfg.update(workers=workers, reestimate_per_class=None)
        cfg["panels"] = {"pretrained": {"a": "imagenet", "b": "imagenet"},
                         "two_pretrainings": {"a": "imagenet", "b": "digits"}}
        run_classification(cfg)
        results[workers] = [json.loads((tmp_path / f"w{workers}/runs/tiny/seed{s}.json").read_text())
                            for s in (0, 1)]
    assert _without_seconds(results[2]) == _without_seconds(results[1])
    assert results[1][0]["panels"]["two_pretrainings"]["accuracy_b"] is not None


def test_configs_compose():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    configs = Path(__file__).resolve().parents[2] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base=None):
        default = compose(config_name="classify")
        paper = compose(config_name="classify", overrides=["+classify=cifar100_resnet50"])
    assert len(default.seeds) == 3 and default.num_alphas >= 11
    assert set(default.panels) == {"pretrained", "random", "two_pretrainings"}
    assert paper.model.name == "resnet50" and paper.panels.two_pretrainings.b == "dino"
    assert paper.data.name == "cifar100" and paper.data.root is None
    assert OmegaConf.is_missing(paper.model.weights, "dino")


# ------------------------------------------------- the collapse and its fix


def _perturbed_pair(relative_move: float, size: int = 32):
    """Two copies of one random EfficientNet-Lite0, every conv/linear weight moved by
    ``relative_move`` of its norm in independent random directions (what fine-tuning two
    halves did: cos(theta_A - theta_0, theta_B - theta_0) = 0.00, median move 0.3 at the
    old lr 0.05), each with BatchNorm statistics estimated on its own forwards."""
    from experiments.classification.training import reestimate_batchnorm, snapshot

    torch.manual_seed(0)
    images = torch.randn(64, 3, size, size)
    start = build_classifier("efficientnet_lite0", 10, size, None)
    reestimate_batchnorm(start, images, len(images))
    theta_0 = snapshot(start)
    states = []
    for seed in (1, 2):
        generator = torch.Generator().manual_seed(seed)
        state = dict(theta_0)
        for key, value in theta_0.items():
            if key.endswith("weight") and value.dim() > 1:
                noise = torch.randn(value.shape, generator=generator)
                state[key] = value + relative_move * value.norm() * noise / noise.norm()
        start.load_state_dict(state)
        reestimate_batchnorm(start, images, len(images))
        states.append(snapshot(start))
    return start, states, images


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_far_independent_moves_collapse_the_merged_activations(one_thread):
    """The cause of the 10.0 % merges: endpoints far from their common start in unrelated
    directions make the midpoint's activations shrink against the pooled statistics, layer
    after layer, down to a near-constant final feature. Near the start they do not."""
    from experiments.classification.diagnose import layer_statistics
    from experiments.classification.training import merge_midpoint

    shrink = {}
    for move in (0.05, 1.0):
        model, (state_a, state_b), images = _perturbed_pair(move)
        model.load_state_dict(state_a)
        endpoint = layer_statistics(model, images)
        model.load_state_dict(merge_midpoint(state_a, state_b))
        merged = layer_statistics(model, images)
        # An endpoint on the images its statistics came from: about 1 (below only by
        # BatchNorm's eps on the random init's faint last-layer channels).
        assert 0.7 < endpoint["_bn1"]["var_ratio"] < 1.1
        ratios = [merged[name]["var_ratio"] / endpoint[name]["var_ratio"] for name in merged]
        shrink[move] = ratios
    assert min(shrink[0.05]) > 0.8
    # Far apart: the shrinkage compounds with depth, to a near-constant final feature.
    assert shrink[1.0][-1] < 0.01 and shrink[1.0][-1] < shrink[1.0][0] / 50


def test_default_recipe_keeps_the_final_map_above_1x1():
    """The fix's resolution: at 32 px EfficientNet-Lite0 ends on a 1x1 map (15 of 49
    BatchNorm layers see 1x1); the default input must not."""
    from hydra import compose, initialize_config_dir

    from experiments.classification.diagnose import layer_statistics

    configs = Path(__file__).resolve().parents[2] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base=None):
        default = compose(config_name="classify")
    sizes = {}
    for size in (32, default.data.image_size):
        model = build_classifier("efficientnet_lite0", 10, size, None)
        stats = layer_statistics(model, torch.randn(2, 3, size, size))
        sizes[size] = [s["hw"] for s in stats.values()]
    assert sizes[32].count("1x1") == 15 and len(sizes[32]) == 49
    assert "1x1" not in sizes[default.data.image_size]
    assert default.recipe.lr <= 0.02  # the old lr 0.05 moved the halves apart
