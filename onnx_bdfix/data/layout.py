"""Where the image sits in one sample of the model's input: channels first (CHW), channels
last (HWC) or a flattened square (flat). Read off the sample shape alone; the scan builds its
reconstructions on it and the repair shifts clean samples by it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
        """(H, W) image, or (C, H, W) one per channel -> an array that broadcasts to one
        sample."""
        if image.ndim == 3:
            if self.layout == "CHW":
                return image
            if self.layout == "HWC":
                return image.transpose(1, 2, 0)
            return image.reshape(-1)
        if self.layout == "CHW":
            return image[None]
        if self.layout == "HWC":
            return image[..., None]
        return image.reshape(-1)

    def to_image(self, sample: np.ndarray) -> np.ndarray:
        """An array broadcasting to one sample -> (C, H, W)."""
        full = np.broadcast_to(sample, self.shape)
        if self.layout == "HWC":
            return np.ascontiguousarray(full.transpose(2, 0, 1))
        return np.asarray(full).reshape(self.channels, self.height, self.width)

    def per_channel(self, values: np.ndarray) -> np.ndarray:
        """(C,) values -> an array that broadcasts to one sample, one value per channel."""
        values = np.asarray(values, np.float32)
        if self.layout == "CHW":
            return values.reshape(-1, 1, 1)
        if self.layout == "HWC":
            return values.reshape(1, 1, -1)
        return values.reshape(())


def geometry(sample_shape: tuple) -> Geometry:
    """The layout of samples shaped ``sample_shape`` (no batch axis), or DataError."""
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


def spatial_axes(sample_shape: tuple) -> tuple[int, int] | None:
    """The (height, width) axes of one sample when it holds an image with channels first or
    last (a flat vector, even a square one, may be features rather than pixels: None)."""
    try:
        layout = geometry(sample_shape).layout
    except DataError:
        return None
    return {"CHW": (1, 2), "HWC": (0, 1)}.get(layout)
