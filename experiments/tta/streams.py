"""Wild test streams (SAR, Niu et al. 2023, Sec. 3): the orders in which an online
adapter meets unlabelled test data.

A stream is a list of samples ``{"image": uint8 H x W x 3, "label": ..., "domain": str}``
cut into batches. Settings:
- ``single``: one domain (or one corruption type) at a time, its samples shuffled with
  the seed (SAR's released main.py shuffles the test loader, ``if_shuffle=True``, in every
  setting but the label-shift one); the adapter starts from the source model for each
  domain, as in Tent's protocol.
- ``mixed``: all domains (corruption types) shuffled into one stream, adapted
  continually without resets (SAR's "mixture of distribution shifts").
- ``batch1``: the single-shift stream (same order) with batch size 1 (SAR's "batch size 1").
- ``imbalance``: the single-shift stream reordered so that the label distribution
  drifts: phase k serves mostly class k (SAR's "online imbalanced label distribution
  shift"); within a phase the current class is ``imbalance_ratio`` times as likely as each
  other class, ``inf`` sorts the stream by class. For segmentation an image's class is its
  most frequent labelled trainId.
- ``corrupted``: the mixed stream with an ImageNet-C corruption on top of each image
  (Hendrycks & Dietterich, ICLR 2019; ``experiments.tta.corruptions``), the types of
  ``corruptions`` taken in turn at one ``severity``: a shift within the shift, as SAR's
  mixture of corruption types.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from experiments.tta.corruptions import corrupt

Sample = dict[str, Any]
SETTINGS = ("single", "mixed", "batch1", "imbalance", "corrupted")
# Corruptions of the ``corrupted`` setting by default: noise, blur, weather and digital ones.
DEFAULT_CORRUPTIONS = ("gaussian_noise", "defocus_blur", "fog", "contrast")


def dominant_class(label: np.ndarray, ignore_index: int = 255) -> int:
    """Most frequent labelled class of a segmentation label map (-1 when all ignored)."""
    values = np.asarray(label).ravel()
    values = values[values != ignore_index]
    return int(np.bincount(values).argmax()) if values.size else -1


def sample_class(sample: Sample) -> int:
    label = sample["label"]
    return int(label) if np.ndim(label) == 0 else dominant_class(label)


def mixed(domains: Mapping[str, Sequence[Sample]], seed: int = 0) -> list[Sample]:
    """All samples of all domains in one randomly interleaved stream."""
    pool = [dict(s, domain=name) for name, samples in domains.items() for s in samples]
    order = np.random.default_rng(seed).permutation(len(pool))
    return [pool[i] for i in order]


def label_imbalanced(samples: Sequence[Sample], imbalance_ratio: float = math.inf, seed: int = 0,
                     key: Callable[[Sample], int] = sample_class) -> list[Sample]:
    """Reorder ``samples`` so that class k dominates phase k (classes in ascending order).

    Every phase has the same length; at each position the next sample is drawn (without
    replacement) from the phase's class with weight ``imbalance_ratio`` and from every
    other class with weight 1. ``inf`` gives a stream sorted by class, 1 a uniform shuffle.
    """
    if imbalance_ratio < 1:
        raise ValueError(f"imbalance_ratio must be >= 1, got {imbalance_ratio}")
    rng = np.random.default_rng(seed)
    buckets: dict[int, list[Sample]] = {}
    for i in rng.permutation(len(samples)):
        buckets.setdefault(key(samples[i]), []).append(samples[i])
    classes = sorted(buckets)
    if math.isinf(imbalance_ratio):
        return [s for c in classes for s in buckets[c]]
    phase = math.ceil(len(samples) / len(classes))
    out: list[Sample] = []
    for position in range(len(samples)):
        current = classes[min(position // phase, len(classes) - 1)]
        left = [c for c in classes if buckets[c]]
        weights = np.array([imbalance_ratio if c == current else 1.0 for c in left])
        pick = left[rng.choice(len(left), p=weights / weights.sum())]
        out.append(buckets[pick].pop())
    return out


def corrupted(samples: Sequence[Sample], corruptions: Sequence[str], severity: int, seed: int = 0) -> list[Sample]:
    """``samples`` with the corruptions applied in turn, one per image (labels and domains
    kept); each sample records its corruption, and its ``id`` says so (another image: memos
    of uncorrupted predictions must not match it)."""
    rng = np.random.default_rng(seed)
    out = []
    for index, sample in enumerate(samples):
        name = f"{corruptions[index % len(corruptions)]}-{severity}"
        extra = {"id": f"{sample['id']}|{name}"} if "id" in sample else {}
        out.append(dict(sample, image=corrupt(sample["image"], name.rsplit("-", 1)[0], severity, rng),
                        corruption=name, **extra))
    return out


def shuffled(samples: Sequence[Sample], seed: int = 0, stream: int = 0) -> list[Sample]:
    """``samples`` in a random order fixed by (``seed``, ``stream``)."""
    order = np.random.default_rng((seed, stream)).permutation(len(samples))
    return [samples[i] for i in order]


def batches(samples: Sequence[Sample], batch_size: int) -> Iterator[list[Sample]]:
    """Consecutive batches; the last one may be shorter."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(samples), batch_size):
        yield list(samples[start:start + batch_size])


def build_streams(setting: str, domains: Mapping[str, Sequence[Sample]], batch_size: int,
                  seed: int = 0, imbalance_ratio: float = math.inf,
                  corruptions: Sequence[str] = DEFAULT_CORRUPTIONS, severity: int = 3
                  ) -> list[tuple[str, list[Sample], int]]:
    """The streams of one wild setting as (stream name, samples, batch size) triples.

    ``single`` / ``batch1`` / ``imbalance`` give one stream per domain (each adapted from
    the source model), ``mixed`` one stream over all domains.
    """
    if setting not in SETTINGS:
        raise ValueError(f"unknown stream setting {setting!r}; known: {', '.join(SETTINGS)}")
    tagged = {name: [dict(s, domain=name) for s in samples] for name, samples in domains.items()}
    if setting == "mixed":
        return [("mixed", mixed(tagged, seed), batch_size)]
    if setting == "corrupted":
        return [("mixed", corrupted(mixed(tagged, seed), corruptions, severity, seed), batch_size)]
    if setting == "imbalance":
        return [(name, label_imbalanced(samples, imbalance_ratio, seed), batch_size)
                for name, samples in tagged.items()]
    size = 1 if setting == "batch1" else batch_size
    return [(name, shuffled(samples, seed, k), size) for k, (name, samples) in enumerate(tagged.items())]
