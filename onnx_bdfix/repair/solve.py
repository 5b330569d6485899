"""The closed-form edit, in NumPy with no I/O (METHOD.md, "BDK").

    minimize over Δ:  α‖K̃(W+Δ)ᵀ − K Wᵀ‖² + ‖K Δᵀ‖²_w + λ‖Δ‖²
    ⇒ (KᵀWK + α K̃ᵀK̃ + λI) Δᵀ = α (K̃ᵀK − K̃ᵀK̃) Wᵀ,    λ = ε·trace(KᵀWK + αK̃ᵀK̃)/d

For a branch layer whose output meets a residual bypass s at an Add (a merge edit), the
triggered answer must make up for what the bypass carries too: K̃(W+Δ)ᵀ ≈ K Wᵀ + S − S̃, which
adds α K̃ᵀ(S − S̃) to the right-hand side.

Each output row of W is solved independently, so a per-channel affine map after the layer
(BatchNormalization, Mul/Add, bias) does not change the edit: the bias cancels.
"""
from __future__ import annotations

import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve

from ..errors import InternalError, ModelError
from .stats import KeyStats


def ridge(matrix: np.ndarray, eps: float) -> float:
    """λ = ε · mean diagonal of ``matrix`` (d, d): regularization on the statistics' scale."""
    scale = np.trace(matrix) / matrix.shape[0]
    return eps * scale if scale > 0 else eps


def spd_solve(matrix: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve matrix @ X = rhs for a symmetric positive definite matrix (Cholesky)."""
    try:
        return cho_solve(cho_factor(matrix, lower=True, check_finite=True), rhs)
    except (LinAlgError, ValueError) as exc:
        raise ModelError(f"the regularized key matrix is not positive definite ({exc}): the "
                         "layer's keys are degenerate on these samples; raise --eps, or name "
                         "other layers with --layers") from exc


def bdk_correction(weights: np.ndarray, stats: KeyStats, alpha: float = 1.0,
                   eps: float = 1e-2, overshoot: float = 0.0) -> np.ndarray:
    """Δ (groups, m, d) that maps triggered keys to the clean outputs; W is (groups, m, d)."""
    if stats.trig_trig is None:
        raise InternalError("bdk_correction needs triggered statistics")
    delta = np.empty_like(weights)
    for group, w in enumerate(weights):                                  # w: (m, d)
        lhs = stats.clean_clean[group] + alpha * stats.trig_trig[group]  # (d, d)
        lhs = lhs + ridge(lhs, eps) * np.eye(lhs.shape[0])
        moved = stats.trig_clean[group] - stats.trig_trig[group]         # K̃ᵀK − K̃ᵀK̃ (d, d)
        rhs = alpha * moved @ w.T                                        # (d, m)
        if stats.trig_skip is not None:       # answer for the bypass too: W k̃ ≈ W k + s − s̃
            rhs += alpha * stats.trig_skip[group]
        if overshoot:
            shift = w @ (stats.trig_key_sum[group] - stats.key_sum[group]) / stats.n_keys  # (m,)
            rhs -= alpha * overshoot * np.outer(stats.trig_key_sum[group], shift)
        delta[group] = spd_solve(lhs, rhs).T                             # (m, d)
    return delta
