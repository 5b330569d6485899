"""A model exported with a fixed batch, run batched: a copy for ONNX Runtime only.

torch's exporters without dynamic axes fix the batch to the example's, often 1: in the input
and output shapes, and in the constant shape of every Reshape that flattens. Run as it is,
such a model takes one sample per run, and a scan's 200,000 evaluations become 200,000 runs.
:func:`freed` writes a copy whose batch is free: the input's and outputs' first dimension
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
from .large import copy_proto

FREE_DIM = "batch"


def freed(proto: onnx.ModelProto, batch: int) -> onnx.ModelProto | None:
    """A copy of ``proto`` that takes any batch where the export fixed ``batch``; None when a
    Reshape's constant shape cannot be freed."""
    copy = copy_proto(proto)
    graph = copy.graph
    index = GraphIndex(copy)
    for value in (*index.inputs, *graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == batch:
            dims[0].dim_param = FREE_DIM          # a oneof: the fixed value goes
    del graph.value_info[:]                       # inferred for the fixed batch
    for node in graph.node:
        if node.op_type == "Reshape" and not _free_reshape(node, index, batch):
            return None
    return copy


def _free_reshape(node: onnx.NodeProto, index: GraphIndex, batch: int) -> bool:
    """Write -1 (or 0) for a leading ``batch`` in the Reshape's constant shape, when no other
    node reads that constant; False when the shape cannot say "the input's batch"."""
    tensor = _constant(node.input[1], index)
    if tensor is None or len(index.consumers.get(node.input[1], [])) != 1:
        return True                               # computed, or shared: left as it is
    shape = numpy_helper.to_array(tensor).copy()
    if shape.ndim != 1 or not len(shape) or shape[0] != batch:
        return True
    allow_zero = any(a.name == "allowzero" and a.i for a in node.attribute)
    if -1 not in shape:
        shape[0] = -1
    elif not allow_zero:
        shape[0] = 0
    else:
        return False
    tensor.CopyFrom(numpy_helper.from_array(shape, tensor.name))
    return True


def _constant(name: str, index: GraphIndex) -> onnx.TensorProto | None:
    if name in index.initializers:
        return index.initializers[name]
    node = index.producers.get(name)
    if node is not None and node.op_type == "Constant":
        return next((a.t for a in node.attribute if a.name == "value"), None)
    return None
