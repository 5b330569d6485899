"""Write corrected weights into a copy of the model; nothing else changes.

An initializer that several nodes share is copied for the edited node first. Weights keep
their dtype (fp16 weights are edited in float64 and cast back). Provenance goes into
``metadata_props`` under one key.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import InternalError
from ..model.index import GraphIndex
from .layers import Layer

PROVENANCE_KEY = "onnx_bdfix.provenance"


def patched(proto: onnx.ModelProto, layers: dict[str, Layer], weights: dict[str, np.ndarray],
            biases: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """A copy of ``proto`` with new weights (and biases) for the layers named as keys."""
    result = onnx.ModelProto()
    result.CopyFrom(proto)
    users = GraphIndex(result).consumers
    by_name = {init.name: init for init in result.graph.initializer}
    for layer_name, weight in weights.items():
        layer = layers[layer_name]
        if len(users.get(layer.weight, [])) > 1:
            dtype = numpy_helper.to_array(by_name[layer.weight]).dtype
            _give_own_copy(result, layer, weight.astype(dtype))
        else:
            _replace(by_name[layer.weight], weight)
    for layer_name, bias in (biases or {}).items():
        _replace(by_name[layers[layer_name].bias], bias)
    return result


def _replace(tensor: onnx.TensorProto, weight: np.ndarray) -> None:
    if weight.shape != tuple(tensor.dims):
        raise InternalError(f"{tensor.name}: new value {weight.shape} != {tuple(tensor.dims)}")
    fresh = numpy_helper.from_array(weight.astype(numpy_helper.to_array(tensor).dtype),
                                    tensor.name)
    doc = tensor.doc_string
    tensor.CopyFrom(fresh)
    tensor.doc_string = doc


def _give_own_copy(proto: onnx.ModelProto, layer: Layer, weight: np.ndarray) -> None:
    taken = {init.name for init in proto.graph.initializer}
    name = f"{layer.weight}__bdfix_{layer.name}"
    while name in taken:
        name += "_"
    proto.graph.initializer.append(numpy_helper.from_array(weight, name))
    node = proto.graph.node[layer.node_index]
    if layer.transposed:                        # the weight reaches it through a Transpose
        node = GraphIndex(proto).producers[node.input[1]]
    for position, used in enumerate(node.input):
        if used == layer.weight:
            node.input[position] = name


def set_provenance(proto: onnx.ModelProto, provenance: dict) -> None:
    """Record how the file was made, replacing an earlier onnx-bdfix entry."""
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key != PROVENANCE_KEY]
    del proto.metadata_props[:]
    for key, value in kept + [(PROVENANCE_KEY, json.dumps(provenance, sort_keys=True))]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def provenance(proto: onnx.ModelProto) -> dict | None:
    for prop in proto.metadata_props:
        if prop.key == PROVENANCE_KEY:
            return json.loads(prop.value)
    return None
