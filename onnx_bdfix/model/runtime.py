"""ONNX Runtime sessions over a model (or an exposed copy) and batches streamed through them.

The provider is chosen once (``--device``): CUDA when onnxruntime-gpu's provider really
loads, else the CPU. Every failure of ONNX Runtime becomes a :class:`ModelError`, and a score
tensor that is not (batch, classes) a clear error that says which output to name.
"""
from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from ..errors import DataError, DeviceError, ModelError
from .batch import freed
from .index import GraphIndex
from .large import is_large, write_for_runtime
from .signature import INPUT_TYPES

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
Progress = Callable[[str, int, int], None]     # (stage, done, total)
CHECK_ROWS = 3   # random rows run together and each alone before a freed batch is used


@dataclass
class Runner:
    """An inference session and the provider that really runs it."""
    session: ort.InferenceSession
    provider: str
    input_name: str
    input_dtype: np.dtype
    workdir: object = None        # the model's files, for models over 2 GiB (kept alive here)
    fixed_batch: int | None = None  # rows every run must hold: an export with a fixed batch

    def run(self, batch: np.ndarray, outputs: list[str] | None = None) -> list[np.ndarray]:
        return self.run_feed({self.input_name: as_input(batch, self.input_dtype)}, outputs)

    def run_feed(self, feed: dict[str, np.ndarray], outputs: list[str] | None = None
                 ) -> list[np.ndarray]:
        """Run on named inputs (a graph's tail takes several), in pieces of the model's fixed
        batch where it has one; ONNX Runtime failures are errors of the model."""
        rows = len(next(iter(feed.values())))
        if self.fixed_batch is None or rows == self.fixed_batch:
            return self._run_once(feed, outputs)
        return self._run_in_pieces(feed, outputs, rows)

    def _run_in_pieces(self, feed: dict[str, np.ndarray], outputs: list[str] | None,
                       rows: int) -> list[np.ndarray]:
        """Each ``fixed_batch`` rows in turn, the last piece filled up by repeating its last
        row; each output keeps the share of its rows that the real ones gave."""
        size, pieces = self.fixed_batch, []
        for start in range(0, rows, size):
            real = min(size, rows - start)
            piece = {name: _filled(value[start * len(value) // rows:
                                         (start + real) * len(value) // rows], real, size)
                     for name, value in feed.items()}
            values = self._run_once(piece, outputs)
            pieces.append([value[:len(value) * real // size] for value in values])
        return [np.concatenate(column) for column in zip(*pieces)]

    def _run_once(self, feed: dict[str, np.ndarray], outputs: list[str] | None
                  ) -> list[np.ndarray]:
        try:
            return self.session.run(outputs, feed)
        except (ort.capi.onnxruntime_pybind11_state.Fail,
                ort.capi.onnxruntime_pybind11_state.InvalidArgument,
                ort.capi.onnxruntime_pybind11_state.RuntimeException) as exc:
            raise ModelError(f"ONNX Runtime failed on a batch: {_short(exc)}") from exc


def as_input(batch: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``batch`` in the input's type: floats as they are (cast); for an integer input (uint8
    pixels), rounded to the nearest integer and clipped to the type's range, as the deployed
    model would receive a triggered or reconstructed image."""
    if not np.issubdtype(dtype, np.integer):
        return batch.astype(dtype, copy=False)
    bounds = np.iinfo(dtype)
    return np.clip(np.rint(batch), bounds.min, bounds.max).astype(dtype)


# ONNX Runtime's name of each input type ("tensor(uint8)" without its wrapper) -> numpy type
RUNTIME_TYPES = {onnx.TensorProto.DataType.Name(code).lower(): dtype
                 for code, dtype in INPUT_TYPES.items()}


def input_dtype(session: ort.InferenceSession, position: int = 0) -> np.dtype:
    """The numpy type of the session's first input (or the one at ``position``); float32 for
    a type :data:`RUNTIME_TYPES` does not hold (a graph tail's float inputs)."""
    name = session.get_inputs()[position].type.removeprefix("tensor(").removesuffix(")")
    return np.dtype(RUNTIME_TYPES.get(name, np.float32))


def _filled(value: np.ndarray, real: int, size: int) -> np.ndarray:
    """``value`` (``real`` samples' rows) with its last sample's rows repeated up to ``size``
    samples."""
    if real == size:
        return value
    per_sample = len(value) // real
    return np.concatenate([value] + [value[-per_sample:]] * (size - real))


def fixed_batch(session: ort.InferenceSession) -> int | None:
    """The batch the session's first input must have, where the export fixed it (torch's
    exporters without dynamic axes fix it to the example's, often 1); None where it is free."""
    first = session.get_inputs()[0].shape
    return first[0] if first and isinstance(first[0], int) and first[0] > 0 else None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) < 300 else text[:297] + "..."


def providers_for(device: str) -> list[str]:
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
    available = ort.get_available_providers()
    if device == "cuda" and CUDA not in available:
        raise DeviceError("--device cuda: this onnxruntime has no CUDA provider; "
                          "install onnx-bdfix[gpu] (onnxruntime-gpu) or use --device cpu")
    if device in ("cuda", "auto") and CUDA in available:
        return [CUDA, CPU]
    return [CPU]


def open_runner(model: onnx.ModelProto | bytes, device: str = "auto",
                optimization: str = "all") -> Runner:
    """A session on ``device``. ONNX Runtime never fuses a node away whose output is a graph
    output, so exposed tensors are computed as the deployed graph computes them, at 'all'.
    A model exported with a fixed batch runs through a copy with a free batch where that copy
    answers as the model does (:func:`_free_session`), else in pieces of its batch."""
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load_from_string(model)
    workdir, source = None, model
    if is_large(proto):     # over 2 GiB: ONNX Runtime reads it from a file, weights beside it
        workdir = tempfile.TemporaryDirectory(prefix="bdfix-ort-")
        source = str(write_for_runtime(proto, Path(workdir.name)))
    declared = declared_batch(proto)
    free = _free_session(proto, declared, device, optimization) \
        if declared is not None and workdir is None else None
    session = free or _session(source, device, optimization)
    batch = None if free is not None else fixed_batch(session)
    if batch is not None:
        log.debug("the model takes exactly %d sample(s) per run; running that many at a time",
                  batch)
    return Runner(session, session.get_providers()[0], session.get_inputs()[0].name,
                  input_dtype(session), workdir, batch)


def declared_batch(proto: onnx.ModelProto) -> int | None:
    """The batch the first input's declared shape fixes, if any."""
    inputs = GraphIndex(proto).inputs
    dims = inputs[0].type.tensor_type.shape.dim if inputs else []
    return dims[0].dim_value if dims and dims[0].HasField("dim_value") \
        and dims[0].dim_value > 0 else None


def _session(source, device: str, optimization: str, quiet: bool = False
             ) -> ort.InferenceSession:
    """A session on ``device`` over a proto, its bytes or a file's path; ``quiet``: ONNX
    Runtime logs nothing below a fatal error (its failures are still raised)."""
    options = ort.SessionOptions()
    options.log_severity_level = 4 if quiet else 3
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[optimization]
    if isinstance(source, onnx.ModelProto):
        source = source.SerializeToString()
    try:
        session = ort.InferenceSession(source, options, providers=providers_for(device))
    except DeviceError:
        raise
    except Exception as exc:  # onnxruntime raises several unrelated types when loading
        raise ModelError(f"ONNX Runtime cannot load the model: {_short(exc)}") from exc
    if device == "cuda" and session.get_providers()[0] != CUDA:
        raise DeviceError("--device cuda: the CUDA provider did not load (check the CUDA and "
                          "cuDNN libraries); use --device cpu")
    return session


def _free_session(proto: onnx.ModelProto, batch: int, device: str,
                  optimization: str) -> ort.InferenceSession | None:
    """A session on ``proto`` with a free batch (:func:`.batch.freed`), when it answers rows
    run together as it answers each run alone; else None."""
    serialized = freed(proto, batch)
    if serialized is None:
        return None
    try:
        session = _session(serialized, device, optimization, quiet=True)  # the check may fail
    except ModelError:
        return None
    if not answers_alike(session):
        return None
    log.debug("exported for a batch of %d; running a copy with a free batch", batch)
    return session


def answers_alike(session: ort.InferenceSession, seed: int = 0) -> bool:
    """Whether ``session`` answers :data:`CHECK_ROWS` random rows run together as it answers
    each row run alone, on every output; False where an input's shape is not known beyond
    its batch, or a run fails."""
    rng = np.random.default_rng(seed)
    feed = {}
    for position, value in enumerate(session.get_inputs()):
        rest = value.shape[1:]
        if not all(isinstance(size, int) and size > 0 for size in rest):
            return False
        rows = rng.random((CHECK_ROWS, *rest)) * 2
        feed[value.name] = as_input(rows, input_dtype(session, position))
    try:
        together = session.run(None, feed)
        alone = [session.run(None, {name: rows[i:i + 1] for name, rows in feed.items()})
                 for i in range(CHECK_ROWS)]
    except Exception:  # noqa: BLE001 - any failure means: keep the exported batch
        return False
    for position, joint in enumerate(together):
        single = np.concatenate([outputs[position] for outputs in alone])
        scale = max(1.0, float(np.nanmax(np.abs(single), initial=0.0)))
        if joint.shape[:1] != (CHECK_ROWS,) or single.shape != joint.shape or not np.allclose(
                joint, single, rtol=1e-4, atol=1e-5 * scale, equal_nan=True):
            return False
    return True


def batch_slices(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def scores(runner: Runner, x: np.ndarray, output: str, batch_size: int,
           progress: Progress | None = None, stage: str = "scoring") -> np.ndarray:
    """Class scores (N, classes) as float32, streamed in batches."""
    parts = []
    for part in batch_slices(len(x), batch_size):
        parts.append(per_sample(runner.run(x[part], [output])[0], part.stop - part.start,
                                output))
        if progress:
            progress(stage, part.stop, len(x))
    return np.concatenate(parts).reshape(len(x), -1)


def check_finite(values: dict[str, np.ndarray]) -> None:
    """Inf or NaN inside the model means samples far outside the scale it was trained on."""
    for name, value in values.items():
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            raise DataError(f"the model's tensor {name!r} holds Inf or NaN on these samples: "
                            "are they in the model's input scale (see 'scale' and 'offset' "
                            "in the data file)?")


def per_sample(value: np.ndarray, rows: int, name: str) -> np.ndarray:
    """``value`` as (rows, classes) float32 scores, or a clear error."""
    value = np.asarray(value)
    check_finite({name: value})
    if value.ndim < 1 or len(value) != rows or value.size == 0 or \
            not np.issubdtype(value.dtype, np.number):
        raise ModelError(f"output {name!r} gives {value.dtype} {value.shape} for a batch of "
                         f"{rows}; class scores must be (batch, classes): name the right "
                         "output with --output")
    value = value.astype(np.float32).reshape(rows, -1)
    if value.shape[1] < 2:
        raise ModelError(f"output {name!r} gives one score per sample; onnx-bdfix needs one "
                         "score per class (for a binary model with a single sigmoid, expose "
                         "the two-class scores, or name them with --output)")
    return value
