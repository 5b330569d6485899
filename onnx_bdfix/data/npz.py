"""Reading .npz files as hostile input: no pickles, sizes checked from the headers before
anything is unpacked, and ``x`` memory-mapped when it is stored uncompressed."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..host import available_memory


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

