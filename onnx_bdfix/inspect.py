"""What ``onnx-bdfix inspect`` shows: the editable layers and how they sit in the graph."""
from __future__ import annotations

from .graph import has_bypass, load_model, model_input, score_output
from .layers import find_layers


def describe_model(path, output: str | None = None) -> dict:
    proto = load_model(path).proto
    spec = model_input(proto)
    scores = score_output(proto, output)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    layers = [{"name": layer.name, "op": layer.op,
               "weight_shape": "x".join(map(str, layer.weight_shape)),
               "weight_dtype": layer.weight_dtype, "key_dim": layer.key_dim,
               "out_dim": layer.out_dim, "groups": layer.groups,
               "followed_by": layer.followed_by, "shared_weight": layer.shared_weight,
               "bypassed": has_bypass(proto, {layer.node_index}, scores),
               "key_tensor": layer.key_tensor, "output_tensor": layer.output_tensor}
              for layer in find_layers(proto)]
    return {"opset": opset, "ir_version": proto.ir_version,
            "input": {"name": spec.name, "shape": ["N" if d is None else d for d in spec.shape],
                      "dtype": spec.dtype.name},
            "score_output": scores, "layers": layers}
