"""Merges that work on the singular vectors of each layer's task matrices.

TSV-M (Gargiulo et al., CVPR 2025), Iso-C and Iso-CTS (Marczak et al., ICML
2025) treat every parameter of two or more axes as a matrix: a linear weight as
it is (out_features x in_features), a conv kernel (out_channels, in_channels/groups,
kh, kw) reshaped to out_channels x (in_channels/groups * kh * kw), i.e. one row per
output channel. Parameters of one axis (biases, BatchNorm and LayerNorm affine
weights) take the plain mean of the task vectors. The merged update is scaled by
``alpha`` everywhere: theta = theta_0 + alpha * Delta.

BatchNorm statistics are pooled from the fine-tuned models by the ``buffers``
rule, as in ``fusion.baselines``; theta_0's are ignored. SVDs run in float64.

Rank-deficient matrices: singular vectors whose singular value is zero (below
max(m, n) * eps * scale, eps of the input dtype, the usual numerical-rank
tolerance) are not determined by the matrix (any basis of its null space is an
equally valid SVD) and carry no task information, so they are left out before
any orthogonalisation or averaging of singular values. For full-rank task
matrices, the case of real fine-tuning, this is the papers' algorithm exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .baselines import _check_finetuned, _merge_buffers, _split
from .state import StateDict

# (task matrices in float64, eps of the input dtype) -> merged update, or None for "use the mean"
MatrixMerge = Callable[[list[torch.Tensor], float], "torch.Tensor | None"]


def as_matrix(tensor: torch.Tensor) -> torch.Tensor:
    """A parameter of two or more axes as out x rest (conv: out x in/groups*kh*kw)."""
    return tensor.reshape(tensor.shape[0], -1)


def _svd(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD: U (m x r), singular values (r, descending), V (n x r)."""
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    return u, s, vh.T


def _rank(singular: torch.Tensor, shape: Sequence[int], eps: float, scale: float) -> int:
    """How many singular values are above the numerical-rank tolerance of a matrix of
    ``shape`` and size ``scale`` (its largest singular value, or a bound on it)."""
    tolerance = max(shape) * eps * scale
    return int((singular > tolerance).sum())


def orthogonalise(columns: torch.Tensor) -> torch.Tensor:
    """The matrix with orthonormal columns closest to ``columns`` in Frobenius norm
    (orthogonal Procrustes): with columns = P S Q^T, it is P Q^T."""
    p, _, q = _svd(columns)
    return p @ q.T


def spectral_merge(base: StateDict, finetuned: Sequence[StateDict], alpha: float, buffers: str,
                   merge_matrix: MatrixMerge) -> dict[str, torch.Tensor]:
    """theta_0 + alpha * Delta, Delta from ``merge_matrix`` for matrices, else the mean."""
    finetuned = _check_finetuned(finetuned)
    alpha = float(alpha)
    if not math.isfinite(alpha):
        raise ValueError(f"alpha {alpha} is not finite")
    keys, parameters, buffer_keys = _split([base, *finetuned])
    merged = _merge_buffers(finetuned, buffer_keys, None, buffers)
    for key in parameters:
        theta0 = base[key].to(torch.float64)
        taus = [model[key].to(torch.float64) - theta0 for model in finetuned]
        update = None
        if theta0.dim() >= 2 and theta0.numel() > 0:
            update = merge_matrix([as_matrix(t) for t in taus], torch.finfo(base[key].dtype).eps)
        if update is None:
            update = torch.stack(taus).mean(0)
        merged[key] = (theta0 + alpha * update.reshape(theta0.shape)).to(base[key].dtype)
    return {k: merged[k] for k in keys}


def _tsv_matrix(matrices: list[torch.Tensor], eps: float) -> torch.Tensor | None:
    rows, cols = matrices[0].shape
    quota = min(rows, cols) // len(matrices)
    if quota == 0:  # fewer directions than tasks: no 1/K share to keep
        return None
    lefts, values, rights = [], [], []
    for matrix in matrices:
        u, s, v = _svd(matrix)
        keep = min(quota, _rank(s, matrix.shape, eps, float(s[0])))
        lefts.append(u[:, :keep])
        values.append(s[:keep])
        rights.append(v[:, :keep])
    sigma = torch.cat(values)
    if sigma.numel() == 0:
        return torch.zeros_like(matrices[0])
    u_perp = orthogonalise(torch.cat(lefts, 1))
    v_perp = orthogonalise(torch.cat(rights, 1))
    return (u_perp * sigma) @ v_perp.T


def tsv_merge(base: StateDict, finetuned: Sequence[StateDict], alpha: float = 1.0,
              buffers: str = "pooled") -> dict[str, torch.Tensor]:
    """TSV-M, Task Singular Vectors merge (Gargiulo et al., CVPR 2025, arXiv:2412.00081).

    Per matrix layer (see the module docstring for conv kernels), with K tasks
    and r = min(m, n):

    1. SVD of each task matrix, Delta_k = U_k S_k V_k^T; keep its top
       floor(r / K) singular triplets (the paper's 1/K compression).
    2. Concatenate: U = [U_1 ... U_K], S = diag(S_1 ... S_K), V = [V_1 ... V_K].
    3. Decorrelate the tasks' subspaces: replace U and V by the nearest matrices
       with orthonormal columns (Procrustes: U = P D Q^T -> U_perp = P Q^T).
    4. Delta = U_perp S V_perp^T; theta = theta_0 + alpha * Delta.

    Where floor(r / K) = 0 (a matrix with fewer directions than tasks) the layer
    takes the mean task vector, like one-axis parameters. When the tasks' row
    and column spaces are already mutually orthogonal and each of rank <= r / K,
    step 3 changes nothing and Delta = sum_k Delta_k (task arithmetic).
    """
    return spectral_merge(base, finetuned, alpha, buffers, _tsv_matrix)


