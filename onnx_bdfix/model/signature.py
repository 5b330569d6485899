"""What a classifier takes and gives: its one data input (floats, or integer pixels such as
uint8), and its class-score output."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ..errors import ModelError
from .index import GraphIndex, index_of

FLOAT_TYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16,
               onnx.TensorProto.DOUBLE: np.float64}
# an image model may take its pixels as integers (a Cast to float inside the graph): every
# sample, triggered or reconstructed, is rounded and clipped to the type (runtime.as_input)
INTEGER_TYPES = {onnx.TensorProto.UINT8: np.uint8, onnx.TensorProto.INT8: np.int8,
                 onnx.TensorProto.UINT16: np.uint16, onnx.TensorProto.INT16: np.int16}
INPUT_TYPES = FLOAT_TYPES | INTEGER_TYPES


@dataclass
class InputInfo:
    """The model's one data input: shape has None where a dimension is dynamic."""
    name: str
    shape: list[int | None]
    dtype: np.dtype

    @property
    def sample_shape(self) -> list[int | None]:
        return self.shape[1:]


def model_input(model) -> InputInfo:
    """``model``: a loaded model, its index or a proto."""
    inputs = index_of(model).inputs
    if len(inputs) != 1:
        names = ", ".join(value.name for value in inputs) or "none"
        raise ModelError(f"the model has {len(inputs)} data inputs ({names}); onnx-bdfix "
                         "repairs classifiers with exactly one input tensor")
    value = inputs[0]
    tensor_type = value.type.tensor_type
    if tensor_type.elem_type not in INPUT_TYPES:
        kind = onnx.TensorProto.DataType.Name(tensor_type.elem_type).lower()
        raise ModelError(f"input {value.name!r} is a {kind} tensor; onnx-bdfix needs a float "
                         "(float32, float16, double) or integer pixel (uint8, int8, uint16, "
                         "int16) input")
    if not tensor_type.HasField("shape") or len(tensor_type.shape.dim) < 2:
        raise ModelError(f"input {value.name!r} has no (batch, ...) shape; re-export the model "
                         "with a fixed sample shape")
    shape = [dim.dim_value if dim.dim_value > 0 else None for dim in tensor_type.shape.dim]
    return InputInfo(value.name, shape, np.dtype(INPUT_TYPES[tensor_type.elem_type]))


def score_output(model, name: str | None = None) -> str:
    """The tensor holding class scores: ``name``, or the first float (N, classes) output.

    A scikit-learn export has an int64 label output first; a ZipMap output's float input is
    used in its place.
    """
    index: GraphIndex = index_of(model)
    graph = index.graph
    if name:
        if name not in index.producers and name not in index.output_names:
            outputs = ", ".join(index.output_names)
            raise ModelError(f"--output {name!r} is not a tensor of this model "
                             f"(its outputs: {outputs})")
        return name
    for value in graph.output:
        node = index.producers.get(value.name)
        if node is not None and node.op_type == "ZipMap":
            return node.input[0]
        tensor_type = value.type.tensor_type
        dims = tensor_type.shape.dim
        if tensor_type.elem_type in FLOAT_TYPES and len(dims) == 2 and dims[1].dim_value != 1:
            return value.name
    raise ModelError("no output of the model is a float (N, classes) tensor; "
                     "name the class-score output with --output")
