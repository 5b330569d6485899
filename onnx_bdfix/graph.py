"""Load and save ONNX models safely, and expose intermediate tensors as graph outputs."""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import onnx
from google.protobuf.message import DecodeError, EncodeError
from onnx import external_data_helper as ext

from .errors import ModelError, OutputPathError

log = logging.getLogger(__name__)

MIN_OPSET = 7
# Ops whose outputs carry a tensor's shape or size, never its values.
SHAPE_ONLY_OPS = {"Shape", "Size"}


@dataclass
class LoadedModel:
    """A model read from disk with its external data in memory."""
    proto: onnx.ModelProto
    path: Path
    sha256: str
    external_tensors: list[str] = field(default_factory=list)  # names stored outside the file

    @property
    def graph(self) -> onnx.GraphProto:
        return self.proto.graph


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_model(path: str | os.PathLike) -> LoadedModel:
    """Read an ONNX file, with external data that must lie inside the model's folder."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if not path.is_file():
        raise ModelError(f"{path}: not a file; give the path of an .onnx model file")
    if path.stat().st_size == 0:
        raise ModelError(f"{path}: the file is empty; it is not an ONNX model")
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
    return LoadedModel(proto, path, file_sha256(path), external)


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


def save_model(proto: onnx.ModelProto, out_path: str | os.PathLike,
               external_tensors: list[str] = (), check=None) -> list[Path]:
    """Write ``proto`` atomically; tensors named in ``external_tensors`` go to OUT.data.

    Everything is first written to temporary files in the output folder; ``check`` (given the
    temporary model file) may raise before the model is renamed into place, so a failure
    leaves no partial output. Returns the paths written.
    """
    out_path = Path(out_path)
    folder = out_path.resolve().parent
    check_output_path(out_path, [])
    written: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        light = proto
        if external_tensors:
            data_path = out_path.with_name(out_path.name + ".data")
            names = set(external_tensors)
            handle, temp_name = tempfile.mkstemp(dir=folder, prefix=".bdfix-", suffix=".tmp")
            written.append((Path(temp_name), data_path))
            with os.fdopen(handle, "wb") as data:     # no copy of the weights in memory
                light = skeleton(proto, data, data_path.name, lambda t: t.name in names)
            os.replace(temp_name, data_path)          # the model's check must find it
            placed.append(data_path)
        temp_model = _write_temp(folder, light.SerializeToString())
        written.append((temp_model, out_path))
        if check is not None:
            check(temp_model)
        os.replace(temp_model, out_path)
        placed.append(out_path)
    except BaseException as exc:
        for path in placed:
            path.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputPathError(f"{out_path}: cannot write ({exc.strerror or exc})") from exc
        raise
    finally:
        for temp, _ in written:
            if temp.exists():
                temp.unlink()
    return placed


def check_output_path(path: str | os.PathLike, inputs: list, what: str = "output",
                      inputs_are: str = "an input file") -> None:
    """Refuse, before any work, an output path that is one of ``inputs``, a folder, in a
    missing folder, or in one that cannot be written."""
    path = Path(path)
    if any(Path(given).resolve() == path.resolve() for given in inputs if given):
        raise OutputPathError(f"{path}: the {what} must not overwrite {inputs_are}")
    if path.is_dir():
        raise OutputPathError(f"{path}: is a folder; give a file name for the {what}")
    folder = path.resolve().parent
    if not folder.is_dir():
        raise OutputPathError(f"{path}: folder {folder} does not exist")
    check_writable(folder, path)


def check_writable(folder: Path, out_path: Path) -> None:
    """Create and remove a temporary file in ``folder``: permissions alone do not tell (a
    read-only file system, or root on a folder that refuses writes)."""
    try:
        handle, name = tempfile.mkstemp(dir=folder, prefix=".bdfix-", suffix=".tmp")
        os.close(handle)
        os.unlink(name)
    except OSError as exc:
        raise OutputPathError(f"{out_path}: folder {folder} is not writable "
                              f"({exc.strerror or exc})") from exc


def _copy_proto(proto: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    return copy


def _write_temp(folder: Path, payload: bytes) -> Path:
    handle, name = tempfile.mkstemp(dir=folder, prefix=".bdfix-", suffix=".tmp")
    with os.fdopen(handle, "wb") as out:
        out.write(payload)
    return Path(name)


# --------------------------------------------------------------------------- queries
def initializers(proto: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in proto.graph.initializer}


def graph_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Real inputs: old exporters also list initializers as graph inputs."""
    inits = initializers(proto)
    return [value for value in proto.graph.input if value.name not in inits]


