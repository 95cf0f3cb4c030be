"""Why does a merged pair collapse? Measurements on one seed of one panel.

    python -m experiments.classification.diagnose                  # configs/classify.yaml, seed 0
    python -m experiments.classification.diagnose data.image_size=32 --panel random --seed 1

Trains the panel's two half-models with the config's recipe (exactly as the experiment
does), merges them at the midpoint with pooled BatchNorm statistics, and prints:

1. the spatial size each BatchNorm layer works on (the final map at 32 px is 1x1);
2. accuracy of A, B and the merged model on each half of the test classes, and the
   merged model's prediction histogram;
3. the shared output layer: biases and mean logits of each half-model's own vs other
   classes (has each head learned to suppress the other half?);
4. per-layer activation spread: for each BatchNorm layer, the variance of its input on
   the test images divided by the ``running_var`` it normalises with (1 = statistics
   fit; << 1 = activations shrink, "variance collapse"), for A, B, the merged model;
5. the final 1280-d feature: its spread over images and a nearest-class-mean probe
   (fitted on the training images of both halves) -- is the information in the features
   lost, or only its scale?
6. the merged logits: spread over images vs the spread of the head's bias;
7. eval with the pooled statistics vs statistics re-estimated on the training images of
   both halves (REPAIR-style reset), at every alpha of the path.

Everything printed is measured; nothing here changes the experiment.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .experiment import prepare_data, resolve_weights
from .models import build_classifier
from .training import (Recipe, batchnorm_layers, evaluate, merge_midpoint, reestimate_batchnorm,
                       snapshot, train_classifier)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def compose(overrides: list[str]) -> dict:
    from hydra import compose as hydra_compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        cfg = hydra_compose(config_name="classify", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


CHUNK = 50  # images per forward (see training.evaluate)


@torch.no_grad()
def layer_statistics(model: nn.Module, images: torch.Tensor) -> dict[str, dict[str, float]]:
    """Per BatchNorm layer (eval mode), over ``images``: the input's per-channel variance
    divided by ``running_var`` (median over channels; 1 = the statistics fit what the layer
    sees, << 1 = the activations have shrunk), the input's mean shift in running standard
    deviations, the output's std, and the spatial size the layer works on."""
    model.eval()
    sums: dict[str, list] = {}
    hooks = []
    for name, bn in batchnorm_layers(model):
        def hook(module, inputs, output, name=name):
            x, y = inputs[0].double(), output.double()
            count = x.shape[0] * x.shape[2] * x.shape[3]
            parts = (count, x.sum(dim=(0, 2, 3)), x.square().sum(dim=(0, 2, 3)),
                     y.sum(dim=(0, 2, 3)), y.square().sum(dim=(0, 2, 3)))
            if name not in sums:
                sums[name] = [*parts, f"{x.shape[2]}x{x.shape[3]}", module]
            else:
                sums[name][:5] = [a + b for a, b in zip(sums[name][:5], parts)]
        hooks.append(bn.register_forward_hook(hook))
    try:
        for start in range(0, len(images), CHUNK):
            model(images[start:start + CHUNK])
    finally:
        for h in hooks:
            h.remove()
    stats = {}
    for name, (n, sx, sxx, sy, syy, hw, bn) in sums.items():
        mean, var = sx / n, (sxx / n - (sx / n).square()).clamp_min(0)
        running_var = bn.running_var.double() + bn.eps
        out_std = (syy / n - (sy / n).square()).clamp_min(0).sqrt()
        stats[name] = {"var_ratio": float((var / running_var).median()),
                       "mean_shift": float(((mean - bn.running_mean.double()) / running_var.sqrt()).abs().median()),
                       "out_std": float(out_std.median()), "hw": hw}
    return stats


