"""Image classification data for the merging check: CIFAR-100, Fashion-MNIST, class halves.

The paper (Li et al., ECCV 2024, "why does merging work") splits CIFAR-100 into two
disjoint halves of its classes, fine-tunes one model on each, and merges them. CIFAR-100
is read from the official python-pickle release supplied by the user; Fashion-MNIST, real
photographs that install offline (Debian ``dataset-fashion-mnist``), is the default.

Every loader returns ``images`` as uint8 arrays of shape (N, H, W, C) and ``labels`` as
int64 arrays of shape (N,), so the rest of the experiment does not care which it got.
"""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# The idx format's magic number: two zero bytes, a type code (0x08 = unsigned byte) and
# the number of dimensions.
_IDX_UBYTE = 0x08


@dataclass(frozen=True)
class ImageSplit:
    """One split of a classification dataset."""

    images: np.ndarray  # uint8, (N, H, W, C)
    labels: np.ndarray  # int64, (N,)
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, H, W, C), got {self.images.dtype} {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what}: missing file {path}")
    return path


# ---------------------------------------------------------------- CIFAR-100

def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            # The official release was pickled by Python 2: its keys are bytes.
            data = pickle.load(handle, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise ValueError(f"{path} is not a CIFAR-100 python pickle: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}, expected a dict")
    return {key.decode() if isinstance(key, bytes) else key: value for key, value in data.items()}


def _field(data: dict, key: str, path: Path):
    if key not in data:
        raise KeyError(f"{path} has no key {key!r} (has {sorted(data)})")
    return data[key]


def load_cifar100(root: str | Path, split: str = "train") -> ImageSplit:
    """Read ``root/{train,test}`` and ``root/meta`` of the official python release.

    ``root`` is the ``cifar-100-python`` folder (or the folder that contains it). Labels
    are the 100 fine labels.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    if not (root / "meta").exists() and (root / "cifar-100-python").is_dir():
        root = root / "cifar-100-python"
    data_path = _require(root / split, "CIFAR-100")
    meta_path = _require(root / "meta", "CIFAR-100")
    data, meta = _unpickle(data_path), _unpickle(meta_path)
    flat = np.asarray(_field(data, "data", data_path))
    labels = np.asarray(_field(data, "fine_labels", data_path), dtype=np.int64)
    names = tuple(n.decode() if isinstance(n, bytes) else str(n)
                  for n in _field(meta, "fine_label_names", meta_path))
    if flat.dtype != np.uint8 or flat.ndim != 2 or flat.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{data_path}: 'data' must be uint8 (N, 3072), got {flat.dtype} {flat.shape}")
    if len(names) != 100:
        raise ValueError(f"{meta_path}: expected 100 fine_label_names, got {len(names)}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
        raise ValueError(f"{data_path}: fine_labels outside 0..{len(names) - 1}")
    # Each row is the red, then green, then blue 32x32 plane.
    images = flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    return ImageSplit(images, labels, names)


# ------------------------------------------------------------- Fashion-MNIST

def read_idx(path: str | Path) -> np.ndarray:
    """Read one (optionally gzipped) idx file of unsigned bytes."""
    path = _require(Path(path), "idx file")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except OSError as error:
        raise ValueError(f"{path}: cannot read: {error}") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE:
        raise ValueError(f"{path}: not an unsigned-byte idx file (header {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_fashion_mnist(root: str | Path = FASHION_MNIST_ROOT, split: str = "train") -> ImageSplit:
    """Read Fashion-MNIST's gzipped idx files from ``root`` (Debian: ``dataset-fashion-mnist``)."""
    if split not in _FASHION_MNIST_FILES:
        raise ValueError(f"split must be one of {sorted(_FASHION_MNIST_FILES)}, got {split!r}")
    root = Path(root)
    image_file, label_file = _FASHION_MNIST_FILES[split]
    for name in (image_file, label_file):
        if not (root / name).is_file():
            raise FileNotFoundError(
                f"Fashion-MNIST: missing file {root / name} "
                "(on Debian: apt-get install dataset-fashion-mnist)")
    images, labels = read_idx(root / image_file), read_idx(root / label_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{root}: images {images.shape} and labels {labels.shape} do not pair up")
    if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise ValueError(f"{root / label_file}: label {labels.max()} outside 0..9")
    return ImageSplit(images[..., None].copy(), labels.astype(np.int64), FASHION_MNIST_CLASSES)


def load_split(name: str, root: str | Path | None, split: str) -> ImageSplit:
    """Dispatch on the dataset name used in the configs."""
    if name == "fashion_mnist":
        return load_fashion_mnist(root or FASHION_MNIST_ROOT, split)
    if name == "cifar100":
        if not root:
            raise ValueError("cifar100 needs data.root: the folder of the official python release")
        return load_cifar100(root, split)
    raise ValueError(f"unknown dataset {name!r}; expected 'fashion_mnist' or 'cifar100'")


# ------------------------------------------------------- halves and tensors

def class_halves(num_classes: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The two disjoint halves of the label set: the first and the second half of the ids."""
    if num_classes < 2:
        raise ValueError(f"need at least two classes to split, got {num_classes}")
    middle = num_classes // 2
    return tuple(range(middle)), tuple(range(middle, num_classes))


def select_classes(data: ImageSplit, classes: tuple[int, ...], per_class: int | None,
                   seed: int) -> ImageSplit:
    """Keep ``per_class`` random examples of each class in ``classes`` (all when None).

    Labels keep their original ids: both halves share one output layer over all classes.
    """
    rng = np.random.default_rng(seed)
    keep = []
    for label in classes:
        index = np.flatnonzero(data.labels == label)
        if per_class is not None:
            if len(index) < per_class:
                raise ValueError(f"class {label} has {len(index)} examples, {per_class} requested")
            index = rng.choice(index, per_class, replace=False)
        keep.append(index)
    order = np.sort(np.concatenate(keep))
    return ImageSplit(data.images[order], data.labels[order], data.class_names)


def to_tensors(data: ImageSplit, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Float images (N, 3, S, S) scaled to [-1, 1], and int64 labels.

    Grey images are repeated over three channels so ImageNet weights apply; [-1, 1] is
    the input range EfficientNet-Lite was trained with.
    """
    images = torch.from_numpy(data.images).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if images.shape[-1] != image_size or images.shape[-2] != image_size:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear",
                               align_corners=False, antialias=True)
    # Channels-last: EfficientNet's depthwise convolutions run ~25% faster on CPU (measured).
    return images.contiguous(memory_format=torch.channels_last), torch.from_numpy(data.labels).long()


def load_digits() -> ImageSplit:
    """scikit-learn's 1,797 real 8x8 handwritten digits, as uint8 images.

    Used only to pretrain the second, different initialisation (see ``pretraining.py``):
    a real dataset that ships with an installed package and shares no images with
    Fashion-MNIST.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    # Pixel values are counts 0..16 of an original 32x32 bitmap's 4x4 blocks.
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return ImageSplit(images, bunch.target.astype(np.int64), tuple(str(d) for d in range(10)))
