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


@dataclass(frozen=True)
class Domain:
    """The range the clean samples span in the model's own scale, per channel: what every
    reconstruction stays inside (a normalized input has no "white = 1.0")."""
    low: np.ndarray      # (C,)
    high: np.ndarray     # (C,)

    @property
    def span(self) -> np.ndarray:
        return self.high - self.low

    def image(self, cells: np.ndarray) -> np.ndarray:
        """(size, size) or (C, size, size) on/off cells -> (C, size, size) values."""
        cells = np.broadcast_to(cells, (len(self.low), *np.shape(cells)[-2:]))
        return np.where(cells > 0, self.high[:, None, None], self.low[:, None, None])


def domain(geo: Geometry, probe: np.ndarray, known: tuple | None = None) -> Domain:
    """Per channel, the range the input can take: ``known`` (low, high), numbers or arrays
    broadcasting to one sample, where the data states it (:meth:`Dataset.input_range`);
    else the minimum and maximum of the probe samples."""
    if known is not None:
        low, high = (geo.to_image(np.asarray(end, np.float64)) for end in known)
        return Domain(low.min(axis=(1, 2)), high.max(axis=(1, 2)))
    images = np.stack([geo.to_image(sample) for sample in probe])      # (N, C, H, W)
    return Domain(images.min(axis=(0, 2, 3)).astype(np.float64),
                  images.max(axis=(0, 2, 3)).astype(np.float64))


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


def patch(geo: Geometry, top: int, left: int, cells: np.ndarray, span: Domain) -> Trigger:
    """A square patch: ``cells`` (size, size), the same on every channel, or (C, size, size)
    one bit per channel; on = the channel's high end, off = its low end."""
    size = np.shape(cells)[-1]
    mask = np.zeros((geo.height, geo.width))
    mask[top:top + size, left:left + size] = 1.0
    pattern = span.image(np.zeros((geo.height, geo.width)))
    pattern[:, top:top + size, left:left + size] = span.image(cells)
    if geo.channels == 1:
        pattern = pattern[0]
    return blend(geo, mask, pattern, f"patch {size}x{size} at ({top}, {left})")
