"""What ``onnx-bdfix inspect`` shows: the editable layers and how they sit in the graph."""
from __future__ import annotations

from .errors import ModelError
from .model import as_loaded, model_input, score_output
from .repair.layers import find_layers


def describe_model(model, output: str | None = None) -> dict:
    """The layers are listed even when no output holds class scores (``score_output`` is
    then None, and so is each layer's ``bypassed``): repair and evaluate need one, not this."""
    loaded = as_loaded(model)
    proto, index = loaded.proto, loaded.index
    spec = model_input(loaded)
    try:
        scores = score_output(loaded, output)
    except ModelError:
        if output:
            raise
        scores = None
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    layers = [{"name": layer.name, "op": layer.op,
               "weight_shape": "x".join(map(str, layer.weight_shape)),
               "weight_transposed": layer.transposed, "weight_dtype": layer.weight_dtype,
               "key_dim": layer.key_dim, "out_dim": layer.out_dim, "groups": layer.groups,
               "followed_by": layer.followed_by, "shared_weight": layer.shared_weight,
               "bypassed": None if scores is None else
               index.has_bypass({layer.node_index}, scores),
               "key_tensor": layer.key_tensor, "output_tensor": layer.output_tensor}
              for layer in find_layers(index)]
    return {"opset": opset, "ir_version": proto.ir_version,
            "input": {"name": spec.name, "shape": ["N" if d is None else d for d in spec.shape],
                      "dtype": spec.dtype.name},
            "score_output": scores, "layers": layers}
