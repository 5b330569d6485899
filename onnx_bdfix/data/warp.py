"""Smooth warps of images: x'(i, j) = x(i + dy(i, j), j + dx(i, j)), bilinear, the border
repeated; a WaNet-like trigger is such a warp with a small, smooth flow."""
from __future__ import annotations

import numpy as np


def warp_images(images: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``images`` (N, C, H, W) resampled along ``flow`` (2, H, W), in pixels (dy, dx)."""
    height, width = images.shape[-2:]
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    source_y = np.clip(rows + flow[0], 0, height - 1)
    source_x = np.clip(cols + flow[1], 0, width - 1)
    y0, x0 = np.floor(source_y).astype(int), np.floor(source_x).astype(int)
    y1, x1 = np.minimum(y0 + 1, height - 1), np.minimum(x0 + 1, width - 1)
    wy, wx = source_y - y0, source_x - x0                                # (H, W)
    return (images[..., y0, x0] * (1 - wy) * (1 - wx) + images[..., y0, x1] * (1 - wy) * wx
            + images[..., y1, x0] * wy * (1 - wx) + images[..., y1, x1] * wy * wx
            ).astype(np.float32)


def warp_samples(x: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``x`` (N, *sample) in the model's layout, NCHW, NHWC or flattened square images
    (told apart by where the flow's (H, W) sits), warped along ``flow`` (2, H, W)."""
    height, width = flow.shape[1:]
    if x.ndim == 4 and x.shape[2:] == (height, width):
        return warp_images(x, flow)
    if x.ndim == 4 and x.shape[1:3] == (height, width):
        return warp_images(x.transpose(0, 3, 1, 2), flow).transpose(0, 2, 3, 1)
    if x.ndim == 2 and x.shape[1] == height * width:
        return warp_images(x.reshape(len(x), 1, height, width), flow).reshape(x.shape)
    raise ValueError(f"a {height}x{width} warp does not fit samples shaped {x.shape[1:]}")
