"""The source/target batches of self-training, a function of (seed, iteration) only.

Source images are drawn uniformly or by rare class sampling, targets from the union of
the target datasets; each is resized, cropped and flipped as DAFormer's pipeline does.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from experiments.selftraining import checkpoints as ckpt
from experiments.selftraining import recipe as st
from experiments.data.class_stats import class_statistics, load_class_statistics
from experiments.data.labels import NUM_CLASSES


class BatchMaker:
    """The source/target batch of iteration t, a function of (seed, t) only.

    Source images are drawn uniformly or by rare class sampling, targets uniformly from the
    union of the target datasets (data combination when there are several); each image is
    resized (paper scale), randomly cropped and flipped as in DAFormer's pipeline.
    """

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
                self.val_sets[n] = [val[i] for i in range(min(len(val), int(cfg.schedule.val_images)))]
        self._cache: dict | None = {} if data.cache_in_memory else None
        self.rcs = None
        if mode != "oracle" and cfg.recipe.rcs.enabled:
            counts = class_counts(self.source, Path(cfg.runs_root) / "cache")
            shape = self._item(self.source, 0, "source")["image"].shape[:2]
            min_pixels = (st.scaled_min_pixels(cfg.recipe.rcs.min_pixels, shape) if cfg.recipe.rcs.scale_min_pixels
                          else int(cfg.recipe.rcs.min_pixels))
            self.rcs = st.RareClassSampler(counts, cfg.recipe.rcs.temperature, min_pixels)

    def _item(self, dataset, index: int, role: str) -> dict:
        key = (role, id(dataset), index)
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        item = dataset[index]
        size = self.cfg.source.resize if role == "source" else self.cfg.target.resize
        if size is not None:
            import cv2

            h, w = int(size[0]), int(size[1])
            item = dict(item, image=cv2.resize(item["image"], (w, h), interpolation=cv2.INTER_LINEAR))
            if item["label"] is not None:
                item["label"] = cv2.resize(item["label"], (w, h), interpolation=cv2.INTER_NEAREST)
        if self._cache is not None:
            self._cache[key] = item
        return item

    def _crop(self, item: dict, g: torch.Generator, rare_class: int | None) -> tuple:
        image, label = item["image"], item["label"]
        crop = self.cfg.data.crop
        if crop is not None:
            ch, cw = min(int(crop[0]), image.shape[0]), min(int(crop[1]), image.shape[1])
            attempts = int(self.cfg.recipe.rcs.recrop) if rare_class is not None else 1
            for _ in range(attempts):  # DAFormer re-crops until the rare class is in view
                y = int(torch.randint(image.shape[0] - ch + 1, (1,), generator=g))
                x = int(torch.randint(image.shape[1] - cw + 1, (1,), generator=g))
                if rare_class is None or (label[y:y + ch, x:x + cw] == rare_class).sum() > \
                        self.rcs.min_pixels * self.cfg.recipe.rcs.min_crop_ratio:
                    break
            image = image[y:y + ch, x:x + cw]
            label = label[y:y + ch, x:x + cw] if label is not None else None
        if torch.rand(1, generator=g).item() < self.cfg.data.flip:
            image = image[:, ::-1]
            label = label[:, ::-1] if label is not None else None
        img = torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255.0
        return img, (torch.from_numpy(label.copy()).long() if label is not None else None)

    def _stack(self, pairs: list) -> tuple:
        images = torch.stack([p[0] for p in pairs]).to(self.device)
        labels = torch.stack([p[1] for p in pairs]).to(self.device) if pairs[0][1] is not None else None
        return images, labels

    def batch(self, iteration: int) -> dict[str, torch.Tensor]:
        g = ckpt.iteration_generator(self.seed, iteration, 1)
        out: dict[str, torch.Tensor] = {}
        if self.cfg.recipe.mode != "oracle":
            pairs = []
            for _ in range(int(self.cfg.data.source_batch)):
                cls, index = self.rcs.sample(g) if self.rcs else (None, int(torch.randint(len(self.source), (1,), generator=g)))
                pairs.append(self._crop(self._item(self.source, index, "source"), g, cls))
            out["source"], out["source_label"] = self._stack(pairs)
        if self.cfg.recipe.mode != "source_only":
            pairs = []
            for _ in range(int(self.cfg.data.target_batch)):
                flat = int(torch.randint(self.offsets[-1], (1,), generator=g))
                k = max(i for i, o in enumerate(self.offsets[:-1]) if o <= flat)
                pairs.append(self._crop(self._item(self.targets[k], flat - self.offsets[k], "target"), g, None))
            if self.cfg.recipe.mode == "oracle" and any(p[1] is None for p in pairs):
                raise ValueError(f"recipe=oracle needs target labels; {self.cfg.target.names} "
                                 f"split {self.cfg.target.split!r} has none")
            out["target"], out["target_label"] = self._stack(pairs)
        return out


def class_counts(dataset, cache_dir: Path) -> np.ndarray:
    """N x NUM_CLASSES class pixel counts of a labelled dataset, cached by its label files' identity.

    The cache is the data-prep file of ``experiments.data.class_stats`` (rare class sampling).
    """
    key = hashlib.sha256("\n".join(map(str, dataset.label_paths)).encode()).hexdigest()[:16]
    path = cache_dir / f"class_stats_{dataset.name}_{key}.json"
    records = load_class_statistics(path) if path.exists() else class_statistics(dataset, path)
    return np.array([[r["counts"].get(c, 0) for c in range(NUM_CLASSES)] for r in records], dtype=np.int64)
