"""Streamed sufficient statistics of a layer's keys: three (groups, d, d) float64 sums.

    clean_clean = Σ w_i k_i k_iᵀ      (KᵀWK: clean keys, weighted per sample)
    trig_trig   = Σ k̃_i k̃_iᵀ         (K̃ᵀK̃)
    trig_clean  = Σ k̃_i k_iᵀ         (K̃ᵀK: same sample, same location)
    trig_skip   = Σ k̃_i (s_i − s̃_i)ᵀ  (K̃ᵀ(S − S̃), (groups, d, m): for a layer whose output
                                       meets a residual bypass s, what the bypass carries)

Each batch is multiplied in float32 with BLAS and added in float64. Sums of separate batches,
folds or machines add up with ``+``.
"""
from __future__ import annotations

import numpy as np


class KeyStats:
    """Sums over the keys of one layer; memory is 3·groups·d² float64, whatever the sample count."""

    def __init__(self, groups: int, key_dim: int, with_triggered: bool = True):
        shape = (groups, key_dim, key_dim)
        self.clean_clean = np.zeros(shape)
        self.trig_trig = np.zeros(shape) if with_triggered else None
        self.trig_clean = np.zeros(shape) if with_triggered else None
        self.key_sum = np.zeros((groups, key_dim))      # Σ w_i k_i, for centring
        self.trig_key_sum = np.zeros((groups, key_dim)) if with_triggered else None  # Σ k̃_i
        self.n_keys = 0
        self.weight_sum = 0.0                           # Σ w_i over keys
        self.n_samples = 0
        self.trig_skip = None                           # (groups, d, m), merge layers only

    def add(self, clean_keys: np.ndarray, triggered_keys: np.ndarray | None = None,
            sample_weights: np.ndarray | None = None,
            skip_change: np.ndarray | None = None) -> None:
        """clean_keys, triggered_keys: (groups, n_keys, d), n_keys a multiple of the samples;
        skip_change: (groups, n_keys, m), s − s̃ at the same locations (merge layers)."""
        n_samples = len(sample_weights) if sample_weights is not None else None
        per_key = self._key_weights(clean_keys.shape[1], sample_weights)       # (n_keys,)
        weighted = clean_keys * per_key[None, :, None]
        self.clean_clean += np.matmul(weighted.transpose(0, 2, 1), clean_keys)
        self.key_sum += weighted.sum(axis=1)
        self.weight_sum += float(per_key.sum())
        if triggered_keys is not None:
            triggered_t = triggered_keys.transpose(0, 2, 1)
            self.trig_trig += np.matmul(triggered_t, triggered_keys)
            self.trig_clean += np.matmul(triggered_t, clean_keys)
            self.trig_key_sum += triggered_keys.sum(axis=1)
            if skip_change is not None:
                moved = np.matmul(triggered_t, skip_change)              # (groups, d, m)
                self.trig_skip = moved if self.trig_skip is None else self.trig_skip + moved
        self.n_keys += clean_keys.shape[1]
        self.n_samples += n_samples or 0

    @staticmethod
    def _key_weights(n_keys: int, sample_weights: np.ndarray | None) -> np.ndarray:
        if sample_weights is None:
            return np.ones(n_keys, np.float32)
        per_sample = n_keys // len(sample_weights)
        return np.repeat(sample_weights.astype(np.float32), per_sample)

    def finite(self) -> bool:
        """False when a sum overflowed (keys near the float range)."""
        return all(np.isfinite(part).all() for part in (self.clean_clean, self.trig_trig,
                                                        self.trig_clean) if part is not None)

    def __add__(self, other: "KeyStats") -> "KeyStats":
        total = KeyStats(*self.clean_clean.shape[:2], with_triggered=self.trig_trig is not None)
        for name in ("clean_clean", "trig_trig", "trig_clean", "key_sum", "trig_key_sum",
                     "trig_skip"):
            mine = getattr(self, name)
            if mine is not None:
                setattr(total, name, mine + getattr(other, name))
        total.weight_sum = self.weight_sum + other.weight_sum
        total.n_samples = self.n_samples + other.n_samples
        total.n_keys = self.n_keys + other.n_keys
        return total


def total(parts: list[KeyStats]) -> KeyStats:
    result = parts[0]
    for part in parts[1:]:
        result = result + part
    return result
