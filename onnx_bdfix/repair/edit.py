"""Compute corrections for chosen layers, then apply them to a copy of the model.

The correction (Δ per layer) is computed from statistics alone; applying it writes
W + Δ, the mean-keeping bias shift and the repair step's target-logit offset.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from .anchor import offset_bias
from .layers import (
    Layer,
    bias_array,
    from_matrices,
    shifted_bias,
    to_matrices,
    weight_array,
)
from .patch import patched
from .solve import bdk_correction
from .stats import KeyStats, total


def combined(stats: list[KeyStats], target_stats: list[KeyStats] | None, weight: float,
             leave_out: int | None = None) -> KeyStats:
    """Sum over folds (but ``leave_out``), clean keys of the target class weighted ``weight``."""
    keep = [i for i in range(len(stats)) if i != leave_out]
    summed = total([stats[i] for i in keep])
    if target_stats is not None and weight != 1.0:
        extra = total([target_stats[i] for i in keep])
        summed.clean_clean = summed.clean_clean + (weight - 1.0) * extra.clean_clean
    return summed


def corrections(proto: onnx.ModelProto, layers: list[Layer], stats: dict[str, KeyStats],
                alpha: float, eps: float, overshoot: float) -> dict[str, np.ndarray]:
    """Δ (groups, m, d) for each layer: computed, not applied."""
    return {layer.name: bdk_correction(to_matrices(layer, weight_array(proto, layer)),
                                       stats[layer.name], alpha, eps, overshoot)
            for layer in layers}


def corrected_weights(proto: onnx.ModelProto, layers: list[Layer],
                      deltas: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """W + Δ, back in each initializer's shape and dtype."""
    return {layer.name: from_matrices(layer, to_matrices(layer, weight_array(proto, layer))
                                      + deltas[layer.name]) for layer in layers}


def mean_keeping_biases(proto: onnx.ModelProto, layers: list[Layer],
                        deltas: dict[str, np.ndarray],
                        stats: dict[str, KeyStats]) -> dict[str, np.ndarray]:
    """b − Δ·μ for layers with a bias: the mean output over clean keys stays as it was."""
    biases = {}
    for layer in layers:
        if layer.bias and stats[layer.name].weight_sum > 0:
            mean_key = stats[layer.name].key_sum / stats[layer.name].weight_sum   # (groups, d)
            shift = -np.einsum("gmd,gd->gm", deltas[layer.name], mean_key)      # (groups, m)
            biases[layer.name] = shifted_bias(layer, bias_array(proto, layer), shift)
    return biases


@dataclass
class Anchor:
    """The repair step's offset on the target class's logit, through ``layer``'s bias."""
    layer: Layer
    target: int
    offset: float = 0.0


def edited_model(proto: onnx.ModelProto, layers: list[Layer], stats: dict[str, KeyStats],
                 strength: tuple[float, float, float],
                 anchor: Anchor | None = None) -> onnx.ModelProto:
    """Corrections for ``layers`` at (alpha, eps, overshoot), plus the anchor, on a copy."""
    deltas = corrections(proto, layers, stats, *strength)
    biases = mean_keeping_biases(proto, layers, deltas, stats)
    touched = {layer.name: layer for layer in layers}
    if anchor is not None and anchor.offset:
        name = anchor.layer.name
        start = biases.get(name, bias_array(proto, anchor.layer))
        biases[name] = offset_bias(anchor.layer, start, anchor.target, anchor.offset)
        touched[name] = anchor.layer
    return patched(proto, touched, corrected_weights(proto, layers, deltas), biases)