def _isotropic(lefts: list[torch.Tensor], values: list[torch.Tensor],
               rights: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """sigma_bar U_perp V_perp^T: every singular value replaced by their mean."""
    sigma = torch.cat(values)
    if sigma.numel() == 0:
        return torch.zeros_like(like)
    u, v = torch.cat(lefts, 1), torch.cat(rights, 1)
    if len(lefts) > 1:  # one SVD's singular vectors are orthonormal already
        u, v = orthogonalise(u), orthogonalise(v)
    return sigma.mean() * (u @ v.T)


def _iso_c_matrix(matrices: list[torch.Tensor], eps: float) -> torch.Tensor:
    total = torch.stack(matrices).sum(0)
    u, s, v = _svd(total)
    rank = _rank(s, total.shape, eps, float(s[0]))
    return _isotropic([u[:, :rank]], [s[:rank]], [v[:, :rank]], total)


def iso_c(base: StateDict, finetuned: Sequence[StateDict], alpha: float = 1.0,
          buffers: str = "pooled") -> dict[str, torch.Tensor]:
    """Iso-C, isotropic merging in the common subspace (Marczak et al., ICML 2025,
    "No Task Left Behind", arXiv:2502.04959).

    Per matrix layer: Delta_TA = sum_k Delta_k = U S V^T; replace every singular
    value by their mean sigma_bar, Delta = sigma_bar U V^T, so the merged update
    stretches all its directions equally (a flat spectrum) instead of being
    dominated by a few; theta = theta_0 + alpha * Delta. The paper picks alpha
    on held-out data; 1.0 is a starting point, not a tuned value.
    """
    return spectral_merge(base, finetuned, alpha, buffers, _iso_c_matrix)


def iso_cts_dimensions(rank: int, tasks: int, common_fraction: float) -> tuple[int, int]:
    """(common directions k, task-specific directions s per task), k + K s = r.

    s is the nearest integer (halves rounded up) to (r - floor(f r)) / K, at
    most floor(r / K); the common subspace takes what the tasks leave.
    """
    per_task = min(rank // tasks, math.floor((rank - math.floor(common_fraction * rank)) / tasks + 0.5))
    return rank - tasks * per_task, per_task


def _iso_cts_matrix(matrices: list[torch.Tensor], eps: float,
                    common_fraction: float) -> torch.Tensor:
    total = torch.stack(matrices).sum(0)
    common, per_task = iso_cts_dimensions(min(total.shape), len(matrices), common_fraction)
    u, s, v = _svd(total)
    kept = min(common, _rank(s, total.shape, eps, float(s[0])))
    lefts, values, rights = [u[:, :kept]], [s[:kept]], [v[:, :kept]]
    basis = u[:, :kept]
    for matrix in matrices if per_task > 0 else []:
        # What task k adds outside the common subspace: (I - U_c U_c^T) Delta_k.
        residual = matrix - basis @ (basis.T @ matrix)
        ut, st, vt = _svd(residual)
        # tolerance on the task matrix's scale: a residual that is rounding error only is empty
        keep = min(per_task, _rank(st, matrix.shape, eps, float(torch.linalg.matrix_norm(matrix))))
        lefts.append(ut[:, :keep])
        values.append(st[:keep])
        rights.append(vt[:, :keep])
    return _isotropic(lefts, values, rights, total)


def iso_cts(base: StateDict, finetuned: Sequence[StateDict], alpha: float = 1.0,
            common_fraction: float = 0.8, buffers: str = "pooled") -> dict[str, torch.Tensor]:
    """Iso-CTS, isotropic merging in common and task-specific subspaces (Marczak et al.,
    ICML 2025, arXiv:2502.04959).

    Per matrix layer, r = min(m, n), K tasks, (k, s) = :func:`iso_cts_dimensions`
    (k ~ ``common_fraction`` * r, the paper's default 0.8):

    1. Common subspace: the top k singular triplets of Delta_TA = sum_k Delta_k.
    2. Task-specific subspaces: for each task, the top s singular triplets of
       its matrix with the common subspace projected out, (I - U_c U_c^T) Delta_k.
    3. Concatenate the left and the right singular vectors of both, make each
       set orthonormal (Procrustes, as TSV-M) and replace all the singular values
       by their mean sigma_bar: Delta = sigma_bar U_perp V_perp^T.
    4. theta = theta_0 + alpha * Delta.

    ``common_fraction`` = 1 leaves no task-specific directions: Iso-C.
    """
    common_fraction = float(common_fraction)
    if not 0.0 <= common_fraction <= 1.0:
        raise ValueError(f"common_fraction {common_fraction} outside [0, 1]")
    return spectral_merge(base, finetuned, alpha, buffers,
                          lambda matrices, eps: _iso_cts_matrix(matrices, eps, common_fraction))
