"""One index of a graph's names, built once per loaded model: who produces and who reads
each tensor, the initializers, the real inputs, and whether data can bypass some nodes."""
from __future__ import annotations

from functools import cached_property

import onnx

# Ops whose outputs carry a tensor's shape or size, never its values.
SHAPE_ONLY_OPS = {"Shape", "Size"}


class GraphIndex:
    """Look-ups over ``proto``'s main graph. The proto must not change structure while the
    index is used (weights may: a patched copy keeps node order, names and edges)."""

    def __init__(self, proto: onnx.ModelProto):
        self.proto = proto
        self._inferred: onnx.ModelProto | None = None

    @property
    def graph(self) -> onnx.GraphProto:
        return self.proto.graph

    @cached_property
    def initializers(self) -> dict[str, onnx.TensorProto]:
        return {init.name: init for init in self.graph.initializer}

    @cached_property
    def consumers(self) -> dict[str, list[onnx.NodeProto]]:
        users: dict[str, list[onnx.NodeProto]] = {}
        for node in self.graph.node:
            for name in node.input:
                users.setdefault(name, []).append(node)
        return users

    @cached_property
    def consumer_indices(self) -> dict[str, list[int]]:
        """Tensor name -> positions of the nodes that read it."""
        users: dict[str, list[int]] = {}
        for position, node in enumerate(self.graph.node):
            for name in node.input:
                users.setdefault(name, []).append(position)
        return users

    @cached_property
    def producers(self) -> dict[str, onnx.NodeProto]:
        return {name: node for node in self.graph.node for name in node.output}

    @cached_property
    def inputs(self) -> list[onnx.ValueInfoProto]:
        """Real inputs: old exporters also list initializers as graph inputs."""
        return [value for value in self.graph.input if value.name not in self.initializers]

    @cached_property
    def output_names(self) -> list[str]:
        return [value.name for value in self.graph.output]

    @property
    def inferred(self) -> onnx.ModelProto:
        """The model with inferred shapes (value_info), computed once for every step that
        needs tensor shapes: exposing tensors, cutting the graph, costing layers. A model
        over 2 GiB is inferred afresh each time instead: keeping a second copy of its
        weights would double the memory a repair needs."""
        from .expose import with_inferred_shapes
        from .large import is_large
        if self._inferred is None:
            inferred = with_inferred_shapes(self.proto)
            if is_large(self.proto):
                return inferred
            self._inferred = inferred
        return self._inferred

    def has_bypass(self, node_indices: set[int], output_name: str) -> bool:
        """True when data reaches ``output_name`` from the inputs avoiding every node listed.

        Paths through Shape/Size carry no values and do not count.
        """
        nodes = self.graph.node
        reached = {value.name for value in self.inputs}
        frontier = list(reached)
        while frontier:
            for position in self.consumer_indices.get(frontier.pop(), []):
                user = nodes[position]
                if position in node_indices or user.op_type in SHAPE_ONLY_OPS:
                    continue
                for name in user.output:
                    if name and name not in reached:
                        reached.add(name)
                        frontier.append(name)
        return output_name in reached

    def intermediate_tensors(self) -> list[str]:
        """Every tensor a node produces that is not a graph output, in graph order."""
        outputs = set(self.output_names)
        names = []
        for node in self.graph.node:
            if node.op_type in SHAPE_ONLY_OPS or node.op_type == "Constant":
                continue
            names.extend(name for name in node.output if name and name not in outputs)
        return names


def index_of(model) -> GraphIndex:
    """The index of a :class:`GraphIndex`, a loaded model (its own, built once) or a proto."""
    if isinstance(model, GraphIndex):
        return model
    if isinstance(model, onnx.ModelProto):
        return GraphIndex(model)
    return model.index
