"""Models over 2 GiB: protobuf cannot serialize them, so their large tensors move to a file.

A *skeleton* is a copy of the model whose large tensors hold only a reference to a weights
file; ONNX Runtime and shape inference work on it, and saving writes the weights beside it.
"""
from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import onnx
from google.protobuf.message import EncodeError

LARGE = onnx.checker.MAXIMUM_PROTOBUF      # protobuf cannot serialize a model this large
SKELETON_BYTES = 1 << 20                   # tensors larger than this leave the skeleton
TENSOR_DATA_FIELDS = {"raw_data", "float_data", "int32_data", "string_data", "int64_data",
                      "double_data", "uint64_data", "external_data", "data_location"}


def is_large(proto: onnx.ModelProto) -> bool:
    try:
        return proto.ByteSize() >= LARGE
    except EncodeError:          # protobuf cannot even size a message over 2 GiB
        return True


def copy_proto(proto: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    return copy


def skeleton(proto: onnx.ModelProto, weights: BinaryIO | None = None,
             location: str = "weights.bin", moved=None) -> onnx.ModelProto:
    """A copy of ``proto`` whose tensors picked by ``moved`` (initializers and Constant
    values; default: those over ``SKELETON_BYTES``) hold no data, only a reference to
    ``location``; with ``weights``, their bytes are written there. Every other field is
    copied as it is, and at most one large tensor at a time is copied in memory: small
    enough to serialize whatever the model's size."""
    moved = moved or (lambda tensor: tensor.ByteSize() > SKELETON_BYTES)
    result = onnx.ModelProto()
    copy_fields(proto, result, skip={"graph"})
    copy_fields(proto.graph, result.graph, skip={"initializer"})
    for tensor in proto.graph.initializer:
        if moved(tensor):
            reference = result.graph.initializer.add()
            copy_fields(tensor, reference, skip=TENSOR_DATA_FIELDS)
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


def copy_fields(source, target, skip=frozenset()) -> None:
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
    """``proto`` as a model file with its large weights beside it, for ONNX Runtime (a
    private temporary folder, not an output of the tool)."""
    with open(folder / "weights.bin", "wb") as weights:
        light = skeleton(proto, weights)
    path = folder / "model.onnx"
    path.write_bytes(light.SerializeToString())
    return path
