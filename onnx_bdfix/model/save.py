"""Write a model through the one output rule (:mod:`onnx_bdfix.output`): checked first,
written to temporary files beside the output, renamed into place, the model last.

Tensors that were external in the input stay external, in OUT.data next to OUT; they are
streamed there from a skeleton, so the weights are never copied in memory.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import onnx

from ..output import check_output_path, write_atomic
from .large import skeleton


def data_path_of(out_path: str | os.PathLike) -> Path:
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".data")


def check_model_output(out_path: str | os.PathLike, inputs: Iterable = (),
                       external: bool = False, model: str | os.PathLike | None = None) -> None:
    """The model's output checks, and its external data file's when it will have one:
    never the input ``model``, nor any other of ``inputs``."""
    inputs = list(inputs)
    outputs = [("output", out_path)]
    if external:
        outputs.append(("output's external data", data_path_of(out_path)))
    for what, path in outputs:
        if model is not None:
            check_output_path(path, [model], what, "the input model")
        check_output_path(path, inputs, what, "an input file")


def save_model(proto: onnx.ModelProto, out_path: str | os.PathLike,
               external_tensors: Iterable[str] = (), check: Callable[[Path], None] = None,
               inputs: Iterable = ()) -> list[Path]:
    """Write ``proto``; tensors named in ``external_tensors`` go to OUT.data. ``check``
    (given the temporary model file) may raise before the model is renamed into place, and
    then nothing is left behind. ``inputs`` are never overwritten. Returns the paths written.
    """
    names = set(external_tensors)
    check_model_output(out_path, inputs, bool(names))
    placed: list[Path] = []
    light = proto
    try:
        if names:
            data_path = data_path_of(out_path)

            def write_weights(handle) -> None:
                nonlocal light
                light = skeleton(proto, handle, data_path.name, lambda t: t.name in names)
            placed.append(write_atomic(data_path, write_weights))  # the check must find it
        placed.append(write_atomic(out_path, light.SerializeToString(), check))
    except BaseException:
        for path in placed:
            path.unlink(missing_ok=True)
        raise
    return placed
