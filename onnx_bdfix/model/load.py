"""Read an ONNX model as hostile input: every check that can refuse it runs before any work.

Refused with one line (:class:`~onnx_bdfix.errors.ModelError`): what is not a readable,
valid ONNX file; opsets and IR versions this onnx cannot read; operator domains ONNX Runtime
cannot run; weights that would not fit in memory; external data outside the model's folder,
through a symbolic link, or missing; names that are not UTF-8. Weights held in Constant
nodes or behind Identity nodes are then read as initializers (:mod:`.constants`).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper as ext

from ..errors import ModelError
from ..host import available_memory, file_sha256, shorten
from .constants import lift_constant_weights
from .index import GraphIndex
from .large import is_large

log = logging.getLogger(__name__)

MIN_OPSET = 7


@dataclass
class LoadedModel:
    """A model read from disk with its external data in memory, and its graph index."""
    proto: onnx.ModelProto
    path: Path
    sha256: str
    external_tensors: list[str] = field(default_factory=list)  # names stored outside the file

    @property
    def graph(self) -> onnx.GraphProto:
        return self.proto.graph

    @cached_property
    def index(self) -> GraphIndex:
        return GraphIndex(self.proto)

    @property
    def external_files(self) -> list[Path]:
        """The files the model's external data is read from (inputs: never written)."""
        folder = self.path.resolve().parent
        locations = {ext.ExternalDataInfo(t).location for t in ext._get_all_tensors(self.proto)
                     if ext.uses_external_data(t)}
        return [folder / location for location in sorted(locations)]


def as_loaded(model) -> LoadedModel:
    """``model`` as loaded: a :class:`LoadedModel` as it is, a path read once."""
    return model if isinstance(model, LoadedModel) else load_model(model)


def load_model(path: str | os.PathLike) -> LoadedModel:
    """Read an ONNX file, with external data that must lie inside the model's folder."""
    path = Path(path)
    _check_file(path)
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise ModelError(f"{path}: not a readable ONNX model ({_first_line(exc)})") from exc
    if not proto.graph.node:
        raise ModelError(f"{path}: not an ONNX model, or a model with an empty graph")
    _check_versions(proto, path)
    _check_domains(proto, path)
    external = [t.name for t in ext._get_all_tensors(proto) if ext.uses_external_data(t)]
    _check_memory(path, proto if external else None)
    if external:
        _load_external_data(proto, path)
    _check_valid(proto, path)
    lift_constant_weights(proto)
    return LoadedModel(proto, path, file_sha256(path), external)


def _check_file(path: Path) -> None:
    try:
        if not path.exists():
            raise ModelError(f"{shorten(path)}: no such file")
        if not path.is_file():
            raise ModelError(f"{shorten(path)}: not a file; give the path of an .onnx model "
                             "file")
        if path.stat().st_size == 0:
            raise ModelError(f"{shorten(path)}: the file is empty; it is not an ONNX model")
    except OSError as exc:
        raise ModelError(f"{shorten(path)}: cannot be read ({exc.strerror or exc})") from exc


def _check_valid(proto: onnx.ModelProto, path: Path) -> None:
    """onnx.checker on the model as read: what it refuses, nothing downstream may see."""
    if not all(isinstance(text, str) for text in _names(proto)):
        raise ModelError(f"{path}: names in the graph are not valid UTF-8 text; the file is "
                         "corrupted or was not written by an ONNX exporter")
    subject = str(path) if is_large(proto) else proto
    try:
        onnx.checker.check_model(subject)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise ModelError(f"{path}: not a valid ONNX model ({_first_line(exc)}); "
                         "re-export it, or check it with onnx.checker") from exc



# Operator domains ONNX Runtime runs without a custom-operator library.
RUNTIME_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc",
                   "ai.onnx.preview.training"}
