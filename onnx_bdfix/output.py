"""The one rule for every file onnx-bdfix writes: checked before any work, written to a
temporary file beside it, renamed into place.

A model, its external data, a JSON report, JUnit XML and an HTML page all go through
:func:`check_output_path` (before the work starts) and :func:`write_atomic` (at the end). An
output name that is a symbolic link is replaced by the new file, never written through, so a
link planted at the output name cannot make the tool write anywhere else.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from .errors import OutputPathError
from .host import shorten

TEMP_PREFIX, TEMP_SUFFIX = ".bdfix-", ".tmp"
SYSTEM = ("/dev", "/proc", "/sys")     # never written into: a rename there replaces a device
Writer = Callable[[BinaryIO], None]       # writes the file's bytes to an open handle


def literal(path: str | os.PathLike) -> Path:
    """The absolute name of ``path`` with its folder resolved but not its last component:
    the name a rename replaces (a symbolic link there is replaced, not followed)."""
    path = Path(path)
    return path.parent.resolve() / path.name


def check_output_path(path: str | os.PathLike, inputs: Iterable = (), what: str = "output",
                      inputs_are: str = "an input file") -> None:
    """Refuse, before any work, an output that is one of ``inputs`` (or the file an input
    link points at), a folder, a name too long for its file system, or in a folder that is
    missing or cannot be written."""
    path = Path(path)
    try:
        folder = path.parent.resolve()
    except OSError as exc:
        raise OutputPathError(f"{shorten(path)}: cannot be used as the {what} "
                              f"({exc.strerror or exc})") from exc
    if not folder.is_dir():
        raise OutputPathError(f"{shorten(path)}: folder {shorten(folder)} does not exist")
    if any(folder == Path(system) or Path(system) in folder.parents for system in SYSTEM):
        raise OutputPathError(f"{shorten(path)}: folder {folder} is not writable by "
                              "onnx-bdfix: it holds devices and kernel files; give a file "
                              f"name elsewhere for the {what}"
                              + (" (--json prints to stdout)" if what == "report" else ""))
    check_name_length(folder, path.name, what)
    try:
        target = folder / path.name
        inputs = [given for given in inputs if given]
        if any(target in (literal(given), Path(given).resolve()) for given in inputs):
            raise OutputPathError(f"{shorten(path)}: the {what} must not overwrite "
                                  f"{inputs_are}")
        if path.is_dir() and not path.is_symlink():
            raise OutputPathError(f"{shorten(path)}: is a folder; give a file name for the "
                                  f"{what}")
        _check_regular(path, what)
    except OSError as exc:
        raise OutputPathError(f"{shorten(path)}: cannot be used as the {what} "
                              f"({exc.strerror or exc})") from exc
    check_writable(folder, path)


def _check_regular(path: Path, what: str) -> None:
    """An existing output (or what a link there points at) must be a regular file: the rename
    would otherwise replace a device, a pipe or a socket (-o /dev/null as root), or a link to
    one (--report /dev/stdout)."""
    for candidate in (path, path.resolve()):
        if candidate.exists() and not candidate.is_file():
            raise OutputPathError(f"{shorten(path)}: is not a regular file (a device, pipe or "
                                  f"socket, or a link to one); give a file name for the "
                                  f"{what}")


def check_distinct(paths: dict[str, str | os.PathLike | None]) -> None:
    """Two outputs of one command must not name the same file (``{option: path}``)."""
    seen: dict[Path, str] = {}
    for option, path in paths.items():
        if not path:
            continue
        name = literal(path)
        if name in seen:
            raise OutputPathError(f"{seen[name]} and {option} must name different files "
                                  f"({path})")
        seen[name] = option


def check_name_length(folder: Path, name: str, what: str = "output") -> None:
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    if len(name.encode("utf-8", "surrogateescape")) > limit:
        raise OutputPathError(f"{shorten(Path(name))}: the {what}'s file name is longer than "
                              f"the {limit} bytes its file system allows; give a shorter name")


def check_writable(folder: Path, out_path: Path) -> None:
    """Create and remove a temporary file in ``folder``: permissions alone do not tell (a
    read-only file system, or root on a folder that refuses writes)."""
    try:
        handle, name = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX)
        os.close(handle)
        os.unlink(name)
    except OSError as exc:
        raise OutputPathError(f"{shorten(out_path)}: folder {folder} is not writable "
                              f"({exc.strerror or exc})") from exc


def write_atomic(path: str | os.PathLike, content: bytes | str | Writer,
                 check: Callable[[Path], None] | None = None) -> Path:
    """Write ``content`` (bytes, text, or a function given the open handle) to a temporary
    file in ``path``'s folder; ``check`` may inspect that file and raise, and then nothing is
    placed. Renamed into place last. Returns the path written."""
    path = Path(path)
    temp = None
    try:
        handle, name = tempfile.mkstemp(dir=literal(path).parent, prefix=TEMP_PREFIX,
                                        suffix=TEMP_SUFFIX)
        temp = Path(name)
        with os.fdopen(handle, "wb") as out:
            if callable(content):
                content(out)
            else:
                out.write(content.encode() if isinstance(content, str) else content)
        if check is not None:
            check(temp)
        os.replace(temp, literal(path))
        temp = None
    except OSError as exc:
        raise OutputPathError(f"{shorten(path)}: cannot write ({exc.strerror or exc})") from exc
    finally:
        if temp is not None:
            temp.unlink(missing_ok=True)
    return path
