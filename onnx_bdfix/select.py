"""Activation-guided layer choice: per-layer evidence, candidate edits, cross-validation.

Candidates are editable layers that no data path bypasses (in residual networks: the
classifier, a stem, or every branch into the same merge, taken together). Each candidate
edit is fitted on all folds but one and scored on the held-out fold, against the original
model's own answers: residual attack success on triggered copies, and lost agreement on
clean samples.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np
import onnx

from .graph import has_bypass, with_inferred_shapes
from .layers import Layer
from .stats import KeyStats

FREE_FLOPS = 2e8            # statistics this cheap per sample are never a reason to skip a layer
STATS_SHARE = 0.25          # else they may cost at most this share of one forward pass
STATS_BYTES = 1 << 30       # and their sums (4 folds x 4 float64 d x d matrices) this memory


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


@dataclass
class CandidateResult:
    layers: tuple[str, ...]
    alpha: float                   # weight of the triggered term
    eps: float                     # ridge strength
    attack_success: float          # held-out triggered non-target samples sent to the target
    agreement: float               # held-out clean samples keeping their class
    target_agreement: float | None  # the same, over the target class's samples
    trigger_pull: float            # mean target probability of triggered non-target samples
    clean_shift: float             # mean total-variation distance from the original, clean
    target_shift: float            # the same, over the target class's samples
    target_offset: float = 0.0     # added to the target logit by the repair step
    target_weight: float | None = None   # weight of the target class's clean keys

    @property
    def score(self) -> float:
        """Smooth held-out cost: trigger pull + clean shift + target-class shift."""
        return self.trigger_pull + self.clean_shift + self.target_shift

    def as_dict(self) -> dict:
        return {**asdict(self), "score": self.score}


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


def unbypassed(proto: onnx.ModelProto, layers: list[Layer], output: str) -> list[Layer]:
    """Layers every data path passes, except a Conv on the raw input: a linear map of small
    pixel patches cannot tell a trigger from content (measured: 72–100 % ASR left on every
    convolutional fixture). A dense first layer sees the whole input and stays a candidate."""
    inputs = {value.name for value in proto.graph.input}
    return [layer for layer in layers
            if not (layer.op == "Conv" and layer.key_tensor in inputs)
            and not has_bypass(proto, {layer.node_index}, output)]


def branch_sets(proto: onnx.ModelProto, layers: list[Layer], output: str,
                late: int = 6) -> list[tuple[Layer, Layer]]:
    """Pairs of late, bypassed layers that together cut every path (both branches of a merge)."""
    bypassed = [layer for layer in layers if has_bypass(proto, {layer.node_index}, output)]
    pairs = []
    for first, second in itertools.combinations(bypassed[-late:], 2):
        if not has_bypass(proto, {first.node_index, second.node_index}, output):
            pairs.append((first, second))
    return pairs


def keys_per_sample(proto: onnx.ModelProto, layers: list[Layer]) -> dict[str, int]:
    """How many keys one sample gives each layer: output locations of a Conv, tokens of a
    batched MatMul, 1 for a Gemm (unknown dimensions count as 1)."""
    inferred = with_inferred_shapes(proto)
    shapes = {v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    counts = {}
    for layer in layers:
        dims = shapes.get(layer.output_tensor, [])
        inner = dims[2:] if layer.op == "Conv" else dims[1:-1]
        counts[layer.name] = int(np.prod(inner)) if inner else 1
    return counts


def affordable(proto: onnx.ModelProto, layers: list[Layer]) -> set[str]:
    """Layers whose statistics (3 · keys · d² multiply-adds per sample) cost at most a quarter
    of the model's forward pass, or FREE_FLOPS for small models, so that a repair stays within
    about two inference passes. ResNet-18's last convolutions (d = 4,608) cost twice a whole
    forward pass: they are edited only when named."""
    counts = keys_per_sample(proto, layers)
    forward = sum(counts[l.name] * l.groups * l.key_dim * l.out_dim for l in layers)  # noqa
    budget = max(STATS_SHARE * forward, FREE_FLOPS)
    return {l.name for l in layers  # noqa: E741 - three d x d sums per key
            if 3 * counts[l.name] * l.groups * l.key_dim ** 2 <= budget
            and 16 * 8 * l.groups * l.key_dim ** 2 <= STATS_BYTES}


def candidate_sets(proto: onnx.ModelProto, layers: list[Layer], output: str,
                   max_layers: int = 4) -> list[tuple[str, ...]]:
    """Latest affordable single layers first, then the last affordable branch pair; if no
    layer is affordable, the cheapest layer that no path bypasses.

    Editing several layers at once from one pass was measured to cost clean accuracy on held-out
    data that the cross-validation did not see, so it is only done when named.
    """
    cheap = affordable(proto, layers)
    every = unbypassed(proto, layers, output)
    singles = [layer for layer in every if layer.name in cheap][-max_layers:]
    if not singles and every:
        singles = [min(every, key=lambda layer: layer.key_dim)]
    sets = [(layer.name,) for layer in reversed(singles)]
    pairs = [pair for pair in branch_sets(proto, layers, output)
             if all(layer.name in cheap for layer in pair)]
    if pairs:
        sets.append(tuple(layer.name for layer in pairs[-1]))
    return sets


def best(results: list[CandidateResult], max_clean_drop: float | None = None,
         held_out: int = 0) -> CandidateResult | None:
    """Lowest score among candidates whose held-out clean agreement is not significantly
    below 1 − ``max_clean_drop``: an exact one-sided binomial test at 2.5 % on the number of
    ``held_out`` samples that changed class (the normal approximation is poor for shares
    near 0 and a hundred samples). Ties go to the earlier candidate (later, fewer layers).
    None when no candidate keeps within the bound."""
    if max_clean_drop is None:
        kept = results
    else:
        kept = [r for r in results
                if within_bound(round((1 - r.agreement) * held_out), held_out, max_clean_drop)]
    return min(kept, key=lambda result: round(result.score, 6)) if kept else None


def within_bound(changed: int, samples: int, max_share: float, level: float = 0.025) -> bool:
    """False when ``changed`` of ``samples`` is significantly more than ``max_share``:
    P(X >= changed) <= ``level`` for X ~ Binomial(samples, max_share)."""
    if changed <= 0 or max_share >= 1:
        return True
    if max_share <= 0:
        return False
    below = sum(math.exp(math.lgamma(samples + 1) - math.lgamma(k + 1)
                         - math.lgamma(samples - k + 1) + k * math.log(max_share)
                         + (samples - k) * math.log1p(-max_share)) for k in range(changed))
    return 1.0 - below > level
