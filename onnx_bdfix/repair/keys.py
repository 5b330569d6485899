"""A layer's input activation as keys (groups, n_keys, d), so that ``keys @ W.T`` reproduces
the layer's output without its bias (Conv: one im2col patch per output location)."""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import ModelError
from .layers import Layer


def split_samples(layer: Layer, activation: np.ndarray, first: int):
    """Split a batch's activation after its first ``first`` samples (Gemm transA: axis 1)."""
    if layer.op == "Gemm" and layer.attrs.get("transA", 0):
        return activation[:, :first], activation[:, first:]
    return activation[:first], activation[first:]


def keys(layer: Layer, activation: np.ndarray) -> np.ndarray:
    """The layer's input as keys: (groups, n_keys, d) float32, one row per output location."""
    activation = np.asarray(activation, dtype=np.float32)
    if layer.affine is not None:
        return layer.affine.keys(activation)
    if layer.op == "Conv":
        return conv_keys(layer, activation)
    if layer.op == "Gemm" and layer.attrs.get("transA", 0):
        activation = activation.T
    if activation.shape[-1] != layer.key_dim:
        raise ModelError(f"layer {layer.name}: input has {activation.shape[-1]} features, "
                         f"the weight expects {layer.key_dim}")
    return activation.reshape(1, -1, layer.key_dim)


def conv_keys(layer: Layer, x: np.ndarray) -> np.ndarray:
    """im2col: (N, C, [H,] W) -> (groups, N * out_locations, C/groups * prod(kernel))."""
    rank = len(layer.weight_shape) - 2
    kernel = list(layer.weight_shape[2:])
    strides = list(layer.attrs.get("strides", [1] * rank))
    dilations = list(layer.attrs.get("dilations", [1] * rank))
    if rank == 1:                                         # Conv1d as a Conv2d of height 1
        x = x[:, :, None, :]
        kernel, strides, dilations = [1] + kernel, [1] + strides, [1] + dilations
    pads = _pads(layer, x.shape[2:], kernel, strides, dilations)
    padded = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    windows = sliding_window_view(padded, extent, axis=(2, 3))
    windows = windows[:, :, ::strides[0], ::strides[1], ::dilations[0], ::dilations[1]]
    n, channels, out_h, out_w = windows.shape[:4]
    per_group = channels // layer.groups
    patches = windows.transpose(0, 2, 3, 1, 4, 5).reshape(
        n * out_h * out_w, layer.groups, per_group * kernel[0] * kernel[1])
    return np.ascontiguousarray(patches.transpose(1, 0, 2))


def _pads(layer: Layer, spatial: tuple, kernel, strides, dilations) -> list[int]:
    """[top, left, bottom, right] for 2-D, honouring auto_pad."""
    auto_pad = layer.attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for size, k, s, d in zip(spatial, kernel, strides, dilations):
            total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
            small, large = total // 2, total - total // 2
            begins.append(small if auto_pad == "SAME_UPPER" else large)
            ends.append(large if auto_pad == "SAME_UPPER" else small)
        return begins + ends
    if auto_pad == "VALID":
        return [0, 0, 0, 0]
    pads = list(layer.attrs.get("pads", [0] * 2 * (len(layer.weight_shape) - 2)))
    if len(layer.weight_shape) == 3:                      # 1-D: [begin, end]
        return [0, pads[0], 0, pads[1]]
    return pads
