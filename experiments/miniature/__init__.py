"""The miniature benchmark: procedurally generated street scenes standing in for the paper's
datasets, written in their real folder layouts and label encodings (``generate``)."""

from experiments.miniature.builder import DATASETS, GENERATOR_VERSION, generate, render_sample
from experiments.miniature.report import NOTE

__all__ = ["DATASETS", "GENERATOR_VERSION", "NOTE", "generate", "render_sample"]
