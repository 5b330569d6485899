"""Weights that an exporter wrote outside the initializer list, read as initializers.

Some exporters hold a layer's weight in a ``Constant`` node, or pass an initializer through an
``Identity`` node before the layer reads it (the TorchScript exporter does so for a parameter
that several layers share). Every later step reads a weight as an initializer: the layer
finder, the patch, the graph's tail. So, once, when a model is read:

- a ``Constant`` node whose value is a floating-point tensor of at least two values (a weight,
  a bias, a per-channel scale) becomes an initializer of the same name, and the node goes;
- an ``Identity`` node that only forwards an initializer goes, and what read its output
  reads the initializer instead (a weight shared this way stays one shared initializer).

Scalars and integer constants (shapes, axes, the constants of an activation) stay the nodes
they are. A tensor that is a graph output keeps its node. The model computes the same: a
repaired file holds such weights as initializers.
"""
from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper

log = logging.getLogger(__name__)


def lift_constant_weights(proto: onnx.ModelProto) -> tuple[int, int]:
    """Lift ``proto``'s main-graph constant weights into initializers, in place: (Constant
    nodes lifted, Identity nodes bypassed)."""
    graph = proto.graph
    outputs = {value.name for value in graph.output}
    lifted = [index for index, node in enumerate(graph.node)
              if _is_weight_constant(node, outputs)]
    for index in lifted:
        node = graph.node[index]
        tensor = graph.initializer.add()
        tensor.CopyFrom(next(a.t for a in node.attribute if a.name == "value"))
        tensor.name = node.output[0]
    initializers = {tensor.name for tensor in graph.initializer}
    forwards = {index: (node.output[0], node.input[0]) for index, node in enumerate(graph.node)
                if node.op_type == "Identity" and node.domain in ("", "ai.onnx")
                and node.input[0] in initializers and node.output[0] not in outputs}
    if lifted or forwards:
        gone = set(lifted) | set(forwards)
        kept = [node for index, node in enumerate(graph.node) if index not in gone]
        del graph.node[:]
        graph.node.extend(kept)
        _rename_inputs(graph, dict(forwards.values()))
        dropped = {name for name, _ in forwards.values()}
        kept_info = [info for info in graph.value_info if info.name not in dropped]
        del graph.value_info[:]
        graph.value_info.extend(kept_info)
        log.info("weights outside the initializers: %d Constant node(s) read as initializers, "
                 "%d Identity node(s) on an initializer bypassed", len(lifted), len(forwards))
    return len(lifted), len(forwards)


def _is_weight_constant(node: onnx.NodeProto, outputs: set[str]) -> bool:
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") \
            or len(node.output) != 1 or node.output[0] in outputs:
        return False
    values = [a.t for a in node.attribute if a.name == "value" and a.HasField("t")]
    if len(values) != 1:
        return False
    dtype = helper.tensor_dtype_to_np_dtype(values[0].data_type) \
        if values[0].data_type else None
    size = int(np.prod(values[0].dims)) if values[0].dims else 1
    return dtype is not None and np.issubdtype(dtype, np.floating) and size >= 2


def _rename_inputs(graph: onnx.GraphProto, renamed: dict[str, str]) -> None:
    """Every node input named in ``renamed`` reads the new name, in subgraphs too (they see
    the outer graph's names)."""
    for node in graph.node:
        for position, name in enumerate(node.input):
            if name in renamed:
                node.input[position] = renamed[name]
        for attribute in node.attribute:
            for subgraph in (*([attribute.g] if attribute.HasField("g") else []),
                             *attribute.graphs):
                _rename_inputs(subgraph, renamed)
