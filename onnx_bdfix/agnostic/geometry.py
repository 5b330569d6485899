"""The trigger shapes reconstructions are built from: blends of a mask and a pattern, and
patches, placed on the image as :mod:`onnx_bdfix.data.layout` finds it in a sample, inside
the range the clean samples span (:class:`Domain`)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..data import Trigger
from ..data.layout import Geometry


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


def made(kind: str, arrays: dict, label: str) -> Trigger:
    """A reconstructed trigger; its digest covers its arrays, its source says what it is."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        digest.update(key.encode() + np.ascontiguousarray(arrays[key]).tobytes())
    return Trigger(kind, arrays, digest.hexdigest(), label)


def stronger(trigger: Trigger, factor: float) -> Trigger:
    """``trigger`` ``factor`` times as strong: an additive perturbation or a warp's flow
    scaled, a blend's mask scaled up to 1 (a patch, mask 0 or 1, stays as it is: the same
    arrays, the same digest)."""
    arrays = dict(trigger.arrays)
    scaled = {"delta": "delta", "warp": "flow", "blend": "mask"}[trigger.kind]
    arrays[scaled] = (arrays[scaled] * factor).astype(np.float32)
    if trigger.kind == "blend":
        arrays["mask"] = np.minimum(arrays["mask"], 1).astype(np.float32)
    return made(trigger.kind, arrays, f"{trigger.source} x{factor:g}")


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
