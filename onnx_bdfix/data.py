"""Clean and evaluation data: .npz arrays or folders of images, in the model's input layout.

An .npz holds ``x`` (N, ...) already in the model's layout and scale, optional integer
labels ``y`` (N,), and, for compact integer images, optional ``scale`` and ``offset`` with
x_model = x * scale + offset. A folder holds images, flat or one subfolder per class.
"""
from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError
from .graph import InputInfo

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass
class Dataset:
    x: np.ndarray                 # (N, *sample_shape) float32, model layout and scale
    y: np.ndarray | None          # (N,) int64 labels, or None
    sha256: str
    source: str

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class ImageOptions:
    """How to turn image files into model input."""
    size: tuple[int, int] | None = None      # (height, width); default: the model's
    layout: str = "NCHW"
    scale: float = 1.0 / 255.0
    mean: list[float] = field(default_factory=lambda: [0.0])
    std: list[float] = field(default_factory=lambda: [1.0])


def load_data(path: str | Path, model_input: InputInfo, images: ImageOptions | None = None,
              what: str = "data") -> Dataset:
    path = Path(path)
    if path.is_dir():
        dataset = load_image_folder(path, model_input, images or ImageOptions())
    elif path.is_file():
        dataset = load_npz(path, what)
    else:
        raise DataError(f"{what} {path}: no such file or folder")
    check_against_input(dataset, model_input, what)
    return dataset


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_npz(path: Path, what: str = "data") -> Dataset:
    arrays = read_npz(path, what)
    if "x" not in arrays:
        raise DataError(f"{what} {path}: no array named 'x' (found: {', '.join(arrays)})")
    x = as_model_scale(arrays, path, what)
    labels = arrays.get("y")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(x),) or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{what} {path}: 'y' must be {len(x)} integer labels, "
                            f"got {labels.dtype} {labels.shape}")
        labels = labels.astype(np.int64)
    return Dataset(x, labels, _digest(path), str(path))


def read_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{what} {path}: not a readable .npz file ({exc})") from exc


def as_model_scale(arrays: dict, path: Path, what: str) -> np.ndarray:
    x = arrays["x"]
    if x.ndim < 2 or len(x) == 0:
        raise DataError(f"{what} {path}: 'x' must be (N, ...) with N >= 1, got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DataError(f"{what} {path}: 'x' has dtype {x.dtype}; use floats or integers")
    scale = float(arrays.get("scale", 1.0))
    offset = float(arrays.get("offset", 0.0))
    return (x.astype(np.float32) * np.float32(scale) + np.float32(offset)).astype(np.float32)


def check_against_input(dataset: Dataset, model_input: InputInfo, what: str) -> None:
    expected = model_input.sample_shape
    got = list(dataset.x.shape[1:])
    fits = len(got) == len(expected) and all(e is None or e == g for e, g in zip(expected, got))
    if not fits:
        shown = "x".join("?" if e is None else str(e) for e in expected)
        hint = _layout_hint(expected, got)
        raise DataError(f"{what} {dataset.source}: samples are {'x'.join(map(str, got))}, "
                        f"the model's input {model_input.name!r} takes {shown}{hint}")
    if not np.isfinite(dataset.x).all():
        raise DataError(f"{what} {dataset.source}: 'x' holds NaN or Inf values")


def _layout_hint(expected: list, got: list) -> str:
    if len(expected) == len(got) == 3 and sorted(map(str, expected)) == sorted(map(str, got)):
        return " (channels in the wrong place? convert between NCHW and NHWC)"
    return ""


# ---------------------------------------------------------------------- image folders
def load_image_folder(folder: Path, model_input: InputInfo, options: ImageOptions) -> Dataset:
    files, labels = _image_files(folder)
    if not files:
        raise DataError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    channels, size = _image_geometry(model_input, options)
    images = np.stack([_read_image(path, channels, size) for path in files])   # (N, H, W, C)
    mean = np.asarray(options.mean, np.float32)
    std = np.asarray(options.std, np.float32)
    x = (images * np.float32(options.scale) - mean) / std
    if options.layout.upper() == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return Dataset(np.ascontiguousarray(x, np.float32), labels, digest.hexdigest(), str(folder))


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
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            image = image.resize((size[1], size[0]), Image.BILINEAR)
            array = np.asarray(image, np.float32)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from exc
    return array.reshape(size[0], size[1], channels)
