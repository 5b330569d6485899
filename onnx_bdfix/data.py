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
    """Samples as stored (integer or float, possibly memory-mapped), scaled on the way out."""
    raw: np.ndarray               # (N, *sample_shape) as stored
    y: np.ndarray | None          # (N,) int64 labels, or None
    sha256: str
    source: str
    scale: float = 1.0
    offset: float = 0.0

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
                       self.offset)

    def rows(self, order: np.ndarray | None = None, trigger=None) -> "Rows":
        return Rows(self.raw, self.scale, self.offset, order, trigger)


class Rows:
    """A lazy view of samples in a given order: ``rows[i:j]`` or ``rows[indices]`` gathers,
    scales to float32 and, with a trigger, triggers just those samples. Memory follows the
    batch, not the data set."""

    def __init__(self, raw: np.ndarray, scale: float = 1.0, offset: float = 0.0,
                 order: np.ndarray | None = None, trigger=None):
        self.raw, self.scale, self.offset = raw, np.float32(scale), np.float32(offset)
        self.order, self.trigger = order, trigger

    def __len__(self) -> int:
        return len(self.order) if self.order is not None else len(self.raw)

    @property
    def shape(self) -> tuple:
        return (len(self), *self.raw.shape[1:])

    def __getitem__(self, rows) -> np.ndarray:
        index = self.order[rows] if self.order is not None else np.arange(len(self.raw))[rows]
        batch = self.raw[index].astype(np.float32)
        if self.scale != 1 or self.offset != 0:
            batch = batch * self.scale + self.offset
        return self.trigger.apply(batch, index) if self.trigger is not None else batch


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
    from .graph import file_sha256
    return file_sha256(path)


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
    return Dataset(raw, labels, _digest(path), str(path), scale, offset)


def scale_and_offset(raw: np.ndarray, arrays: dict, path: Path, what: str) -> tuple:
    """``scale`` and ``offset`` as finite numbers; integer samples must state their scale,
    since 0..255 pixels fed to a model trained on 0..1 would pass every shape check."""
    if np.issubdtype(raw.dtype, np.integer) and "scale" not in arrays:
        raise DataError(f"{what} {path}: 'x' holds integers ({raw.dtype}) and the file has no "
                        "'scale'; add scale (e.g. 1/255 for pixels a model takes in [0, 1], "
                        "or 1 for a model that takes raw values) and optionally offset")
    values = []
    for key, default in (("scale", 1.0), ("offset", 0.0)):
        value = np.asarray(arrays.get(key, default))
        if value.size != 1 or not np.issubdtype(value.dtype, np.number) \
                or not np.isfinite(value).all():
            raise DataError(f"{what} {path}: '{key}' must be one finite number, got {value!r}")
        values.append(float(value.reshape(())))
    if values[0] == 0:
        raise DataError(f"{what} {path}: 'scale' is 0; every sample would be the same")
    return tuple(values)


def read_npz_x(path: Path, what: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``x`` (memory-mapped when the archive stores it uncompressed) and the small arrays."""
    check_unpacked_size(path, what, mapped="x.npy")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = archive.files
            small = {key: archive[key] for key in names if key != "x"}
            if "x" not in names:
                raise DataError(f"{what} {path}: no array named 'x' "
                                f"(found: {', '.join(names) or 'nothing'})")
            raw = _mapped_member(path, "x.npy")
            if raw is None:
                raw = archive["x"]
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{what} {path}: not a readable .npz file ({exc})") from exc
    _check_raw(raw, path, what)
    return raw, small


def read_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    check_unpacked_size(path, what)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{what} {path}: not a readable .npz file ({exc})") from exc


def check_unpacked_size(path: Path, what: str, mapped: str = "") -> None:
    """Refuse an archive whose arrays would not fit in memory once unpacked (a compressed
    file can claim any size), before reading any of them. ``mapped``: a member read through
    a memory map when stored uncompressed, which never needs the memory."""
    from .graph import available_memory
    try:
        needed = sum(_member_bytes(path, info) for info in _members(path)
                     if not (info.filename == mapped and info.compress_type == zipfile.ZIP_STORED))
    except (ValueError, OSError, zipfile.BadZipFile, EOFError):
        return                               # unreadable: np.load says so in a moment
    available = available_memory()
    if available is not None and needed > available:
        raise DataError(f"{what} {path}: its arrays unpack to {needed / 2**30:.1f} GiB and "
                        f"{available / 2**30:.1f} GiB of memory is available; store x "
                        "uncompressed (np.savez) to read it a batch at a time, or use fewer "
                        "samples")


def _members(path: Path) -> list[zipfile.ZipInfo]:
    with zipfile.ZipFile(path) as archive:
        return archive.infolist()


def _member_bytes(path: Path, info: zipfile.ZipInfo) -> int:
    """The size of one .npy member once unpacked, read off its header alone."""
    with zipfile.ZipFile(path) as archive, archive.open(info) as member:
        shape, _, dtype = _npy_header(member)
    return int(np.prod(shape, dtype=np.float64)) * dtype.itemsize


def _npy_header(handle) -> tuple[tuple, bool, np.dtype]:
    """(shape, Fortran order, dtype) of the .npy stream at ``handle``, data not read."""
    version = np.lib.format.read_magic(handle)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) \
        else np.lib.format.read_array_header_2_0
    return read_header(handle)


def _mapped_member(path: Path, member: str) -> np.ndarray | None:
    """A read-only memory map of an uncompressed .npy member of a zip file, or None."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
        if info.compress_type != zipfile.ZIP_STORED:
            return None
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        local = handle.read(30)
        start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") \
            + int.from_bytes(local[28:30], "little")
        handle.seek(start)
        shape, fortran, dtype = _npy_header(handle)
        if dtype.hasobject:
            return None
        data_start = handle.tell()
    if int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=data_start, shape=shape,
                     order="F" if fortran else "C")


def _check_raw(raw: np.ndarray, path: Path, what: str) -> None:
    if raw.ndim < 2 or len(raw) == 0:
        raise DataError(f"{what} {path}: 'x' must be (N, ...) with N >= 1, got shape {raw.shape}")
    if not (np.issubdtype(raw.dtype, np.floating) or np.issubdtype(raw.dtype, np.integer)):
        raise DataError(f"{what} {path}: 'x' has dtype {raw.dtype}; use floats or integers")


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
