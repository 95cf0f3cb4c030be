"""The source/target batches of self-training, a function of (seed, iteration) only.

Source images are drawn uniformly or by rare class sampling, targets uniformly from the
union of the target datasets (data combination when there are several); every sample goes
through the mmseg pipeline of its role (``experiments.data.transforms.Pipeline``: keep-ratio
resize, random crop — with ``cat_max_ratio`` on source crops —, flip, pad). Each iteration's
draws come from its own generator, so the batch of iteration t is the same whether it is
built here or in a DataLoader worker, in order or after a resume.

``BatchMaker.cpu_batch(t)`` builds it on the host (uint8 arrays, what a worker returns);
``BatchMaker.batches(start, stop)`` yields device batches, decoded ahead in
``data.workers`` DataLoader worker processes at paper scale (no dataset is held in
memory), or in this process with every decoded miniature image cached
(``data.cache_in_memory``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from experiments.data.class_stats import class_statistics, load_class_statistics
from experiments.data.labels import NUM_CLASSES
from experiments.data.transforms import Pipeline, keep_ratio_size
from experiments.selftraining import checkpoints as ckpt
from experiments.selftraining import recipe as st


def _pair(value) -> tuple[int, int] | None:
    return None if value is None else (int(value[0]), int(value[1]))


def _scale_of(resize, name: str) -> tuple[int, int] | None:
    """A role's resize scale: one [W, H] for all its datasets, or a {dataset: [W, H]} table."""
    if resize is None:
        return None
    if OmegaConf.is_dict(resize) or isinstance(resize, dict):
        if name not in resize:
            raise ValueError(f"target.resize has no entry for {name!r} (entries: {sorted(resize)})")
        return _pair(resize[name])
    return _pair(resize)


