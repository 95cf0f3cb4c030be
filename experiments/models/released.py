"""Checkpoints released by DAFormer and HRDA (mmseg 0.x) in this project's layout (mmseg 1.x).

The authors' checkpoints (e.g. HRDA's GTA->Cityscapes MiT-B5, 73.79 mIoU) hold the
networks of a DACS run, ``model.`` (student), ``ema_model.`` (teacher) and
``imnet_model.`` (frozen ImageNet model), in the module names of their mmseg 0.x code;
the authors' ``tools/test.py`` evaluates the student. ``fusion.load_checkpoint`` strips
the network prefix; ``convert`` then renames each tensor to the key of our segmentor
and refuses whatever does not map, naming the keys.

Rules, released -> ours (reshapes in brackets):

Backbone MiT (``mix_transformer.py``, SegFormer's names), through
``segmentors._segformer_to_mmseg``:
  ``backbone.patch_embed{i}.proj.*``    -> ``backbone.layers.{i-1}.0.projection.*``
  ``backbone.patch_embed{i}.norm.*``    -> ``backbone.layers.{i-1}.0.norm.*``
  ``backbone.block{i}.{j}.attn.q.*`` + ``attn.kv.*``
                                        -> ``backbone.layers.{i-1}.1.{j}.attn.attn.in_proj_*``
                                           (rows q, then kv's k and v: concatenated)
  ``backbone.block{i}.{j}.attn.proj.*`` -> ``... .attn.attn.out_proj.*``
  ``backbone.block{i}.{j}.attn.sr|norm.*``, ``norm1.*``, ``norm2.*`` keep their names
  ``backbone.block{i}.{j}.mlp.fc1.*``   -> ``... .ffn.layers.0.*`` (Linear (out, in) -> 1x1 conv)
  ``backbone.block{i}.{j}.mlp.dwconv.dwconv.*`` -> ``... .ffn.layers.1.*``
  ``backbone.block{i}.{j}.mlp.fc2.*``   -> ``... .ffn.layers.4.*`` (Linear -> 1x1 conv)
  ``backbone.norm{i}.*``                -> ``backbone.layers.{i-1}.2.*``
Backbone ResNet-V1c: identical names in mmseg 0.x and 1.x (``stem.{0,1,3,4,6,7}``,
``layer{k}.{b}.conv{n}|bn{n}|downsample.{0,1}``): copied.

DAFormer head, under ``decode_head.`` (DAFormer) or under each of HRDA's
``decode_head.head.`` (the segmentation head shared by both scales) and
``decode_head.scale_attention.`` (the scale attention), same prefix on our side:
  ``embed_layers.{i}.proj.*``           -> ``embeddings.{i}.*`` (Linear -> 1x1 conv;
                                           in_index (0, 1, 2, 3) in every released config)
  ``fuse_layer.aspp_modules.{b}.<ConvModule | depthwise_conv.<..> | pointwise_conv.<..>>``
                                        -> ``fusion.branches.{b}.<same>``
  ``fuse_layer.bottleneck.<ConvModule>``  -> ``fusion.bottleneck.<same>``
  ``fuse_layer.image_pool.1.<ConvModule>`` -> ``fusion.image_pool.1.<same>`` (pool=True only)
  ``fuse_layer.<ConvModule>`` (fusion of type ``conv``: HRDA's scale attention)
                                        -> ``fusion.<same>``
  ``conv_seg.*``                        -> ``conv_seg.*``
where ``<ConvModule>`` is ``conv.weight`` / ``conv.bias`` / ``bn.{weight, bias,
running_mean, running_var, num_batches_tracked}``.

Anything else (another embedding type, a context layer, a DeepLabV2 head, a classifier
of the ImageNet backbone) is refused. BatchNorm ``num_batches_tracked`` counters that an
old file lacks take the target model's value; the summary (logged) lists them.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

logger = logging.getLogger(__name__)

_SHOWN = 20  # keys listed per kind of refusal

_MIT_STAGE = re.compile(r"(patch_embed|block|norm)\d+\.")
_MIT_MARKER = re.compile(r"(patch_embed|block)\d+\.")  # not norm{i}: ResNet-V1b has norm1
_RELEASED_MARKERS = (
    re.compile(r"backbone\.(patch_embed|block)\d+\."),
    re.compile(r"decode_head\.((head|scale_attention)\.)?(embed_layers|fuse_layer)\."),
)
# Sub-heads of HRDA's HRDAHead, each a DAFormer head; the prefix is kept on our side.
_SUBHEADS = ("head.", "scale_attention.")
_CONV_MODULE = r"(conv\.(weight|bias)|bn\.(weight|bias|running_mean|running_var|num_batches_tracked))"
_HEAD_RULES = (
    (re.compile(r"embed_layers\.(\d+)\.proj\.(weight|bias)"), r"embeddings.\1.\2", True),
    (re.compile(rf"fuse_layer\.aspp_modules\.(\d+)\.((depthwise_conv\.|pointwise_conv\.)?{_CONV_MODULE})"),
     r"fusion.branches.\1.\2", False),
    (re.compile(rf"fuse_layer\.bottleneck\.({_CONV_MODULE})"), r"fusion.bottleneck.\1", False),
    (re.compile(rf"fuse_layer\.image_pool\.1\.({_CONV_MODULE})"), r"fusion.image_pool.1.\1", False),
    (re.compile(rf"fuse_layer\.({_CONV_MODULE})"), r"fusion.\1", False),
    (re.compile(r"conv_seg\.(weight|bias)"), r"conv_seg.\1", False),
)


def is_released_layout(state: Mapping[str, Any]) -> bool:
    """True for a state dict (network prefix stripped) in DAFormer's / HRDA's mmseg 0.x
    names: SegFormer's MiT stages (``backbone.patch_embed1.*``, ``backbone.block1.*``)
    or the DAFormer head's ``embed_layers`` / ``fuse_layer`` (also under HRDA's
    ``decode_head.head.`` and ``decode_head.scale_attention.``)."""
    return any(marker.match(key) for key in state for marker in _RELEASED_MARKERS)


def _head_key(rest: str, value: torch.Tensor) -> tuple[str, torch.Tensor] | None:
    """One key of a DAFormer head (without its prefix) in our names, or None."""
    for pattern, target, linear in _HEAD_RULES:
        match = pattern.fullmatch(rest)
        if match:
            if linear and rest.endswith("weight") and value.ndim == 2:
                value = value.reshape(*value.shape, 1, 1)  # Linear -> 1x1 Conv2d
            return match.expand(target), value
    return None


def _backbone_keys(backbone: dict[str, torch.Tensor]
                   ) -> tuple[dict[str, tuple[torch.Tensor, list[str]]], list[str]]:
    """Released backbone keys (prefix stripped) -> ({our key: (value, released keys)}, unmapped)."""
    from experiments.models.segmentors import _segformer_to_mmseg

    mapped: dict[str, tuple[torch.Tensor, list[str]]] = {}
    unmapped: list[str] = []
    mit = any(_MIT_MARKER.match(k) for k in backbone)
    for key, value in backbone.items():
        if not mit:  # ResNet-V1c: the names of mmseg 0.x and 1.x agree
            mapped.setdefault(key, (value, []))[1].append(key)
            continue
        if not _MIT_STAGE.match(key):
            unmapped.append(key)
            continue
        if ".attn.kv." in key:  # folded into in_proj together with its q
            if key.replace(".attn.kv.", ".attn.q.") not in backbone:
                unmapped.append(key)
            continue
        try:
            item = _segformer_to_mmseg(key, value, backbone)
        except (ValueError, KeyError):  # q without kv, an MLP layer of unknown name
            item = None
        if item is None:
            unmapped.append(key)
            continue
        sources = [key] + ([key.replace(".attn.q.", ".attn.kv.")] if ".attn.q." in key else [])
        entry = mapped.setdefault(item[0], (item[1], []))
        entry[1].extend(sources)
    return mapped, unmapped


def _released_keys(state: Mapping[str, torch.Tensor]
                   ) -> tuple[dict[str, tuple[torch.Tensor, list[str]]], list[str]]:
    """Every key of a released state dict in our names, with the released keys it came from."""
    backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    inner, unmapped = _backbone_keys(backbone)
    mapped = {f"backbone.{k}": (v, [f"backbone.{s}" for s in sources])
              for k, (v, sources) in inner.items()}
    unmapped = [f"backbone.{k}" for k in unmapped]
    for key, value in state.items():
        if key.startswith("backbone."):
            continue
        item = None
        if key.startswith("decode_head."):
            rest = key[len("decode_head."):]
            prefix = "decode_head."
            for sub in _SUBHEADS:
                if rest.startswith(sub):
                    prefix, rest = prefix + sub, rest[len(sub):]
                    break
            item = _head_key(rest, value)
        if item is None:
            unmapped.append(key)
            continue
        mapped.setdefault(prefix + item[0], (item[1], []))[1].append(key)
    return mapped, unmapped


@dataclass
class Conversion:
    """The converted state dict and what happened on the way."""

    state: dict[str, torch.Tensor]
    released: bool  # False: the input was in our layout already and passed through
    source_keys: int
    filled: list[str] = field(default_factory=list)  # num_batches_tracked from the model

    def summary(self, source: str = "checkpoint") -> str:
        layout = "released mmseg 0.x layout" if self.released else "our layout"
        text = f"{source}: {self.source_keys} tensors in {layout} -> {len(self.state)} tensors"
        if self.filled:
            text += (f"; {len(self.filled)} BatchNorm num_batches_tracked counters absent, "
                     f"taken from the model (e.g. {self.filled[0]})")
        return text


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN]) + (f", ... ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")
    return f"  {title} ({len(items)}): {shown}"


def conversion(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
               source: str = "checkpoint") -> Conversion:
    """``convert`` with its summary: see ``convert``."""
    released = is_released_layout(state)
    if released:
        mapped, unmapped = _released_keys(state)
    else:
        mapped, unmapped = {k: (v, [k]) for k, v in state.items()}, []
    twice = sorted(f"{' + '.join(sources)} -> {key}" for key, (_, sources) in mapped.items()
                   if len(sources) > 1 and not (len(sources) == 2 and ".attn.q." in sources[0]
                                                and ".attn.kv." in sources[1]))
    for key, (_, sources) in mapped.items():
        if key not in expected:
            unmapped.extend(f"{s} (as {key})" if s != key else s for s in sources)
    result: dict[str, torch.Tensor] = {}
    shapes = []
    for key, (value, sources) in mapped.items():
        if key not in expected:
            continue
        if tuple(value.shape) != tuple(expected[key].shape):
            origin = " + ".join(sources) + (f" -> {key}" if sources != [key] else "")
            shapes.append(f"{origin}: {tuple(value.shape)} vs model {tuple(expected[key].shape)}")
        result[key] = value
    absent = [k for k in expected if k not in result]
    filled = sorted(k for k in absent if k.endswith("num_batches_tracked"))
    missing = sorted(k for k in absent if not k.endswith("num_batches_tracked"))
    if unmapped or missing or shapes or twice:
        lines = [f"{source} does not map onto the model "
                 f"({'released mmseg 0.x layout' if released else 'not in the released layout'}):"]
        for title, items in (("checkpoint keys without a place in the model", sorted(unmapped)),
                             ("checkpoint keys mapped onto one key", twice),
                             ("model keys left without a value", missing),
                             ("shape mismatches", sorted(shapes))):
            if items:
                lines.append(_listing(title, items))
        raise ValueError("\n".join(lines))
    for key in filled:
        result[key] = expected[key].detach().clone()
    ordered = {k: result[k] for k in expected}  # the model's key order
    return Conversion(ordered, released, len(state), filled)


def convert(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
            source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Map a released DAFormer / HRDA state dict onto the keys and shapes of ``expected``.

    Args:
        state: one network's state dict, network prefix stripped (``fusion.load_checkpoint``).
        expected: our model's ``state_dict()``: the target keys and shapes (and the
            values of ``num_batches_tracked`` counters the file lacks).
        source: how to name the input in messages (the checkpoint path).

    Returns:
        A state dict with exactly the keys of ``expected``, loadable with
        ``load_state_dict(strict=True)``. A state dict already in our layout
        (``is_released_layout`` False) passes through unchanged, after the same checks.

    Raises:
        ValueError naming every released key that does not map onto a key of ``expected``,
        every key of ``expected`` left without a value, every shape mismatch (the first
        20 of each, with counts), and released keys that would land on one key.
    """
    result = conversion(state, expected, source)
    logger.info(result.summary(source))
    return result.state


def load_released(path: str | os.PathLike, segmentor: str, network: str = "student",
                  **overrides: Any) -> dict[str, torch.Tensor]:
    """The state dict of ``network`` in checkpoint ``path``, in the layout of ``segmentor``.

    ``fusion.load_checkpoint(path, network)`` (``student`` = ``model.``, the network the
    authors evaluate; ``teacher`` = ``ema_model.``; ``imagenet`` = ``imnet_model.``), then
    ``convert`` against ``build_segmentor(segmentor, **overrides).state_dict()``
    (``overrides``: e.g. ``num_classes``). Load the result with
    ``model.load_state_dict(state)``.
    """
    from experiments.models.segmentors import build_segmentor
    from fusion.checkpoint import load_checkpoint

    state = load_checkpoint(path, network)
    expected = build_segmentor(segmentor, **overrides).state_dict()
    return convert(state, expected, source=f"{path} ({network})")