# Bytes of memory a repair holds per byte of weights: the model, its exposed copy, the
# ONNX Runtime sessions and the edited copy. Measured: 10.0 GB peak for 2.25 GB of weights
# (benchmarks/large_model.py, docs/large-model.md), 4.5 per byte.
MEMORY_PER_WEIGHT_BYTE = 5


def _check_memory(path: Path, proto: onnx.ModelProto | None) -> None:
    weight_bytes = path.stat().st_size
    if proto is not None:
        weight_bytes += sum(int(ext.ExternalDataInfo(t).length or 0)
                            for t in ext._get_all_tensors(proto) if ext.uses_external_data(t))
    needed, available = MEMORY_PER_WEIGHT_BYTE * weight_bytes, available_memory()
    if available is not None and needed > available:
        raise ModelError(f"{path}: {weight_bytes / 2**30:.2f} GiB of weights; a repair needs "
                         f"about {needed / 2**30:.1f} GiB of memory and "
                         f"{available / 2**30:.1f} GiB is available; run it on a larger machine")


def _check_domains(proto: onnx.ModelProto, path: Path) -> None:
    local = {function.domain for function in proto.functions}
    for node in proto.graph.node:
        if node.domain not in RUNTIME_DOMAINS and node.domain not in local:
            raise ModelError(f"{path}: operator {node.op_type!r} of domain {node.domain!r} "
                             "is not one ONNX Runtime runs without a custom-operator library; "
                             "re-export the model with standard ONNX operators")


def _names(proto: onnx.ModelProto):
    """Every name and type string of the graph (protobuf gives bytes for invalid UTF-8)."""
    graph = proto.graph
    for node in graph.node:
        yield from (node.name, node.op_type, node.domain, *node.input, *node.output)
        yield from (attribute.name for attribute in node.attribute)
    for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        yield value.name
    for prop in proto.metadata_props:
        yield from (prop.key, prop.value)
    yield from (opset.domain for opset in proto.opset_import)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _check_versions(proto: onnx.ModelProto, path: Path) -> None:
    default_opsets = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    if default_opsets and default_opsets[0] < MIN_OPSET:
        raise ModelError(f"{path}: opset {default_opsets[0]} is older than {MIN_OPSET}; "
                         "convert it with onnx.version_converter first")
    newest = onnx.defs.onnx_opset_version()
    if default_opsets and default_opsets[0] > newest:
        raise ModelError(f"{path}: opset {default_opsets[0]} is newer than this onnx package "
                         f"supports ({newest}); upgrade onnx and onnxruntime, or export the "
                         "model at an older opset")
    if proto.ir_version < 3:
        raise ModelError(f"{path}: IR version {proto.ir_version} is older than 3; "
                         "re-export the model")
    if proto.ir_version > onnx.IR_VERSION:
        raise ModelError(f"{path}: IR version {proto.ir_version} is newer than this onnx "
                         f"package supports ({onnx.IR_VERSION}); upgrade onnx")


def _load_external_data(proto: onnx.ModelProto, path: Path) -> None:
    folder = path.resolve().parent
    for tensor in ext._get_all_tensors(proto):
        if not ext.uses_external_data(tensor):
            continue
        location = ext.ExternalDataInfo(tensor).location
        target = (folder / location)
        if os.path.isabs(location) or folder not in target.resolve().parents:
            raise ModelError(f"{path}: tensor {tensor.name!r} points its external data at "
                             f"{location!r}, outside the model's folder; refusing to read it")
        if target.is_symlink():
            raise ModelError(f"{path}: external data {location!r} of tensor {tensor.name!r} "
                             "is a symbolic link; copy the real file next to the model")
        if not target.is_file():
            raise ModelError(f"{path}: external data {location!r} of tensor {tensor.name!r} "
                             "is missing; put it in the model's folder")
    try:
        ext.load_external_data_for_model(proto, str(folder))
    except (ValueError, OSError, onnx.checker.ValidationError) as exc:
        raise ModelError(f"{path}: cannot read external data ({_first_line(exc)})") from exc


