"""Where the image sits in one sample (CHW, HWC or a flat square), and the trigger shapes
reconstructions are built from: blends of a mask and a pattern, and patches."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..data import Trigger
from ..errors import DataError


@dataclass
class Geometry:
    """Where height, width and channels sit in one sample of the model's input."""
    layout: str          # "CHW", "HWC" or "flat"
    height: int
    width: int
    channels: int
    shape: tuple

    def to_sample(self, image: np.ndarray) -> np.ndarray:
        """(H, W) image -> an array that broadcasts to one sample."""
        if self.layout == "CHW":
            return image[None]
        if self.layout == "HWC":
            return image[..., None]
        return image.reshape(-1)


def geometry(sample_shape: tuple) -> Geometry:
    shape = tuple(sample_shape)
    if len(shape) == 3 and shape[0] in (1, 3) and shape[1] > 4:
        return Geometry("CHW", shape[1], shape[2], shape[0], shape)
    if len(shape) == 3 and shape[2] in (1, 3):
        return Geometry("HWC", shape[0], shape[1], shape[2], shape)
    if len(shape) == 1 and int(np.sqrt(shape[0])) ** 2 == shape[0]:
        side = int(np.sqrt(shape[0]))
        return Geometry("flat", side, side, 1, shape)
    raise DataError(f"cannot read an image out of samples shaped {shape}; trigger-agnostic "
                    "mode needs (C, H, W), (H, W, C) or a flattened square image")


def made(kind: str, arrays: dict, label: str) -> Trigger:
    """A reconstructed trigger; its digest covers its arrays, its source says what it is."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        digest.update(key.encode() + np.ascontiguousarray(arrays[key]).tobytes())
    return Trigger(kind, arrays, digest.hexdigest(), label)


def blend(geo: Geometry, mask: np.ndarray, pattern: np.ndarray, label: str) -> Trigger:
    return made("blend", {"mask": geo.to_sample(mask.astype(np.float32)),
                          "pattern": geo.to_sample(pattern.astype(np.float32))}, label)


def patch(geo: Geometry, top: int, left: int, cells: np.ndarray, low: float,
          high: float) -> Trigger:
    size = len(cells)
    mask = np.zeros((geo.height, geo.width))
    pattern = np.full((geo.height, geo.width), low)
    mask[top:top + size, left:left + size] = 1.0
    pattern[top:top + size, left:left + size] = np.where(cells > 0, high, low)
    return blend(geo, mask, pattern, f"patch {size}x{size} at ({top}, {left})")
