"""Classification check of why merging works: disjoint class halves, merged models."""

from .data import (ImageSplit, class_halves, load_cifar100, load_digits, load_fashion_mnist,
                   read_idx, select_classes, to_tensors)
from .experiment import run_classification, run_seed
from .models import ResNetClassifier, backbone_state, build_classifier, load_backbone
from .training import Recipe, evaluate, interpolation_path, loss_barrier, merge_midpoint, train_classifier

__all__ = [
    "ImageSplit", "Recipe", "ResNetClassifier", "backbone_state", "build_classifier",
    "class_halves", "evaluate", "interpolation_path", "load_backbone", "load_cifar100",
    "load_digits", "load_fashion_mnist", "loss_barrier", "merge_midpoint", "read_idx",
    "run_classification", "run_seed", "select_classes", "to_tensors", "train_classifier",
]
