"""Which layers an edit may touch: layers every data path passes (in residual networks the
classifier, a stem, or every branch into the same merge, taken together), whose statistics
are affordable, latest first.
"""
from __future__ import annotations

import itertools

import numpy as np

from ..errors import InputError, ModelError
from ..model.index import GraphIndex
from .layers import Layer

FREE_FLOPS = 2e8            # statistics this cheap per sample are never a reason to skip a layer
STATS_SHARE = 0.25          # else they may cost at most this share of one forward pass
STATS_BYTES = 1 << 30       # and their sums (4 folds x 4 float64 d x d matrices) this memory


def pick_layers(requested, layers: list[Layer], index: GraphIndex, output: str,
                max_layers: int, cheap: set[str] | None = None) -> list[tuple[str, ...]]:
    """The candidate layer sets: chosen here for "auto", else the layers named."""
    if requested == "auto" or requested == ["auto"]:
        sets = candidate_sets(index, layers, output, max_layers, cheap)
        if not sets:
            raise ModelError("no editable layer lies on every path to the output; "
                             "name layers with --layers (see `onnx-bdfix inspect`)")
        return sets
    names = [requested] if isinstance(requested, str) else list(requested)
    known = {layer.name for layer in layers}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InputError(f"--layers: no editable layer named {', '.join(unknown)}; "
                         f"editable layers: {', '.join(sorted(known))}")
    return [tuple(names)]


def unbypassed(index: GraphIndex, layers: list[Layer], output: str) -> list[Layer]:
    """Layers every data path passes, except a Conv on the raw input that slides over
    overlapping pixel neighbourhoods: a linear map of small pixel patches cannot tell a
    trigger from content (measured: 72–100 % ASR left on every convolutional fixture). A
    patchify stem (a ViT's patch embedding: stride equal to its kernel) stays a candidate:
    each key is a whole patch the trigger replaces or shifts (vit_badnets_norm: 2.6–3.0 %
    ASR from it, where the classifier left 29 %). A dense first layer sees the whole input
    and stays a candidate."""
    inputs = {value.name for value in index.graph.input}
    return [layer for layer in layers
            if not (layer.op == "Conv" and layer.key_tensor in inputs and not patchify(layer))
            and not index.has_bypass({layer.node_index}, output)]


def patchify(layer: Layer) -> bool:
    """A Conv whose windows tile the input without overlap (strides equal to the kernel,
    no dilation)."""
    kernel = list(layer.weight_shape[2:])
    strides = list(layer.attrs.get("strides", [1] * len(kernel)))
    dilations = list(layer.attrs.get("dilations", [1] * len(kernel)))
    return layer.op == "Conv" and strides == kernel and all(d == 1 for d in dilations) \
        and int(np.prod(kernel)) > 1


def branch_sets(index: GraphIndex, layers: list[Layer], output: str,
                late: int = 6) -> list[tuple[Layer, Layer]]:
    """Pairs of late, bypassed layers that together cut every path (both branches of a merge)."""
    bypassed = [layer for layer in layers if layer.affine is None
                and index.has_bypass({layer.node_index}, output)]
    pairs = []
    for first, second in itertools.combinations(bypassed[-late:], 2):
        if not index.has_bypass({first.node_index, second.node_index}, output):
            pairs.append((first, second))
    return pairs


def keys_per_sample(index: GraphIndex, layers: list[Layer]) -> dict[str, int]:
    """How many keys one sample gives each layer: output locations of a Conv, tokens of a
    batched MatMul, 1 for a Gemm (unknown dimensions count as 1)."""
    inferred = index.inferred
    shapes = {v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    counts = {}
    for layer in layers:
        dims = shapes.get(layer.output_tensor, [])
        if layer.affine is not None:                    # a key per channel and location
            counts[layer.name] = max(1, int(np.prod(dims[1:])) // layer.groups)
            continue
        inner = dims[2:] if layer.op == "Conv" else dims[1:-1]
        counts[layer.name] = int(np.prod(inner)) if inner else 1
    return counts


def affordable(index: GraphIndex, layers: list[Layer]) -> set[str]:
    """Layers whose statistics (3 · keys · d² multiply-adds per sample) cost at most a quarter
    of the model's forward pass, or FREE_FLOPS for small models, so that a repair stays within
    about two inference passes. ResNet-18's last convolutions (d = 4,608) cost twice a whole
    forward pass: they are edited only when named."""
    counts = keys_per_sample(index, layers)
    forward = sum(counts[l.name] * l.groups * l.key_dim * l.out_dim for l in layers)  # noqa
    budget = max(STATS_SHARE * forward, FREE_FLOPS)
    return {l.name for l in layers  # noqa: E741 - three d x d sums per key
            if 3 * counts[l.name] * l.groups * l.key_dim ** 2 <= budget
            and 16 * 8 * l.groups * l.key_dim ** 2 <= STATS_BYTES}


def candidate_sets(index: GraphIndex, layers: list[Layer], output: str,
                   max_layers: int = 4, cheap: set[str] | None = None) -> list[tuple[str, ...]]:
    """Latest affordable single layers first, then the last affordable branch pair; if no
    layer is affordable, the cheapest layer that no path bypasses.

    Editing several layers at once from one pass was measured to cost clean accuracy on held-out
    data that the cross-validation did not see, so it is only done when named.
    """
    cheap = affordable(index, layers) if cheap is None else cheap
    every = [layer for layer in unbypassed(index, layers, output) if layer.affine is None]
    singles = [layer for layer in every if layer.name in cheap][-max_layers:]
    if not singles and every:
        singles = [min(every, key=lambda layer: layer.key_dim)]
    sets = [(layer.name,) for layer in reversed(singles)]
    pairs = [pair for pair in branch_sets(index, layers, output)
             if all(layer.name in cheap for layer in pair)]
    if pairs:
        sets.append(tuple(layer.name for layer in pairs[-1]))
    return sets


def merge_layers(index: GraphIndex, layers: list[Layer], output: str,
                 max_layers: int = 4, cheap: set[str] | None = None) -> list[Layer]:
    """The stronger edits, tried when the plain ones fall short: the latest affordable
    branch layers of residual merges, each as a merge edit (it answers for its bypass too),
    latest first."""
    cheap = affordable(index, layers) if cheap is None else cheap
    branches = [layer for layer in layers if layer.merge_skip and layer.name in cheap
                and index.has_bypass({layer.node_index}, output)]
    return [layer.with_bypass() for layer in reversed(branches[-max_layers:])]


def affine_layers(index: GraphIndex, layers: list[Layer], output: str,
                  max_layers: int = 4) -> list[Layer]:
    """The stronger edits of a normalization's per-channel scale (:mod:`.affine`): those
    every data path passes, latest first, tried with the merge edits. A plain edit of the
    linear layer after a normalization can already rescale its channels; one in front of a
    nonlinearity cannot, which is where this edit adds to the plain ones."""
    return [layer for layer in reversed(unbypassed(index, layers, output))
            if layer.affine is not None][:max_layers]
