"""Where a model's weights are and how to rebuild its network: the one reading of run folders.

A model is named by a run folder (training or merge) or by a weights file. A run folder's
``manifest.json`` says how to rebuild the network (its ``model`` entry: segmentor, build
overrides, saved network) and which file holds the weights:

- a training run: ``model.pth`` (DAFormer layout; the manifest names the network to use);
- a merge run: ``merged.safetensors``;
- an encoder-only merge (paper Table 1, dagger): one full model per member in ``head<i>/``
  (the merged encoder with member i's decode head), each a complete run folder of its own;
  the merge manifest's ``heads`` lists them with the target domains of their members, so
  domain d is scored with the head of the member trained on d.

Every state dict is checked for NaN/Inf before use (``fusion.check_finite``), the same
refusal a merge gives, naming the keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

import fusion
from experiments.infra.runs import read_manifest

WEIGHT_FILES = ("model.pth", "merged.safetensors")


@dataclass(frozen=True)
class Weights:
    """One weights file, the network to read from it, and the domains it is for (None: all)."""

    path: Path
    network: str = "student"
    domains: tuple[str, ...] | None = None

    def load(self) -> dict[str, torch.Tensor]:
        # A merge run's manifest says "merged": its file holds that one network, read whole.
        network = "student" if self.network == "merged" else self.network
        state = fusion.load_checkpoint(self.path, network=network)
        try:
            fusion.check_finite([state])
        except ValueError as error:
            raise ValueError(f"{self.path}: {error}") from None
        return state


@dataclass
class ModelSource:
    """A model to evaluate or adapt: segmentor, build overrides and its weights per domain."""

    label: str
    segmentor: str
    overrides: dict[str, Any] = field(default_factory=dict)
    weights: list[Weights] = field(default_factory=list)
    run_dir: Path | None = None

    def weights_for(self, domain: str) -> Weights:
        """The weights domain ``domain`` is scored with (an encoder-only merge: its own head)."""
        for entry in self.weights:
            if entry.domains is None or domain in entry.domains:
                return entry
        heads = {str(w.path): list(w.domains or ()) for w in self.weights}
        raise ValueError(f"{self.label}: no head for domain {domain!r}; heads and their members' targets: {heads}")

    def inputs(self) -> dict[str, Path]:
        """Weights files by role, for a manifest's inputs (sha256 recorded)."""
        if len(self.weights) == 1:
            return {"weights": self.weights[0].path}
        return {f"weights_{i}": w.path for i, w in enumerate(self.weights)}

    def state(self, weights: Weights | None = None) -> dict[str, torch.Tensor]:
        """The state dict of ``weights`` (default: the first) in the project's key layout.

        A checkpoint released with DAFormer or HRDA (mmseg 0.x names) is converted on the
        way (``experiments.models.released``); what does not map is refused with the keys.
        """
        from experiments.models import released

        weights = weights or self.weights[0]
        state = weights.load()
        if released.is_released_layout(state):
            from experiments.models.segmentors import build_segmentor

            expected = build_segmentor(self.segmentor, **self.overrides).state_dict()
            state = released.convert(state, expected, source=str(weights.path))
        return state

    def build(self, state: Mapping[str, torch.Tensor] | None = None) -> torch.nn.Module:
        """A fresh network in eval mode, with ``state`` (default: the first weights) loaded strictly."""
        from experiments.models.segmentors import build_segmentor, load_into

        model = build_segmentor(self.segmentor, **self.overrides)
        state = self.state() if state is None else state
        load_into(model, state, f"{self.label} ({self.segmentor})")
        return model.eval()

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "segmentor": self.segmentor, "overrides": self.overrides,
                "run_dir": None if self.run_dir is None else str(self.run_dir),
                "weights": [{"path": str(w.path), "network": w.network,
                             "domains": None if w.domains is None else list(w.domains)} for w in self.weights]}


