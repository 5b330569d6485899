"""What differs between two ONNX models: structure, and each initializer's change.

A reviewer reads it to see that a repair touched only weights (and which, by how much).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from .model import as_loaded


@dataclass
class TensorChange:
    name: str
    status: str                      # changed, added, removed, reshaped, retyped
    shape: list[int]
    max_abs_change: float | None = None
    relative_change: float | None = None   # ‖B − A‖ / ‖A‖

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ModelDiff:
    structure: list[str] = field(default_factory=list)      # one line per structural change
    initializers: list[TensorChange] = field(default_factory=list)
    metadata: list[str] = field(default_factory=list)

    @property
    def weights_only(self) -> bool:
        """True when only initializer values (and metadata) differ."""
        return not self.structure and all(c.status == "changed" for c in self.initializers)

    def as_dict(self) -> dict:
        return {"weights_only": self.weights_only, "structure": self.structure,
                "initializers": [c.as_dict() for c in self.initializers],
                "metadata": self.metadata}


def diff_models(model_a, model_b) -> ModelDiff:
    """``model_a``, ``model_b``: paths or loaded models."""
    return diff_protos(as_loaded(model_a).proto, as_loaded(model_b).proto)


def diff_protos(a: onnx.ModelProto, b: onnx.ModelProto) -> ModelDiff:
    result = ModelDiff()
    result.structure = _structure(a, b)
    result.initializers = _initializers(a, b)
    result.metadata = _metadata(a, b)
    return result


def _structure(a: onnx.ModelProto, b: onnx.ModelProto) -> list[str]:
    lines = []
    if a.ir_version != b.ir_version:
        lines.append(f"IR version {a.ir_version} -> {b.ir_version}")
    opsets = lambda m: {o.domain or "ai.onnx": o.version for o in m.opset_import}  # noqa
    if opsets(a) != opsets(b):
        lines.append(f"opsets {opsets(a)} -> {opsets(b)}")
    for what in ("input", "output"):
        names = lambda m: [v.name for v in getattr(m.graph, what)]  # noqa
        if [v.SerializeToString() for v in getattr(a.graph, what)] != \
                [v.SerializeToString() for v in getattr(b.graph, what)]:
            lines.append(f"graph {what}s {names(a)} -> {names(b)}")
    nodes_a, nodes_b = list(a.graph.node), list(b.graph.node)
    if len(nodes_a) != len(nodes_b):
        lines.append(f"{len(nodes_a)} nodes -> {len(nodes_b)} nodes")
    for index, (x, y) in enumerate(zip(nodes_a, nodes_b)):
        if x != y:
            lines.append(f"node {index} {x.op_type} {x.name!r}: "
                         f"inputs {list(x.input)} -> {list(y.input)}"
                         if x.op_type == y.op_type else
                         f"node {index}: {x.op_type} {x.name!r} -> {y.op_type} {y.name!r}")
    return lines


def _initializers(a: onnx.ModelProto, b: onnx.ModelProto) -> list[TensorChange]:
    first = {t.name: t for t in a.graph.initializer}
    second = {t.name: t for t in b.graph.initializer}
    changes = [TensorChange(n, "removed", list(first[n].dims)) for n in first if n not in second]
    changes += [TensorChange(n, "added", list(second[n].dims)) for n in second if n not in first]
    for name in first.keys() & second.keys():
        change = _compare(name, numpy_helper.to_array(first[name]),
                          numpy_helper.to_array(second[name]))
        if change is not None:
            changes.append(change)
    return sorted(changes, key=lambda c: c.name)


def _compare(name: str, x: np.ndarray, y: np.ndarray) -> TensorChange | None:
    if x.dtype != y.dtype:
        return TensorChange(name, "retyped", list(y.shape))
    if x.shape != y.shape:
        return TensorChange(name, "reshaped", list(y.shape))
    if np.array_equal(x, y):
        return None
    if not np.issubdtype(x.dtype, np.number):
        return TensorChange(name, "changed", list(x.shape))
    delta = y.astype(np.float64) - x.astype(np.float64)
    norm = float(np.linalg.norm(x.astype(np.float64)))
    return TensorChange(name, "changed", list(x.shape), float(np.abs(delta).max()),
                        float(np.linalg.norm(delta)) / norm if norm else None)


def _metadata(a: onnx.ModelProto, b: onnx.ModelProto) -> list[str]:
    first = {p.key: p.value for p in a.metadata_props}
    second = {p.key: p.value for p in b.metadata_props}
    return [f"{'added' if k not in first else 'removed' if k not in second else 'changed'}: {k}"
            for k in sorted(first.keys() | second.keys()) if first.get(k) != second.get(k)]
