"""What the tool reads off the machine and its files: available memory, file digests, and
input paths that exist and can be read."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import InputError


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def available_memory() -> int | None:
    """Bytes of memory available now (Linux /proc/meminfo), or None where unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def existing(path: str | os.PathLike, what: str, error: type[InputError] = InputError,
             folder_ok: bool = False) -> Path:
    """``path`` as a Path when it names a readable file (or a folder, with ``folder_ok``);
    else ``error`` with one line. A name the file system refuses (too long, bad bytes) is
    an error of the input, not of the tool."""
    path = Path(path)
    try:
        if folder_ok and path.is_dir():
            return path
        if not path.exists():
            raise error(f"{what} {shorten(path)}: no such file")
        if not path.is_file():
            raise error(f"{what} {shorten(path)}: not a file")
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise error(f"{what} {shorten(path)}: cannot be read ({exc.strerror or exc})") from exc
    return path


def shorten(path: str | os.PathLike) -> str:
    """A path short enough for a one-line message."""
    text = str(path)
    return text if len(text) <= 120 else text[:60] + "..." + text[-40:]