def model_info(run_dir: str | Path) -> dict[str, Any]:
    """The ``model`` entry of a complete run folder's manifest (segmentor, overrides, network)."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    if manifest is None:
        raise FileNotFoundError(f"{run_dir}: no manifest.json (not a run folder, or never started)")
    if manifest.get("status") != "complete":
        raise ValueError(f"{run_dir}: status {manifest.get('status')!r}, not complete"
                         + (f" ({manifest['error']})" if manifest.get("error") else ""))
    info = manifest.get("model")
    if not info or "segmentor" not in info:
        raise ValueError(f"{run_dir}/manifest.json has no 'model' entry with a segmentor")
    return info


def from_run(run_dir: str | Path, network: str | None = None, label: str | None = None) -> ModelSource:
    """The model of a complete training, merge or merge-head run folder."""
    run_dir = Path(run_dir)
    info = model_info(run_dir)
    manifest = read_manifest(run_dir) or {}
    network = network or info.get("network", "student")
    heads = manifest.get("heads")
    if heads:  # an encoder-only merge: one model per member's head
        weights = [Weights(run_dir / h["folder"] / "merged.safetensors", network,
                           tuple(h.get("domains") or ())) for h in heads]
    else:
        found = next((run_dir / n for n in WEIGHT_FILES if (run_dir / n).is_file()), None)
        if found is None:
            raise FileNotFoundError(f"{run_dir}: complete, but holds none of {', '.join(WEIGHT_FILES)}")
        weights = [Weights(found, network)]
    return ModelSource(label or run_dir.name, info["segmentor"], dict(info.get("overrides") or {}), weights,
                       run_dir)


def from_checkpoint(path: str | Path, segmentor: str, overrides: Mapping[str, Any] | None = None,
                    network: str = "student", label: str | None = None) -> ModelSource:
    """A weights file with the network description given by the caller."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    return ModelSource(label or path.stem, segmentor, dict(overrides or {}), [Weights(path, network)])


def stand_in(source: ModelSource) -> bool:
    """Whether the model comes from the miniature stand-in (its run folder says so)."""
    if source.run_dir is None:
        return False
    return bool((read_manifest(source.run_dir) or {}).get("stand_in"))


class OutputEnsemble(torch.nn.Module):
    """K networks as one: class probabilities averaged, returned as log-probabilities.

    The usual upper reference for merging: K forward passes per image and K models kept.
    Its ``inference_logits`` is what ``decoder_logits`` calls, so every test protocol
    (whole image, slide windows, test scale) scores it like any single segmentor; taking the
    arg-max of log(mean softmax) is taking it of the mean softmax.
    """

    def __init__(self, members: list[torch.nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an output ensemble needs at least one member")
        self.members = torch.nn.ModuleList(members)

    def inference_logits(self, images: torch.Tensor) -> torch.Tensor:
        from experiments.models.segmentors import decoder_logits

        outputs = [decoder_logits(m, images).float() for m in self.members]
        size = outputs[0].shape[2:]
        if any(o.shape[2:] != size for o in outputs):
            raise ValueError(f"ensemble members predict at different resolutions: {[tuple(o.shape) for o in outputs]}")
        probabilities = torch.stack([o.softmax(1) for o in outputs]).mean(0)
        return probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny).log()


@dataclass
class EnsembleSource:
    """The output ensemble of complete single-model run folders, evaluated like a ``ModelSource``."""

    label: str
    members: list[ModelSource]
    run_dir: Path | None = None

    def __post_init__(self) -> None:
        multi = [m.label for m in self.members if len(m.weights) != 1]
        if multi:
            raise ValueError(f"ensemble members must be single models, not encoder-only merges: {multi}")

    @property
    def weights(self) -> list[Weights]:
        return [m.weights[0] for m in self.members]

    def weights_for(self, domain: str) -> Weights:
        return self.weights[0]  # one network for every domain

    def inputs(self) -> dict[str, Path]:
        return {f"member{i}": w.path for i, w in enumerate(self.weights)}

    def state(self, weights: Weights | None = None) -> None:
        return None  # the members load their own weights in build()

    def build(self, state: None = None) -> torch.nn.Module:
        return OutputEnsemble([m.build() for m in self.members]).eval()

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "ensemble": [m.describe() for m in self.members]}


def ensemble_of(run_dirs: list[str | Path], label: str = "ensemble") -> EnsembleSource:
    return EnsembleSource(label, [from_run(r) for r in run_dirs])
