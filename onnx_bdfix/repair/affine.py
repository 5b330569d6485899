"""Per-channel affine layers as memories of one value per key: y_c = a_c · k_c + b_c.

- BatchNormalization (inference form): k = x − running mean, a = scale / √(var + ε), b = B,
  one group per channel (axis 1).
- LayerNormalization over the last axis: k = (x − mean) / √(var + ε) over that axis,
  a = Scale, b = B, one group per feature.
- a Mul by a per-channel constant followed by an Add of one (an exported BatchNormalization,
  as tf2onnx writes Keras's): k = x, a = the Mul's constant, b = the Add's; the channel axis
  is where the constant's one long dimension broadcasts.

Each channel is a group with d = m = 1, so the closed-form solve (:mod:`.solve`) edits it as
it edits a grouped convolution: a channel that the trigger drives and clean samples do not
is turned down, where a normalization sits on every path in front of a nonlinearity (a
PreAct-ResNet's last BatchNormalization, a transformer's LayerNormalization before its
head). The keys are what the scale multiplies, so the bias B is the layer's bias as it is.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

AFFINE_OPS = ("BatchNormalization", "LayerNormalization", "Mul")


@dataclass(frozen=True)
class Affine:
    """How keys and weight relate to the node's inputs; arrays as tuples, (C,) each."""
    axis: int = 1                  # the channel axis of the node's input (< 0: from the end)
    centre: tuple = ()             # BatchNormalization: running mean, taken off the input
    divisor: tuple = ()            # BatchNormalization: √(var + ε); the weight is scale / it
    normalize_eps: float = 0.0     # LayerNormalization: the keys are its normalized input

    def matrices(self, scale: np.ndarray) -> np.ndarray:
        """The scale (C,) as W (C, 1, 1) float64."""
        weight = scale.astype(np.float64).reshape(-1)
        if self.divisor:
            weight = weight / np.asarray(self.divisor)
        return weight[:, None, None]

    def scale(self, matrices: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`matrices`: W (C, 1, 1) -> the scale (C,) float64."""
        weight = matrices.reshape(-1)
        return weight * np.asarray(self.divisor) if self.divisor else weight

    def keys(self, activation: np.ndarray) -> np.ndarray:
        """The node's input as keys (C, n_keys, 1), the channels taken from :attr:`axis`."""
        if self.normalize_eps:                                        # over the last axis
            centred = activation - activation.mean(axis=-1, keepdims=True)
            activation = centred / np.sqrt((centred ** 2).mean(axis=-1, keepdims=True)
                                           + self.normalize_eps)
        channels = np.moveaxis(activation, self.axis, 0)              # (C, N, ...)
        flat = channels.reshape(channels.shape[0], -1)                # (C, n_keys)
        if self.centre:
            flat = flat - np.asarray(self.centre, np.float32)[:, None]
        return np.ascontiguousarray(flat[:, :, None])


def affine_of(node: onnx.NodeProto, inits: dict, users: dict) -> Affine | None:
    """The :class:`Affine` of a BatchNormalization in inference form, of a
    LayerNormalization over the last axis, or of a Mul/Add pair, whose parameters are
    constants; else None."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    constant = [name in inits for name in node.input[1:] if name]
    if node.op_type not in AFFINE_OPS or not constant or not all(constant):
        return None
    if node.op_type == "Mul":
        return _mul_add(node, inits, users)
    if node.op_type == "LayerNormalization":
        if attrs.get("axis", -1) != -1 or len(inits[node.input[1]].dims) != 1:
            return None
        return Affine(axis=-1, normalize_eps=float(attrs.get("epsilon", 1e-5)))
    if attrs.get("training_mode", 0) or len(node.input) != 5 or len(node.output) != 1:
        return None
    mean, var = (numpy_helper.to_array(inits[name]).astype(np.float64).reshape(-1)
                 for name in node.input[3:5])
    divisor = np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
    return Affine(centre=tuple(mean.tolist()), divisor=tuple(divisor.tolist()))


def _mul_add(node: onnx.NodeProto, inits: dict, users: dict) -> Affine | None:
    """A Mul by a constant with one dimension longer than 1, whose output only an Add of a
    constant of the same shape reads."""
    dims = list(inits[node.input[1]].dims)
    long = [i for i, size in enumerate(dims) if size > 1]
    after = users.get(node.output[0], [])
    if len(long) != 1 or len(after) != 1 or after[0].op_type != "Add":
        return None
    added = [name for name in after[0].input if name in inits]
    if len(added) != 1 or list(inits[added[0]].dims) != dims:
        return None
    return Affine(axis=long[0] - len(dims))          # broadcasting aligns from the end
