"""A model exported with a fixed batch, run batched: a copy for ONNX Runtime only.

torch's exporters without dynamic axes fix the batch to the example's, often 1: in the input
and output shapes, and in the constant shape of every Reshape that flattens. Run as it is,
such a model takes one sample per run, and a scan's 200,000 evaluations become 200,000 runs.
:func:`freed` serializes the model with its batch free: the input's and outputs' first dimension
named instead of fixed, and a flattening Reshape's leading batch written as -1 (or 0, "as
the input's"). :func:`~.runtime.answers_alike` then checks the copy on random rows, all at once
against one at a time: a copy that fails, or that any other constant ties to the exported batch
(a class token expanded to it, say), is not used, and the model runs in pieces of its batch.
Nothing of this reaches a written file: the repaired model keeps the shapes it came with.
"""
from __future__ import annotations

import onnx
from onnx import numpy_helper

from .index import GraphIndex

FREE_DIM = "batch"


def freed(proto: onnx.ModelProto, batch: int) -> bytes | None:
    """``proto`` serialized so that it takes any batch where the export fixed ``batch``; None
    when a Reshape's constant shape cannot be freed. The changes are made on ``proto`` only
    while it is serialized, then undone: its weights are never copied for this."""
    graph, index = proto.graph, GraphIndex(proto)
    shapes = [_freed_shape(node, index, batch) for node in graph.node
              if node.op_type == "Reshape"]
    if any(shape is False for shape in shapes):
        return None
    shapes = [shape for shape in shapes if shape is not None]        # [(tensor, new shape)]
    dims = [value.type.tensor_type.shape.dim[0] for value in (*index.inputs, *graph.output)
            if _fixed_first(value, batch)]
    kept_info = [onnx.ValueInfoProto.FromString(info.SerializeToString())
                 for info in graph.value_info]                       # inferred at that batch
    originals = [onnx.TensorProto.FromString(tensor.SerializeToString())
                 for tensor, _ in shapes]                            # small: shapes only
    try:
        for dim in dims:
            dim.dim_param = FREE_DIM                                 # a oneof: the value goes
        for tensor, shape in shapes:
            tensor.CopyFrom(numpy_helper.from_array(shape, tensor.name))
        del graph.value_info[:]
        return proto.SerializeToString()
    finally:
        for dim in dims:
            dim.dim_value = batch
        for (tensor, _), original in zip(shapes, originals):
            tensor.CopyFrom(original)
        del graph.value_info[:]
        graph.value_info.extend(kept_info)


def _fixed_first(value: onnx.ValueInfoProto, batch: int) -> bool:
    dims = value.type.tensor_type.shape.dim
    return bool(dims) and dims[0].HasField("dim_value") and dims[0].dim_value == batch


def _freed_shape(node: onnx.NodeProto, index: GraphIndex, batch: int):
    """(the Reshape's constant shape tensor, the shape with -1 (or 0) for its leading
    ``batch``); None when there is nothing to change (a computed or shared shape, or one
    that does not start with the batch); False when the shape cannot say "the input's
    batch" (``allowzero`` with a -1 already in it)."""
    tensor = _constant(node.input[1], index)
    if tensor is None or len(index.consumers.get(node.input[1], [])) != 1:
        return None
    shape = numpy_helper.to_array(tensor).copy()
    if shape.ndim != 1 or not len(shape) or shape[0] != batch:
        return None
    allow_zero = any(a.name == "allowzero" and a.i for a in node.attribute)
    if -1 not in shape:
        shape[0] = -1
    elif not allow_zero:
        shape[0] = 0
    else:
        return False
    return tensor, shape


def _constant(name: str, index: GraphIndex) -> onnx.TensorProto | None:
    if name in index.initializers:
        return index.initializers[name]
    node = index.producers.get(name)
    if node is not None and node.op_type == "Constant":
        return next((a.t for a in node.attribute if a.name == "value"), None)
    return None
