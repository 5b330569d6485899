"""Editable layers as key -> value memories: y = W k + b.

For each supported op this module finds the weight matrix W (groups, m, d), with an exact
inverse back to the initializer; :mod:`.keys` turns the layer's input into keys. A MatMul
whose weight comes through a Transpose of a constant (exporters write a linear layer's
(out, in) weight that way) is edited through that constant. A normalization's per-channel
scale is a grouped memory of one value per key (:mod:`.affine`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..model.index import index_of
from .affine import AFFINE_OPS, Affine, affine_of

EDITABLE_OPS = ("Conv", "Gemm", "MatMul") + AFFINE_OPS
# A merge edit divides its bypass's change by the branch's per-channel scale: none is made
# where a channel's scale is under this share of the largest (the zoo's: 0.31 and over)
SMALLEST_SCALE = 1e-3


@dataclass
class Layer:
    """One editable node: its weight initializer, the tensor its keys come from, its output."""
    name: str
    op: str
    node_index: int
    weight: str              # initializer name
    key_tensor: str          # the node's data input
    output_tensor: str
    weight_shape: tuple
    weight_dtype: str
    groups: int
    key_dim: int             # d: values in one key
    out_dim: int             # m: outputs per group
    followed_by: str = ""    # BatchNormalization, Mul/Add or Add (bias), when present
    bias: str = ""           # initializer added to the output (Conv B, Gemm C, MatMul's Add)
    shared_weight: bool = False
    attrs: dict = field(default_factory=dict)
    merge_skip: str = ""     # the other input of the residual Add the output flows into
    merge: bool = False      # edit it to answer for that bypass too (a merge edit)
    # on the way to that Add: a per-channel scale (a BatchNormalization's, a ConvNeXt's layer
    # scale), (m,), and a Transpose (its perm), which the bypass's change is taken back through
    merge_scale: np.ndarray | None = field(default=None, compare=False, repr=False)
    merge_perm: tuple = ()
    transposed: bool = False  # MatMul: B is Transpose(weight), the weight stored (m, d)
    affine: Affine | None = None  # a normalization's per-channel scale (d = m = 1)

    def with_bypass(self) -> "Layer":
        """The same layer as a merge edit: it also makes up for what its bypass carries."""
        return replace(self, name=f"{self.name} (+bypass)", merge=True)

    def describe(self) -> str:
        shape = "x".join(map(str, self.weight_shape))
        extra = f", then {self.followed_by}" if self.followed_by else ""
        groups = f", {self.groups} groups" if self.groups > 1 else ""
        stored = ", through a Transpose" if self.transposed else ""
        return f"{self.op} {self.name}: W {shape} ({self.weight_dtype}{stored}), " \
               f"key d={self.key_dim}, m={self.out_dim}{groups}{extra}"


def find_layers(model) -> list[Layer]:
    """Every Conv / Gemm / MatMul with a constant weight, in graph order (``model``: a loaded
    model, its index or a proto)."""
    graph = index_of(model)
    inits, users = graph.initializers, graph.consumers
    found, taken = [], set()
    for index, node in enumerate(graph.graph.node):
        layer = _as_layer(node, index, inits, graph.producers, users)
        if layer is not None:
            if layer.name in taken:                       # node names need not be unique
                layer.name = f"{layer.name}_{index}"
            taken.add(layer.name)
            layer.followed_by = _follower(node.output[0], users, inits)
            layer.bias = _bias(node, layer, users, inits)
            layer.shared_weight = len(users.get(layer.weight, [])) > 1
            layer.merge_skip, layer.merge_scale, layer.merge_perm = \
                _merge_skip(layer, users, inits)
            found.append(layer)
    return found


def _as_layer(node: onnx.NodeProto, index: int, inits: dict, producers: dict,
              users: dict) -> Layer | None:
    if node.op_type not in EDITABLE_OPS or node.domain not in ("", "ai.onnx"):
        return None
    if len(node.input) < 2 or node.input[0] in inits:
        return None
    affine = affine_of(node, inits, users) if node.op_type in AFFINE_OPS else None
    if node.op_type in AFFINE_OPS and affine is None:
        return None
    stored = node.input[1] if node.input[1] in inits else \
        _transposed_constant(node, inits, producers, users)
    if not stored:
        return None
    transposed, weight = stored != node.input[1], inits[stored]
    dtype = helper.tensor_dtype_to_np_dtype(weight.data_type)
    if not np.issubdtype(dtype, np.floating):
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    shape = tuple(weight.dims)
    name = node.name or f"{node.op_type}_{index}"
    common = dict(name=name, op=node.op_type, node_index=index, weight=weight.name,
                  key_tensor=node.input[0], output_tensor=node.output[0], weight_shape=shape,
                  weight_dtype=np.dtype(dtype).name, attrs=attrs)
    if affine is not None:
        channels = int(np.prod(shape))
        return Layer(groups=channels, key_dim=1, out_dim=1, affine=affine, **common)
    if node.op_type == "Conv":
        if len(shape) not in (3, 4):
            return None
        groups = int(attrs.get("group", 1))
        return Layer(groups=groups, key_dim=int(np.prod(shape[1:])),
                     out_dim=shape[0] // groups, **common)
    if len(shape) != 2:
        return None
    if node.op_type == "Gemm":
        d, m = (shape[1], shape[0]) if attrs.get("transB", 0) else shape
        return Layer(groups=1, key_dim=d, out_dim=m, **common)
    if transposed:
        return Layer(groups=1, key_dim=shape[1], out_dim=shape[0], transposed=True, **common)
    return Layer(groups=1, key_dim=shape[0], out_dim=shape[1], **common)


def _transposed_constant(node: onnx.NodeProto, inits: dict, producers: dict,
                         users: dict) -> str:
    """The constant a MatMul's B is the 2-D transpose of, when that Transpose feeds this
    node alone (an edit of the constant then changes nothing else); else ''."""
    if node.op_type != "MatMul":
        return ""
    source = producers.get(node.input[1])
    if source is None or source.op_type != "Transpose" or source.input[0] not in inits \
            or len(users.get(source.output[0], [])) != 1:
        return ""
    perm = [list(a.ints) for a in source.attribute if a.name == "perm"]
    if len(inits[source.input[0]].dims) != 2 or perm not in ([], [[1, 0]]):
        return ""
    return source.input[0]


def _bias(node: onnx.NodeProto, layer: Layer, users: dict, inits: dict) -> str:
    """The bias initializer, when it holds exactly one value per output channel."""
    name = ""
    if node.op_type in ("Conv", "Gemm", *AFFINE_OPS) and len(node.input) > 2:
        name = node.input[2]
    elif layer.followed_by == "Add (bias)":
        name = next(i for i in users[node.output[0]][0].input if i in inits)
    if name not in inits or len(users.get(name, [])) != 1:
        return ""
    size = int(np.prod(inits[name].dims)) if inits[name].dims else 1
    return name if size == layer.groups * layer.out_dim else ""


def _merge_skip(layer: Layer, users: dict, inits: dict) -> tuple:
    """(skip tensor, scale, perm): the other input of the residual Add the layer's output
    (after its bias Add) flows into, when the layer is a branch of a merge, so that an edit can
    answer for the whole merge. The layer's follower may scale each channel (a
    BatchNormalization, a Mul/Add pair); then, on the way, at most one per-channel constant Mul
    (a layer scale) and one Transpose, in either order (a ConvNeXt block scales then
    transposes; torchvision's transposes then scales); no scale with a channel near zero.
    ("", None, ()) otherwise."""
    none = ("", None, ())
    if layer.groups != 1 or layer.attrs.get("transA", 0):
        return none
    output, scale = _after_follower(layer, users, inits)
    if output is None:
        return none
    perm, layer_scaled = (), False
    after = users.get(output, [])
    while len(after) == 1 and (after[0].op_type == "Mul" and not layer_scaled
                               or after[0].op_type == "Transpose" and not perm):
        node = after[0]
        if node.op_type == "Mul":
            extra = _channel_scale(layer, node, inits, perm)
            if extra is None:
                return none
            scale, layer_scaled = extra if scale is None else scale * extra, True
        else:
            perm = tuple(next((list(a.ints) for a in node.attribute if a.name == "perm"), []))
            if not perm:
                return none
        output = node.output[0]
        after = users.get(output, [])
    if len(after) != 1 or after[0].op_type != "Add" or len(after[0].input) != 2:
        return none
    other = [name for name in after[0].input if name != output]
    return (other[0], scale, perm) if len(other) == 1 and other[0] not in inits else none


def _after_follower(layer: Layer, users: dict, inits: dict) -> tuple:
    """(the tensor after the layer's follower, the follower's per-channel scale or None):
    a bias Add adds; a BatchNormalization (after a Conv or Gemm) or a Mul/Add pair scales each
    channel, and its shift cancels in what the bypass changes (a constant Mul straight into
    the residual Add is a layer scale: the tensor after it). (None, None) for a follower that
    is none of these."""
    output = layer.output_tensor
    if layer.followed_by == "":
        return output, None
    node = users[output][0]
    if layer.followed_by == "Add (bias)":
        return node.output[0], None
    if layer.followed_by == "Mul/Add":          # a scale, then a shift, or then the merge
        scale = _channel_scale(layer, node, inits, ())
        added = users[node.output[0]][0]
        shifted = any(name in inits for name in added.input)
        after = added.output[0] if shifted else node.output[0]
        return (None, None) if scale is None else (after, scale)
    affine = affine_of(node, inits, users)
    if affine is None or layer.op not in ("Conv", "Gemm"):
        return None, None
    scale = _usable(affine.matrices(numpy_helper.to_array(inits[node.input[1]])), layer)
    return (None, None) if scale is None else (node.output[0], scale)


def _channel_scale(layer: Layer, node: onnx.NodeProto, inits: dict, perm: tuple
                   ) -> np.ndarray | None:
    """(m,) float64: the constant a Mul scales each of the layer's output channels by, or
    None. The channel axis is the last for a Gemm or MatMul, the second for a Conv, moved by
    ``perm`` where a Transpose came first; the constant has m values along it, 1 elsewhere."""
    constant = [name for name in node.input if name in inits]
    if len(constant) != 1:
        return None
    value = numpy_helper.to_array(inits[constant[0]]).astype(np.float64)
    rank = len(perm) or (len(layer.weight_shape) if layer.op == "Conv" else 0)
    channel = 1 if layer.op == "Conv" else (rank - 1 if rank else -1)
    if perm:
        channel = perm.index(channel if channel >= 0 else rank + channel)
    axis = channel - rank if rank else -1                      # counted from the right
    if value.ndim < -axis or value.shape[axis] != layer.out_dim:
        return None
    return _usable(value, layer)


def _usable(scale: np.ndarray, layer: Layer) -> np.ndarray | None:
    """``scale`` as (m,) when it holds one finite value per output channel, none of them under
    :data:`SMALLEST_SCALE` of the largest (the bypass's change is divided by it: a channel
    scaled almost to nothing would have to change without bound), else None."""
    flat = scale.reshape(-1)
    if flat.size != layer.out_dim or not np.all(np.isfinite(flat)):
        return None
    size = np.abs(flat)
    return flat if size.min() > SMALLEST_SCALE * size.max() else None


def _follower(output: str, users: dict, inits: dict) -> str:
    after = users.get(output, [])
    if len(after) != 1:
        return ""
    node = after[0]
    if node.op_type == "BatchNormalization":
        return "BatchNormalization"
    constant = any(name in inits for name in node.input)
    if node.op_type == "Mul" and constant:
        nxt = users.get(node.output[0], [])
        if len(nxt) == 1 and nxt[0].op_type == "Add":
            return "Mul/Add"
    if node.op_type == "Add" and constant:
        return "Add (bias)"
    return ""


# ----------------------------------------------------------------- weight <-> matrix
def weight_array(model, layer: Layer) -> np.ndarray:
    return numpy_helper.to_array(index_of(model).initializers[layer.weight])


def to_matrices(layer: Layer, weight: np.ndarray) -> np.ndarray:
    """The initializer as W: (groups, m, d) float64."""
    if layer.affine is not None:
        return layer.affine.matrices(weight)
    weight = weight.astype(np.float64)
    if layer.op == "Conv":
        return weight.reshape(layer.groups, layer.out_dim, layer.key_dim)
    if layer.op == "Gemm":
        b_used = weight.T if layer.attrs.get("transB", 0) else weight     # (d, m)
        return (layer.attrs.get("alpha", 1.0) * b_used.T)[None]
    if layer.transposed:
        return weight[None]                                  # MatMul, B = Transpose((m, d))
    return weight.T[None]                                                  # MatMul: B is (d, m)


def from_matrices(layer: Layer, matrices: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_matrices`, in the initializer's shape and dtype."""
    dtype = np.dtype(layer.weight_dtype)
    if layer.affine is not None:
        return layer.affine.scale(matrices).reshape(layer.weight_shape).astype(dtype)
    if layer.op == "Conv":
        return matrices.reshape(layer.weight_shape).astype(dtype)
    if layer.op == "Gemm":
        b_used = matrices[0].T / layer.attrs.get("alpha", 1.0)           # (d, m)
        weight = b_used.T if layer.attrs.get("transB", 0) else b_used
        return np.ascontiguousarray(weight).astype(dtype)
    if layer.transposed:
        return np.ascontiguousarray(matrices[0]).astype(dtype)
    return np.ascontiguousarray(matrices[0].T).astype(dtype)


def bias_array(model, layer: Layer) -> np.ndarray:
    return numpy_helper.to_array(index_of(model).initializers[layer.bias])


def shifted_bias(layer: Layer, bias: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``bias`` after adding ``shift`` (groups, m) to the layer's output (Gemm: over beta)."""
    scale = layer.attrs.get("beta", 1.0) if layer.op == "Gemm" else 1.0
    moved = bias.astype(np.float64) + shift.reshape(bias.shape) / scale
    return moved.astype(bias.dtype)
