"""The miniature benchmark: procedurally generated street scenes standing in for the paper's
datasets, written in their real folder layouts and label encodings (``generate``)."""

from experiments.data.miniature.builder import DATASETS, GENERATOR_VERSION, generate, generate_scale, render_sample
from experiments.data.miniature.report import NOTE

__all__ = ["DATASETS", "GENERATOR_VERSION", "NOTE", "generate", "generate_scale", "render_sample"]
