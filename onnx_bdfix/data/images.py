"""Folders of images as model input: read with Pillow, resized, scaled and normalized."""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from ..model.signature import InputInfo

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass
class ImageOptions:
    """How to turn image files into model input."""
    size: tuple[int, int] | None = None      # (height, width); default: the model's
    layout: str = "NCHW"
    scale: float | None = None              # default: pixel_scale()
    mean: list[float] = field(default_factory=lambda: [0.0])
    std: list[float] = field(default_factory=lambda: [1.0])
    input_range: list[float] | None = None   # low, high (or one pair per channel): overrides

    def pixel_scale(self, model_input: InputInfo) -> float:
        """What pixels 0..255 are multiplied by: ``scale`` when given, else 1 for a model
        that takes integer pixels (its own Cast and scale inside) and 1/255 for floats."""
        if self.scale is not None:
            return self.scale
        return 1.0 if np.issubdtype(model_input.dtype, np.integer) else 1.0 / 255.0

    def value_range(self, model_input: InputInfo) -> tuple:
        """(low, high) per channel, broadcasting to one sample: what pixels 0..255 become
        through the scale, mean and std."""
        channels = _image_geometry(model_input, self)[0]
        mean = np.broadcast_to(np.asarray(self.mean, np.float32), (channels,))
        std = np.broadcast_to(np.asarray(self.std, np.float32), (channels,))
        ends = ((0 - mean) / std, (255 * self.pixel_scale(model_input) - mean) / std)
        shape = (channels, 1, 1) if self.layout.upper() == "NCHW" else (1, 1, channels)
        return (np.minimum(*ends).reshape(shape).astype(np.float32),
                np.maximum(*ends).reshape(shape).astype(np.float32))


def load_image_folder(folder: Path, model_input: InputInfo, options: ImageOptions
                      ) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(x (N, ...) float32 in the model's layout, labels (N,) or None, sha256 of the files)."""
    files, labels = _image_files(folder)
    if not files:
        raise DataError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    channels, size = _image_geometry(model_input, options)
    for name, values in (("--mean", options.mean), ("--std", options.std)):
        if len(values) not in (1, channels):
            raise DataError(f"{name} gives {len(values)} values; the model's images have "
                            f"{channels} channel{'s' if channels > 1 else ''}: give 1 or "
                            f"{channels}")
    images = np.stack([_read_image(path, channels, size) for path in files])   # (N, H, W, C)
    mean = np.asarray(options.mean, np.float32)
    std = np.asarray(options.std, np.float32)
    x = (images * np.float32(options.pixel_scale(model_input)) - mean) / std
    if options.layout.upper() == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return np.ascontiguousarray(x, np.float32), labels, digest.hexdigest()


def _image_files(folder: Path) -> tuple[list[Path], np.ndarray | None]:
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    if not classes:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        return files, None
    numeric = all(p.name.isdigit() for p in classes)
    files, labels = [], []
    for index, class_dir in enumerate(classes):
        for path in sorted(class_dir.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                files.append(path)
                labels.append(int(class_dir.name) if numeric else index)
    return files, np.asarray(labels, np.int64)


def _image_geometry(model_input: InputInfo, options: ImageOptions) -> tuple[int, tuple]:
    sample = model_input.sample_shape
    if len(sample) != 3:
        raise DataError(f"image folders need a model input of (N, C, H, W) or (N, H, W, C), "
                        f"this model takes {sample}; give an .npz instead")
    nchw = options.layout.upper() == "NCHW"
    channels, height, width = sample if nchw else (sample[2], sample[0], sample[1])
    size = options.size or (height, width)
    if None in size or channels not in (1, 3):
        raise DataError("cannot tell the image size or channels from the model; "
                        "pass --size HxW and --layout")
    return channels, size


def _read_image(path: Path, channels: int, size: tuple) -> np.ndarray:
    """One image as (H, W, C) float32. An image whose header claims more pixels than
    Pillow's decompression-bomb limit is refused before it is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image = image.convert("L" if channels == 1 else "RGB")
                image = image.resize((size[1], size[0]), Image.BILINEAR)
                array = np.asarray(image, np.float32)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path}: the image claims {_pixels(exc)} pixels, over the "
                        f"{Image.MAX_IMAGE_PIXELS} an image may have; a decompression bomb or "
                        "a wrong file, refusing to decode it") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from exc
    return array.reshape(size[0], size[1], channels)


def _pixels(exc: Exception) -> str:
    """The pixel count Pillow's message gives, or 'too many'."""
    words = [word for word in str(exc).split() if word.isdigit()]
    return words[0] if words else "too many"
