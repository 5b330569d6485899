"""Per-layer evidence for the report: how far triggered keys and outputs part from clean
ones, and how much of key space clean data leaves unused (where a trigger can hide)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .layers import to_matrices, weight_array
from .stats import KeyStats, total


@dataclass
class LayerEvidence:
    """Why a layer was or was not picked."""
    name: str
    op: str
    shape: str
    bypassed: bool
    key_divergence: float | None   # mean ‖k̃ − k‖² / mean ‖k‖² over the clean samples
    output_divergence: float | None
    unused_key_share: float | None  # share of key directions clean data leaves (<1 % energy)
    candidate: bool
    chosen: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def key_divergence(stats: KeyStats) -> float:
    clean = np.trace(stats.clean_clean, axis1=1, axis2=2).sum()
    moved = (np.trace(stats.trig_trig, axis1=1, axis2=2).sum()
             - 2 * np.trace(stats.trig_clean, axis1=1, axis2=2).sum() + clean)
    return float(max(moved, 0.0) / clean) if clean > 0 else 0.0


def unused_key_share(stats: KeyStats, energy: float = 0.99, max_dim: int = 2048) -> float | None:
    """1 − (directions holding ``energy`` of the clean key energy) / d, over all groups:
    where the trigger can hide from clean data. None for keys longer than ``max_dim``."""
    if stats.clean_clean.shape[-1] > max_dim:
        return None
    values = np.sort(np.concatenate([np.linalg.eigvalsh(m) for m in stats.clean_clean]))[::-1]
    values = np.clip(values, 0, None)
    if values.sum() <= 0:
        return None
    needed = int(np.searchsorted(np.cumsum(values) / values.sum(), energy)) + 1
    return float(1 - needed / len(values))


def output_divergence(stats: KeyStats, weights: np.ndarray) -> float:
    """mean ‖W(k̃ − k)‖² / mean ‖W k‖²: how far triggered outputs part from clean (no bias)."""
    moved = stats.trig_trig - stats.trig_clean - stats.trig_clean.transpose(0, 2, 1) \
        + stats.clean_clean                                            # (groups, d, d)
    gram = np.matmul(weights.transpose(0, 2, 1), weights)              # WᵀW (groups, d, d)
    clean = float((gram * stats.clean_clean).sum())
    return float(max((gram * moved).sum(), 0.0) / clean) if clean > 0 else 0.0




def layer_evidence(index, layers: list, involved: list, stats: dict,
                   output: str, chosen_layers: tuple = ()) -> list[LayerEvidence]:
    """Evidence for every editable layer; divergences for those whose keys were collected
    (``stats``: layer name -> [KeyStats per fold])."""
    evidence = []
    for layer in layers:
        summed = total(stats[layer.name]) if layer in involved else None
        evidence.append(LayerEvidence(
            layer.name, layer.op, "x".join(map(str, layer.weight_shape)),
            index.has_bypass({layer.node_index}, output),
            key_divergence(summed) if summed else None,
            output_divergence(summed, to_matrices(layer, weight_array(index, layer)))
            if summed else None,
            unused_key_share(summed) if summed else None,
            candidate=layer in involved, chosen=layer.name in chosen_layers))
    return evidence
