"""Training-free merging of any number of models, as pure functions on state dicts.

Torch only: no Hydra, no mmseg. The weighted sum runs in a small C kernel
compiled on first use where a C compiler exists (``fusion.native``), else on
torch operations. Entries are matched by name; float parameters, BatchNorm
statistics and integer counters each follow their own rule (docs/method.md).
``python -m fusion`` builds the kernel and says which engine merges use.
The merging methods from the literature (DARE, Model Breadcrumbs, TSV-M, Iso-C,
Iso-CTS, RegMean, Fisher merging, AdaMerging, REPAIR) are described in
docs/merging_methods.md.
"""

from .adamerging import AdaMergingResult, adamerging, merge_layerwise, prediction_entropy
from .baselines import slerp, task_arithmetic, ties_merging
from .batchnorm import BUFFER_RULES, merge_batchnorm_statistics
from .checkpoint import NETWORK_PREFIXES, load_checkpoint, save_merged, select_network
from .fisher import fisher_information, fisher_merge
from .linear import interpolate, merge_by_prefix, merge_linear
from .rebasin import (PermutationSpec, apply_permutation, efficientnet_lite_permutation_spec,
                      mlp_permutation_spec, permutation_fraction_nonidentity,
                      resnet_v1c_permutation_spec, weight_matching)
from .regmean import regmean, regmean_grams
from .repair import repair
from .sparse import dare, model_breadcrumbs
from .spectral import iso_c, iso_cts, tsv_merge
from .state import check_compatible, check_finite, classify
from .statistics import load_statistic, save_statistic, statistic_bytes
from .streaming import merge_safetensors_files

__all__ = [
    "BUFFER_RULES", "NETWORK_PREFIXES", "PermutationSpec", "apply_permutation",
    "mlp_permutation_spec", "permutation_fraction_nonidentity", "resnet_v1c_permutation_spec",
    "efficientnet_lite_permutation_spec",
    "weight_matching", "check_compatible", "check_finite", "classify",
    "interpolate", "load_checkpoint", "merge_batchnorm_statistics", "merge_by_prefix",
    "merge_linear", "merge_safetensors_files", "save_merged", "select_network", "slerp",
    "task_arithmetic", "ties_merging",
    # merging methods from the literature
    "dare", "model_breadcrumbs", "tsv_merge", "iso_c", "iso_cts",
    "regmean", "regmean_grams", "fisher_merge", "fisher_information",
    "save_statistic", "load_statistic", "statistic_bytes",
    "AdaMergingResult", "adamerging", "merge_layerwise", "prediction_entropy",
    "repair",
]