def consumers(proto: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in proto.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def producers(proto: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {name: node for node in proto.graph.node for name in node.output}


def has_bypass(proto: onnx.ModelProto, node_indices: set[int], output_name: str) -> bool:
    """True when data reaches ``output_name`` from the inputs avoiding every node listed.

    Paths through Shape/Size carry no values and do not count.
    """
    users = consumers(proto)
    blocked = {id(proto.graph.node[index]) for index in node_indices}
    reached = {value.name for value in graph_inputs(proto)}
    frontier = list(reached)
    while frontier:
        for user in users.get(frontier.pop(), []):
            if id(user) in blocked or user.op_type in SHAPE_ONLY_OPS:
                continue
            for name in user.output:
                if name and name not in reached:
                    reached.add(name)
                    frontier.append(name)
    return output_name in reached


def intermediate_tensors(proto: onnx.ModelProto) -> list[str]:
    """Every float tensor a node produces, in graph order (for inspection and layer choice)."""
    outputs = {value.name for value in proto.graph.output}
    names = []
    for node in proto.graph.node:
        if node.op_type in SHAPE_ONLY_OPS or node.op_type == "Constant":
            continue
        names.extend(name for name in node.output if name and name not in outputs)
    return names


def with_inferred_shapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    try:
        if not is_large(proto):
            return onnx.shape_inference.infer_shapes(proto)
        inferred = onnx.shape_inference.infer_shapes(skeleton(proto))   # shapes need no data
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        log.warning("shape inference failed (%s); exposing tensors as float32", exc)
        return proto
    result = _copy_proto(proto)
    del result.graph.value_info[:]
    result.graph.value_info.extend(inferred.graph.value_info)
    return result


# ------------------------------------------------------------- models over 2 GiB
LARGE = onnx.checker.MAXIMUM_PROTOBUF      # protobuf cannot serialize a model this large
SKELETON_BYTES = 1 << 20                   # tensors larger than this leave the skeleton


def is_large(proto: onnx.ModelProto) -> bool:
    try:
        return proto.ByteSize() >= LARGE
    except EncodeError:          # protobuf cannot even size a message over 2 GiB
        return True


def skeleton(proto: onnx.ModelProto, weights: BinaryIO | None = None,
             location: str = "weights.bin", moved=None) -> onnx.ModelProto:
    """A copy of ``proto`` whose tensors picked by ``moved`` (initializers and Constant
    values; default: those over ``SKELETON_BYTES``) hold no data, only a reference to
    ``location``; with ``weights``, their bytes are written there. Every other field is
    copied as it is, and at most one large tensor at a time is copied in memory: small
    enough to serialize whatever the model's size."""
    moved = moved or (lambda tensor: tensor.ByteSize() > SKELETON_BYTES)
    result = onnx.ModelProto()
    _copy_fields(proto, result, skip={"graph"})
    _copy_fields(proto.graph, result.graph, skip={"initializer"})
    for tensor in proto.graph.initializer:
        if moved(tensor):
            reference = result.graph.initializer.add()
            _copy_fields(tensor, reference, skip=TENSOR_DATA_FIELDS)
            _externalize(reference, tensor_bytes(tensor), weights, location)
        else:
            result.graph.initializer.append(tensor)
    for node in result.graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t") and moved(attribute.t):
                payload = tensor_bytes(attribute.t)
                for name in TENSOR_DATA_FIELDS:
                    attribute.t.ClearField(name)
                _externalize(attribute.t, payload, weights, location)
    return result


def _externalize(tensor: onnx.TensorProto, payload: bytes, weights: BinaryIO | None,
                 location: str) -> None:
    """Point a data-free ``tensor`` at ``payload``, appended to ``weights`` when given."""
    offset = weights.tell() if weights is not None else 0
    if weights is not None:
        weights.write(payload)
    for key, value in (("location", location), ("offset", str(offset)),
                       ("length", str(len(payload)))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    tensor.data_location = onnx.TensorProto.EXTERNAL


TENSOR_DATA_FIELDS = {"raw_data", "float_data", "int32_data", "string_data", "int64_data",
                      "double_data", "uint64_data", "external_data", "data_location"}


def _copy_fields(source, target, skip=frozenset()) -> None:
    """Copy every set field of one protobuf message into another, but those in ``skip``."""
    for descriptor, value in source.ListFields():
        if descriptor.name in skip:
            continue
        repeated = getattr(descriptor, "is_repeated", None)
        if repeated is None:                       # protobuf before 6
            repeated = descriptor.label == descriptor.LABEL_REPEATED
        if repeated:
            getattr(target, descriptor.name).extend(value)
        elif descriptor.type == descriptor.TYPE_MESSAGE:
            getattr(target, descriptor.name).CopyFrom(value)
        else:
            setattr(target, descriptor.name, value)


def tensor_bytes(tensor: onnx.TensorProto) -> bytes:
    """The tensor's values as little-endian raw bytes, whichever field holds them."""
    if tensor.HasField("raw_data"):
        return tensor.raw_data
    return onnx.numpy_helper.to_array(tensor).tobytes()


def write_for_runtime(proto: onnx.ModelProto, folder: Path) -> Path:
    """``proto`` as a model file with its large weights beside it, for ONNX Runtime."""
    with open(folder / "weights.bin", "wb") as weights:
        light = skeleton(proto, weights)
    path = folder / "model.onnx"
    path.write_bytes(light.SerializeToString())
    return path


def expose(proto: onnx.ModelProto, tensor_names: list[str]) -> onnx.ModelProto:
    """A copy of ``proto`` whose outputs are its own, then ``tensor_names`` (graphsurgeon)."""
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(with_inferred_shapes(proto))
    tensors = graph.tensors()
    missing = [name for name in tensor_names if name not in tensors]
    if missing:
        raise ModelError(f"tensors {missing[:5]} are not in the graph; "
                         "run `onnx-bdfix inspect MODEL` to list the layers")
    present = {tensor.name for tensor in graph.outputs}
    for name in tensor_names:
        if name in present:
            continue
        tensor = tensors[name]
        if tensor.dtype is None:
            tensor.dtype = np.float32
        graph.outputs.append(tensor)
        present.add(name)
    exposed = gs.export_onnx(graph, do_type_check=False)
    exposed.ir_version = proto.ir_version
    return exposed


# --------------------------------------------------------------- inputs and outputs
FLOAT_TYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16,
               onnx.TensorProto.DOUBLE: np.float64}


@dataclass
class InputInfo:
    """The model's one data input: shape has None where a dimension is dynamic."""
    name: str
    shape: list[int | None]
    dtype: np.dtype

    @property
    def sample_shape(self) -> list[int | None]:
        return self.shape[1:]


def model_input(proto: onnx.ModelProto) -> InputInfo:
    inputs = graph_inputs(proto)
    if len(inputs) != 1:
        names = ", ".join(value.name for value in inputs) or "none"
        raise ModelError(f"the model has {len(inputs)} data inputs ({names}); onnx-bdfix "
                         "repairs classifiers with exactly one input tensor")
    value = inputs[0]
    tensor_type = value.type.tensor_type
    if tensor_type.elem_type not in FLOAT_TYPES:
        raise ModelError(f"input {value.name!r} is not a float tensor; onnx-bdfix needs a "
                         "float32 or float16 input")
    if not tensor_type.HasField("shape") or len(tensor_type.shape.dim) < 2:
        raise ModelError(f"input {value.name!r} has no (batch, ...) shape; re-export the model "
                         "with a fixed sample shape")
    shape = [dim.dim_value if dim.dim_value > 0 else None for dim in tensor_type.shape.dim]
    return InputInfo(value.name, shape, np.dtype(FLOAT_TYPES[tensor_type.elem_type]))


def score_output(proto: onnx.ModelProto, name: str | None = None) -> str:
    """The tensor holding class scores: ``name``, or the first float (N, classes) output.

    A scikit-learn export has an int64 label output first; a ZipMap output's float input is
    used in its place.
    """
    made_by = producers(proto)
    if name:
        if name not in made_by and name not in {o.name for o in proto.graph.output}:
            outputs = ", ".join(o.name for o in proto.graph.output)
            raise ModelError(f"--output {name!r} is not a tensor of this model "
                             f"(its outputs: {outputs})")
        return name
    for value in proto.graph.output:
        node = made_by.get(value.name)
        if node is not None and node.op_type == "ZipMap":
            return node.input[0]
        tensor_type = value.type.tensor_type
        dims = tensor_type.shape.dim
        if tensor_type.elem_type in FLOAT_TYPES and len(dims) == 2 and dims[1].dim_value != 1:
            return value.name
    raise ModelError("no output of the model is a float (N, classes) tensor; "
                     "name the class-score output with --output")