class BatchMaker:
    """The source/target batch of iteration t, a function of (seed, t) only."""

    def __init__(self, cfg: DictConfig, device: torch.device):
        from experiments.data import datasets

        self.cfg, self.device, self.seed = cfg, device, int(cfg.seed)
        data, mode = cfg.data, cfg.recipe.mode
        self.source = datasets.load(cfg.source.name, cfg.source.root, cfg.source.split, **cfg.source.options)
        names, options = list(cfg.target.names), cfg.target.get("options") or {}
        root = lambda n: (cfg.target.get("roots") or {}).get(n) or f"{cfg.data_root}/{n}"  # noqa: E731
        self.targets = [datasets.load(n, root(n), cfg.target.split, with_labels=mode == "oracle",
                                      **options.get(n, {})) for n in names]
        self.offsets = [0]
        for t in self.targets:
            self.offsets.append(self.offsets[-1] + len(t))
        self.val_sets = {}
        if cfg.schedule.val_images:
            for n in names:
                val = datasets.load(n, root(n), "val", **options.get(n, {}))
                self.val_sets[n] = _Head(val, int(cfg.schedule.val_images))
        crop, flip = _pair(data.crop), float(data.flip)
        margins = cfg.recipe.pseudo_label.get("crop_margins")
        self.source_pipeline = Pipeline(_scale_of(cfg.source.resize, cfg.source.name), crop,
                                        data.get("cat_max_ratio"), flip)
        self.target_pipelines = [Pipeline(_scale_of(cfg.target.resize, n), crop, None, flip,
                                          None if margins is None else tuple(int(m) for m in margins))
                                 for n in names]
        self._cache: dict | None = {} if data.cache_in_memory else None
        self.rcs = None
        if mode != "oracle" and cfg.recipe.rcs.enabled:
            counts = class_counts(self.source, Path(cfg.runs_root) / "cache")
            if cfg.recipe.rcs.scale_min_pixels:  # the miniature's tiny images: threshold scaled by area
                image, _ = self._read(self.source, 0)
                scale = self.source_pipeline.scale
                shape = keep_ratio_size(*image.shape[:2], scale) if scale else image.shape[:2]
                min_pixels = st.scaled_min_pixels(cfg.recipe.rcs.min_pixels, shape)
            else:  # DAFormer / HRDA: 3,000 pixels counted on the native-resolution labels
                min_pixels = int(cfg.recipe.rcs.min_pixels)
            self.rcs = st.RareClassSampler(counts, cfg.recipe.rcs.temperature, min_pixels)

    def check_labels(self) -> None:
        """Read the first label of every labelled split this run uses (the source's were all
        read for rare class sampling): a wrong encoding is refused before training starts."""
        for dataset in [self.source, *self.targets, *(v.dataset for v in self.val_sets.values())]:
            if len(dataset) and dataset.label_paths and dataset.label_paths[0] is not None:
                dataset.read_label(0)

    def _read(self, dataset, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        key = (id(dataset), index)
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        item = dataset[index]
        pair = (item["image"], item["label"])
        if self._cache is not None:
            self._cache[key] = pair
        return pair

    def _source_sample(self, g: torch.Generator) -> dict:
        if self.rcs is None:
            image, label = self._read(self.source, int(torch.randint(len(self.source), (1,), generator=g)))
            return self.source_pipeline(image, label, g)
        cls, index = self.rcs.sample(g)
        image, label = self._read(self.source, index)
        # DAFormer re-runs the pipeline (a new crop) until the rare class covers enough of it
        needed = self.rcs.min_pixels * self.cfg.recipe.rcs.min_crop_ratio
        for _ in range(int(self.cfg.recipe.rcs.recrop)):
            sample = self.source_pipeline(image, label, g)
            if (sample["label"] == cls).sum() > needed:
                break
        return sample

    def _target_sample(self, g: torch.Generator) -> dict:
        flat = int(torch.randint(self.offsets[-1], (1,), generator=g))
        k = max(i for i, o in enumerate(self.offsets[:-1]) if o <= flat)
        image, label = self._read(self.targets[k], flat - self.offsets[k])
        return self.target_pipelines[k](image, label, g)

    def cpu_batch(self, iteration: int) -> dict[str, np.ndarray]:
        """Iteration ``iteration``'s samples, stacked uint8 arrays on the host."""
        g = ckpt.iteration_generator(self.seed, iteration, 1)
        out: dict[str, np.ndarray] = {}
        mode = self.cfg.recipe.mode
        if mode != "oracle":
            samples = [self._source_sample(g) for _ in range(int(self.cfg.data.source_batch))]
            out["source"], out["source_label"] = _stack(samples, "source"), _stack(samples, "label", "source")
        if mode != "source_only":
            samples = [self._target_sample(g) for _ in range(int(self.cfg.data.target_batch))]
            if mode == "oracle" and any(s["label"] is None for s in samples):
                raise ValueError(f"recipe=oracle needs target labels; {self.cfg.target.names} "
                                 f"split {self.cfg.target.split!r} has none")
            out["target"] = _stack(samples, "target")
            if samples[0]["label"] is not None:
                out["target_label"] = _stack(samples, "label", "target")
            if "valid" in samples[0]:
                out["target_valid"] = _stack(samples, "valid", "target")
        return out

    def to_device(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Images as float [0, 1] B x 3 x H x W, labels long, margin masks float, on the device."""
        out = {}
        for key, array in batch.items():
            tensor = torch.from_numpy(array)
            if key in ("source", "target"):
                tensor = tensor.permute(0, 3, 1, 2).float() / 255.0
            elif key.endswith("_label"):
                tensor = tensor.long()
            else:
                tensor = tensor.float()
            out[key] = tensor.to(self.device)
        return out

    def batch(self, iteration: int) -> dict[str, torch.Tensor]:
        return self.to_device(self.cpu_batch(iteration))

    def batches(self, start: int, stop: int) -> Iterator[dict[str, torch.Tensor]]:
        """Device batches of iterations start..stop-1, in order."""
        workers = int(self.cfg.data.get("workers") or 0)
        if workers == 0 or self._cache is not None:
            for iteration in range(start, stop):
                yield self.batch(iteration)
            return
        loader = torch.utils.data.DataLoader(_Iterations(self, start, stop), batch_size=None, shuffle=False,
                                             num_workers=workers, pin_memory=self.device.type == "cuda",
                                             prefetch_factor=2, persistent_workers=False)
        for batch in loader:
            yield self.to_device({k: v.numpy() if torch.is_tensor(v) else v for k, v in batch.items()})


class _Iterations(torch.utils.data.Dataset):
    """Iterations start..stop-1 as a dataset: item i is the batch of iteration start + i."""

    def __init__(self, maker: BatchMaker, start: int, stop: int):
        self.maker, self.start, self.stop = maker, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return self.maker.cpu_batch(self.start + index)


class _Head(torch.utils.data.Dataset):
    """The first ``count`` samples of a dataset, decoded when read (nothing held in memory)."""

    def __init__(self, dataset, count: int):
        self.dataset, self.count = dataset, min(count, len(dataset))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.count:
            raise IndexError(index)
        return self.dataset[index]


def _stack(samples: list[dict], key: str, role: str | None = None) -> np.ndarray:
    arrays = [s["image" if key in ("source", "target") else key] for s in samples]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"{role or key} samples of one batch differ in size {sorted(shapes)}: set data.crop "
                         "(images of mixed sizes are cropped and padded to one size)")
    return np.stack(arrays)


def class_counts(dataset, cache_dir: Path) -> np.ndarray:
    """N x NUM_CLASSES class pixel counts of a labelled dataset, on its native-resolution labels,
    cached by its label files' identity (the data-prep file of ``experiments.data.class_stats``)."""
    key = hashlib.sha256("\n".join(map(str, dataset.label_paths)).encode()).hexdigest()[:16]
    path = cache_dir / f"class_stats_{dataset.name}_{key}.json"
    records = load_class_statistics(path) if path.exists() else class_statistics(dataset, path)
    return np.array([[r["counts"].get(c, 0) for c in range(NUM_CLASSES)] for r in records], dtype=np.int64)