@torch.no_grad()
def features_and_logits(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The pooled final feature (N, 1280) and the logits, in eval mode."""
    model.eval()
    feats = torch.cat([model.extract_features(images[s:s + CHUNK]).mean(dim=(2, 3))
                       for s in range(0, len(images), CHUNK)])
    return feats, model._fc(feats)


@torch.no_grad()
def ncm_accuracy(model: nn.Module, train: tuple, test: tuple) -> float:
    """Nearest class mean (cosine) on the model's final features: information, not scale."""
    ftr, _ = features_and_logits(model, train[0])
    fte, _ = features_and_logits(model, test[0])
    mu = ftr.mean(0)
    ftr, fte = F.normalize(ftr - mu, dim=1), F.normalize(fte - mu, dim=1)
    classes = torch.unique(train[1])
    centres = F.normalize(torch.stack([ftr[train[1] == c].mean(0) for c in classes]), dim=1)
    pred = classes[(fte @ centres.T).argmax(1)]
    return 100.0 * float((pred == test[1]).float().mean())


def half_accuracies(model: nn.Module, test: tuple, halves) -> tuple[float, float, float]:
    images, labels = test
    out = [evaluate(model, images, labels)["accuracy"]]
    for half in halves:
        keep = torch.isin(labels, torch.tensor(half))
        out.append(evaluate(model, images[keep], labels[keep])["accuracy"])
    return tuple(out)


def validation_split(cfg: Mapping, seed: int, per_class: int = 100) -> tuple:
    """Training-split images of every class that neither half trained on (for choosing a
    recipe from the endpoints without the test images)."""
    from .data import ImageSplit, class_halves, load_split, select_classes, to_tensors

    data = cfg["data"]
    train = load_split(data["name"], data.get("root"), "train")
    halves = class_halves(len(train.class_names))
    used = np.zeros(len(train.labels), dtype=bool)
    for classes, offset in ((halves[0], 1), (halves[1], 2)):
        # The same draw as prepare_data: rebuild its index set.
        rng = np.random.default_rng(seed * 10 + offset)
        for label in classes:
            index = np.flatnonzero(train.labels == label)
            if data["train_per_class"] is None:
                used[index] = True
            else:
                used[rng.choice(index, data["train_per_class"], replace=False)] = True
    rest = ImageSplit(train.images[~used], train.labels[~used], train.class_names)
    return to_tensors(select_classes(rest, halves[0] + halves[1], per_class, 10_000 + seed),
                      data["image_size"])


def fmt(x: float) -> str:
    return f"{x:7.3f}" if abs(x) < 1e3 else f"{x:9.2e}"


def diagnose(cfg: Mapping, panel: str, seed: int, endpoints_only: bool = False) -> dict:
    """Print the measurements; ``endpoints_only`` stops before anything merged is shown
    (what a recipe may be chosen from)."""
    if cfg["model"]["name"] != "efficientnet_lite0":
        raise ValueError(f"the diagnosis reads EfficientNet-Lite0's layers; got {cfg['model']['name']}")
    torch.set_num_threads(int(cfg.get("num_threads") or torch.get_num_threads()))
    data = prepare_data(cfg, seed)
    recipe = Recipe(**cfg["recipe"])
    starts = cfg["panels"][panel]
    runs_dir = Path(cfg["runs_dir"])
    size = cfg["data"]["image_size"]

    def build(start):
        torch.manual_seed(seed)
        return build_classifier(cfg["model"]["name"], data["num_classes"], size,
                                resolve_weights(start, cfg, runs_dir),
                                cfg["model"]["bn_momentum"]).to(memory_format=torch.channels_last)

    states, report, initial = {}, {}, {}
    for half in ("a", "b"):
        model = build(starts[half])
        initial[half] = snapshot(model)
        began = time.perf_counter()
        train_classifier(model, *data[f"train_{half}"], recipe, seed * 100 + (half == "b"))
        print(f"trained {starts[half]} on half {half} in {time.perf_counter() - began:.0f} s")
        states[half] = snapshot(model)
    model = build(None)
    test, halves = data["test"], data["halves"]
    union_train = (torch.cat([data["train_a"][0], data["train_b"][0]]),
                   torch.cat([data["train_a"][1], data["train_b"][1]]))
    merged_state = merge_midpoint(states["a"], states["b"])
    variants = {"A": states["a"], "B": states["b"], "merged": merged_state}

    print(f"\n== {cfg['model']['name']} at {size} px, panel {panel} ({starts['a']} / {starts['b']}), "
          f"seed {seed}, recipe {cfg['recipe']}")
    model.load_state_dict(states["a"])
    layer_a = layer_statistics(model, test[0])
    sizes = [v["hw"] for v in layer_a.values()]
    ones = sum(s == "1x1" for s in sizes)
    print(f"\n1. spatial size at the BatchNorm layers: {sorted(set(sizes), key=lambda s: -int(s.split('x')[0]))}; "
          f"{ones} of {len(sizes)} BN layers see a 1x1 map (final map {sizes[-1]})")
    report["bn_layers_1x1"], report["bn_layers"] = ones, len(sizes)

    print("\n   the start's final features (BN re-estimated on both halves' training images): "
          "NCM probe accuracy on all 10 classes (%)")
    for half in sorted(set(starts.values())):
        start = build(half)
        reestimate_batchnorm(start, union_train[0], recipe.batch_size)
        print(f"   {half}: {ncm_accuracy(start, union_train, test):5.1f}")

    print("\n   how far fine-tuning moved the weights: ||theta_X - theta_0|| / ||theta_0|| and "
          "cos(theta_A - theta_0, theta_B - theta_0), per conv/linear weight")
    weights = [k for k, v in initial["a"].items() if k.endswith("weight") and v.dim() > 1]
    moves = []
    for key in weights:
        d_a = states["a"][key] - initial["a"][key]
        d_b = states["b"][key] - initial["b"][key]
        norm = float(initial["a"][key].norm())
        cos = float(F.cosine_similarity(d_a.flatten(), d_b.flatten(), dim=0)) \
            if starts["a"] == starts["b"] else float("nan")
        moves.append((key, float(d_a.norm()) / norm, float(d_b.norm()) / norm, cos, norm))
    for i in sorted(set(np.linspace(0, len(moves) - 1, 8).round().astype(int).tolist())):
        key, ra, rb, cos, norm = moves[i]
        print(f"   {key:<34} |theta_0| {norm:7.3f}  move A {ra:6.2f}  move B {rb:6.2f}  cos {cos:+.2f}")
    rel = np.array([[m[1], m[2]] for m in moves])
    print(f"   median relative move A {np.median(rel[:, 0]):.2f}, B {np.median(rel[:, 1]):.2f}; "
          f"median cos {np.nanmedian([m[3] for m in moves]):+.2f}")
    report["median_move"] = float(np.median(rel))
    validation = validation_split(cfg, seed)
    for name, half in (("A", 0), ("B", 1)):
        model.load_state_dict(states[name.lower()])
        own = half_accuracies(model, test, halves)[1 + half]
        held_out = half_accuracies(model, validation, halves)[1 + half]
        report[f"own_half_accuracy_{name}"] = own
        report[f"own_half_validation_{name}"] = held_out
        print(f"   {name} on its own 5 classes: {own:5.1f} % of the test images, "
              f"{held_out:5.1f} % of {len(validation[1]) // 2} held-out training images")
    if endpoints_only:
        return report

    print("\n2. accuracy (%): all 10 classes | classes of half A | classes of half B; merged prediction histogram")
    for name, state in variants.items():
        model.load_state_dict(state)
        acc = half_accuracies(model, test, halves)
        report[f"accuracy_{name}"] = acc
        _, logits = features_and_logits(model, test[0])
        hist = torch.bincount(logits.argmax(1), minlength=data["num_classes"]).tolist()
        print(f"   {name:>7}: {acc[0]:5.1f} | {acc[1]:5.1f} | {acc[2]:5.1f}   predictions per class {hist}")

    print("\n3. shared head: bias mean over own / other half's classes; mean logit on test images "
          "of own / other classes; |W| row norm own / other")
    for name, half in (("A", 0), ("B", 1)):
        state = states[name.lower()]
        own, other = list(halves[half]), list(halves[1 - half])
        bias, weight = state["_fc.bias"], state["_fc.weight"]
        model.load_state_dict(state)
        _, logits = features_and_logits(model, test[0])
        print(f"   {name}: bias {float(bias[own].mean()):+.3f} / {float(bias[other].mean()):+.3f}   "
              f"logit {float(logits[:, own].mean()):+.2f} / {float(logits[:, other].mean()):+.2f}   "
              f"|W| {float(weight[own].norm(dim=1).mean()):.3f} / {float(weight[other].norm(dim=1).mean()):.3f}")
    bias = merged_state["_fc.bias"]
    print(f"   merged bias per class {[round(float(b), 3) for b in bias]}")

    print("\n4. per BatchNorm layer: var(input on test images) / running_var (median over channels), "
          "and |mean shift| in running std")
    stats = {}
    for name, state in variants.items():
        model.load_state_dict(state)
        stats[name] = layer_statistics(model, test[0])
    reset = build(None)
    reset.load_state_dict(merged_state)
    reestimate_batchnorm(reset, union_train[0], recipe.batch_size)
    stats["merged, re-estimated"] = layer_statistics(reset, test[0])
    layers = list(stats["A"])
    shown = sorted(set(np.linspace(0, len(layers) - 1, 12).round().astype(int).tolist()))
    print("   layer                       hw    " + "  ".join(f"{n:>20}" for n in stats))
    for i in shown:
        layer = layers[i]
        cells = [f"{fmt(stats[n][layer]['var_ratio'])} / {stats[n][layer]['mean_shift']:6.2f}" for n in stats]
        print(f"   {layer:<26} {stats['A'][layer]['hw']:>4}  " + "  ".join(f"{c:>20}" for c in cells))
    # The product of the ratios is how far the scale of the signal has shrunk by the end.
    for name in stats:
        ratios = np.array([stats[name][layer]["var_ratio"] for layer in layers])
        report[f"var_ratio_{name}"] = ratios.tolist()
        print(f"   {name:>20}: var ratio min {ratios.min():.3g}, last layer {ratios[-1]:.3g}, "
              f"median over layers {np.median(ratios):.3g}")

    print("\n5. final pooled feature: mean std over images (per dim) | NCM probe accuracy (%) | "
          "logit std over images (mean over classes) | bias spread (std over classes)")
    variants_bn = {**variants}
    for name in list(variants_bn) + ["merged, re-estimated"]:
        if name == "merged, re-estimated":
            probe = reset
        else:
            model.load_state_dict(variants_bn[name])
            probe = model
        feats, logits = features_and_logits(probe, test[0])
        ncm = ncm_accuracy(probe, union_train, test)
        spread = float(probe._fc.bias.detach().std())
        report[f"feature_std_{name}"] = float(feats.std(0).mean())
        report[f"logit_std_{name}"] = float(logits.std(0).mean())
        report[f"ncm_{name}"] = ncm
        print(f"   {name:>20}: {float(feats.std(0).mean()):8.4f} | {ncm:5.1f} | "
              f"{float(logits.std(0).mean()):8.4f} | {spread:.3f}")

    print("\n6. head or features: merged features with A's / B's / merged head; re-estimated BN")
    model.load_state_dict(merged_state)
    feats, _ = features_and_logits(model, test[0])
    for name in ("a", "b"):
        head = states[name]
        logits = feats @ head["_fc.weight"].T + head["_fc.bias"]
        print(f"   merged features + {name.upper()}'s head: "
              f"{100.0 * float((logits.argmax(1) == test[1]).float().mean()):5.1f} %")
    acc = half_accuracies(reset, test, halves)
    report["accuracy_merged_reestimated"] = acc
    print(f"   merged, BN re-estimated on both halves' training images: {acc[0]:5.1f} | {acc[1]:5.1f} | {acc[2]:5.1f}")

    print("\n7. alpha path: accuracy with pooled statistics (pooled by weight) | re-estimated statistics; "
          "share of predictions in half A's classes (pooled | re-estimated)")
    from fusion import interpolate

    def share_a(net: nn.Module) -> float:
        _, logits = features_and_logits(net, test[0])
        return 100.0 * float(torch.isin(logits.argmax(1), torch.tensor(halves[0])).float().mean())

    rows = []
    for alpha in np.linspace(0, 1, 11):
        state = interpolate(states["a"], states["b"], float(alpha), buffers="pooled_by_weight")
        model.load_state_dict(state)
        pooled, pooled_share = evaluate(model, *test)["accuracy"], share_a(model)
        reestimate_batchnorm(model, union_train[0], recipe.batch_size)
        fresh, fresh_share = evaluate(model, *test)["accuracy"], share_a(model)
        rows.append((float(alpha), pooled, fresh))
        print(f"   alpha {alpha:.1f}: {pooled:5.1f} | {fresh:5.1f}     {pooled_share:5.1f} | {fresh_share:5.1f}")
    report["path"] = rows
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--panel", default="pretrained")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--endpoints", action="store_true",
                        help="only the start and the two fine-tuned models, nothing merged")
    parser.add_argument("overrides", nargs="*", help="hydra overrides of configs/classify.yaml")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    diagnose(compose(args.overrides), args.panel, args.seed, args.endpoints)
    print(f"\n{time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
