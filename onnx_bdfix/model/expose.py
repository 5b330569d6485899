"""Intermediate tensors as graph outputs, on a copy of the model (onnx-graphsurgeon)."""
from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..errors import ModelError
from .large import copy_proto, is_large, skeleton

log = logging.getLogger(__name__)


def with_inferred_shapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    try:
        if not is_large(proto):
            return onnx.shape_inference.infer_shapes(proto)
        inferred = onnx.shape_inference.infer_shapes(skeleton(proto))   # shapes need no data
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        log.warning("shape inference failed (%s); exposing tensors as float32", exc)
        return proto
    result = copy_proto(proto)
    del result.graph.value_info[:]
    result.graph.value_info.extend(inferred.graph.value_info)
    return result


def expose(proto: onnx.ModelProto, tensor_names: list[str],
           inferred: onnx.ModelProto | None = None) -> onnx.ModelProto:
    """A copy of ``proto`` whose outputs are its own, then ``tensor_names``; ``inferred`` is
    ``proto`` with its shapes already inferred, when the caller has it."""
    graph = gs.import_onnx(inferred if inferred is not None else with_inferred_shapes(proto))
    tensors = graph.tensors()
    missing = [name for name in tensor_names if name not in tensors]
    if missing:
        raise ModelError(f"tensors {missing[:5]} are not in the graph; "
                         "run `onnx-bdfix inspect MODEL` to list the layers")
    present = {tensor.name for tensor in graph.outputs}
    for name in tensor_names:
        if name in present:
            continue
        tensor = tensors[name]
        if tensor.dtype is None:
            tensor.dtype = np.float32
        graph.outputs.append(tensor)
        present.add(name)
    exposed = gs.export_onnx(graph, do_type_check=False)
    exposed.ir_version = proto.ir_version
    return exposed
