"""Clean and evaluation data: .npz arrays or folders of images, in the model's input layout.

An .npz holds ``x`` (N, ...) already in the model's layout and scale, optional integer
labels ``y`` (N,), and, for compact integer images, optional ``scale`` and ``offset`` with
x_model = x * scale + offset: one number each, or arrays that broadcast to one sample (per
channel, for a model that takes mean/std-normalized input). A folder holds images, flat or
one subfolder per class.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..host import existing, file_sha256
from ..model.signature import InputInfo, model_input
from .images import ImageOptions, load_image_folder
from .npz import read_npz_x


@dataclass
class Dataset:
    """Samples as stored (integer or float, possibly memory-mapped), scaled on the way out."""
    raw: np.ndarray               # (N, *sample_shape) as stored
    y: np.ndarray | None          # (N,) int64 labels, or None
    sha256: str
    source: str
    scale: float | np.ndarray = 1.0      # a number, or an array broadcasting to one sample
    offset: float | np.ndarray = 0.0
    value_range: tuple | None = None     # (low, high) a valid input can take, in the model's
    #                                      scale: numbers or arrays broadcasting to a sample

    def input_range(self) -> tuple | None:
        """(low, high) the model's input can take, where the data says: as set (an image
        folder's pixel range through --scale/--mean/--std, or --input-range), else the range
        of 8-bit samples through their scale and offset; None when only the values tell."""
        if self.value_range is not None:
            return self.value_range
        if self.raw.dtype == np.uint8:
            scale, offset = np.asarray(self.scale), np.asarray(self.offset)
            ends = (offset, 255 * scale + offset)
            return np.minimum(*ends), np.maximum(*ends)
        return None

    def __len__(self) -> int:
        return len(self.raw)

    @property
    def x(self) -> np.ndarray:
        """Every sample as float32 in the model's scale (a full copy: prefer :meth:`rows`)."""
        return self.rows()[:]

    def head(self, count: int) -> "Dataset":
        """The first ``count`` samples (a view: nothing is copied)."""
        labels = None if self.y is None else self.y[:count]
        return Dataset(self.raw[:count], labels, self.sha256, self.source, self.scale,
                       self.offset, self.value_range)

    def rows(self, order: np.ndarray | None = None, trigger=None) -> "Rows":
        return Rows(self.raw, self.scale, self.offset, order, trigger)


class Rows:
    """A lazy view of samples in a given order: ``rows[i:j]`` or ``rows[indices]`` gathers,
    scales to float32 and, with a trigger, triggers just those samples. Memory follows the
    batch, not the data set."""

    def __init__(self, raw: np.ndarray, scale=1.0, offset=0.0,
                 order: np.ndarray | None = None, trigger=None):
        self.raw, self.order, self.trigger = raw, order, trigger
        self.scale = np.asarray(scale, np.float32)          # () or broadcasting to a sample
        self.offset = np.asarray(offset, np.float32)

    def __len__(self) -> int:
        return len(self.order) if self.order is not None else len(self.raw)

    @property
    def shape(self) -> tuple:
        return (len(self), *self.raw.shape[1:])

    def __getitem__(self, rows) -> np.ndarray:
        index = self.order[rows] if self.order is not None else np.arange(len(self.raw))[rows]
        batch = self.raw[index].astype(np.float32)
        if (self.scale != 1).any() or (self.offset != 0).any():
            batch = batch * self.scale + self.offset
        return self.trigger.apply(batch, index) if self.trigger is not None else batch


def load_data(path: str | Path, model, images: ImageOptions | None = None,
              what: str = "data") -> Dataset:
    """Samples for ``model`` (its :class:`InputInfo`, or the model itself), checked against
    its input: an .npz file, or a folder of images read with ``images``."""
    spec = model if isinstance(model, InputInfo) else model_input(model)
    path = existing(path, what, DataError, folder_ok=True)
    if path.is_dir():
        options = images or ImageOptions()
        dataset = Dataset(*load_image_folder(path, spec, options), str(path),
                          value_range=options.value_range(spec))
    else:
        dataset = load_npz(path, what)
    check_against_input(dataset, spec, what)
    if images is not None and images.input_range:
        dataset.value_range = stated_range(images.input_range, dataset.raw.shape[1:])
    return dataset


def stated_range(values: list[float], sample_shape: tuple) -> tuple:
    """--input-range ``low,high`` (every channel), or one pair per channel, as (low, high)
    arrays broadcasting to one sample: per channel along the first axis of that many
    entries, else the last."""
    pairs = np.asarray(values, np.float32).reshape(-1, 2)              # (channels, 2)
    if len(pairs) > 1:
        shape = [1] * len(sample_shape)
        axes = [i for i in (0, len(sample_shape) - 1) if sample_shape[i] == len(pairs)]
        if not axes:
            raise DataError(f"--input-range gives {len(pairs)} pairs; samples shaped "
                            f"{tuple(sample_shape)} have no axis of that many channels")
        shape[axes[0]] = len(pairs)
        pairs = pairs.reshape(*shape, 2)
    low, high = pairs[..., 0], pairs[..., 1]
    if (high <= low).any():
        raise DataError("--input-range: each high must be above its low")
    return (low.reshape(()) if low.size == 1 else low), \
        (high.reshape(()) if high.size == 1 else high)


def load_npz(path: Path, what: str = "data") -> Dataset:
    raw, arrays = read_npz_x(path, what)
    labels = arrays.get("y")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(raw),) or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{what} {path}: 'y' must be {len(raw)} integer labels, "
                            f"got {labels.dtype} {labels.shape}")
        labels = labels.astype(np.int64)
    scale, offset = scale_and_offset(raw, arrays, path, what)
    return Dataset(raw, labels, file_sha256(path), str(path), scale, offset)


def scale_and_offset(raw: np.ndarray, arrays: dict, path: Path, what: str) -> tuple:
    """``scale`` and ``offset``: finite numbers, or finite arrays that broadcast to one
    sample (per channel); integer samples must state their scale, since 0..255 pixels fed to
    a model trained on 0..1 would pass every shape check."""
    if np.issubdtype(raw.dtype, np.integer) and "scale" not in arrays:
        raise DataError(f"{what} {path}: 'x' holds integers ({raw.dtype}) and the file has no "
                        "'scale'; add scale (e.g. 1/255 for pixels a model takes in [0, 1], "
                        "or 1 for a model that takes raw values) and optionally offset")
    values = [_factor(arrays.get(key, default), key, raw.shape[1:], path, what)
              for key, default in (("scale", 1.0), ("offset", 0.0))]
    if (np.asarray(values[0]) == 0).any():
        raise DataError(f"{what} {path}: 'scale' is 0; every sample would be the same")
    return tuple(values)


def _factor(value, key: str, sample_shape: tuple, path: Path, what: str):
    """One finite number as a float, or a finite array that broadcasts to one sample."""
    value = np.asarray(value)
    if value.size == 0 or not np.issubdtype(value.dtype, np.number) \
            or np.iscomplexobj(value) or not np.isfinite(value).all():
        raise DataError(f"{what} {path}: '{key}' must be finite numbers, got {value!r}")
    if value.size == 1:
        return float(value.reshape(()))
    try:
        fits = np.broadcast_shapes(value.shape, sample_shape) == tuple(sample_shape)
    except ValueError:
        fits = False
    if not fits:
        raise DataError(f"{what} {path}: '{key}' has shape {value.shape}, which does not "
                        f"broadcast to one sample of shape {tuple(sample_shape)}; give one "
                        "number, or one per channel")
    return value.astype(np.float32)


def check_against_input(dataset: Dataset, model_input: InputInfo, what: str) -> None:
    expected = model_input.sample_shape
    got = list(dataset.raw.shape[1:])
    fits = len(got) == len(expected) and all(e is None or e == g for e, g in zip(expected, got))
    if not fits:
        shown = "x".join("?" if e is None else str(e) for e in expected)
        hint = _layout_hint(expected, got)
        raise DataError(f"{what} {dataset.source}: samples are {'x'.join(map(str, got))}, "
                        f"the model's input {model_input.name!r} takes {shown}{hint}")
    if not all_finite(dataset.raw):
        raise DataError(f"{what} {dataset.source}: 'x' holds NaN or Inf values")


def all_finite(raw: np.ndarray, chunk: int = 1024) -> bool:
    """Checked a chunk at a time, so a memory-mapped file is never read in whole."""
    if np.issubdtype(raw.dtype, np.integer):
        return True
    return all(np.isfinite(raw[start:start + chunk]).all() for start in range(0, len(raw), chunk))


def _layout_hint(expected: list, got: list) -> str:
    if len(expected) == len(got) == 3 and sorted(map(str, expected)) == sorted(map(str, got)):
        return " (channels in the wrong place? convert between NCHW and NHWC)"
    return ""

