"""ONNX Runtime sessions over (exposed) graphs, and streamed batches through them."""
from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from .errors import DataError, DeviceError, ModelError
from .graph import is_large, write_for_runtime

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
Progress = Callable[[str, int, int], None]     # (stage, done, total)


@dataclass
class Runner:
    """An inference session and the provider that really runs it."""
    session: ort.InferenceSession
    provider: str
    input_name: str
    input_dtype: np.dtype
    workdir: object = None        # the model's files, for models over 2 GiB (kept alive here)

    def run(self, batch: np.ndarray, outputs: list[str] | None = None) -> list[np.ndarray]:
        feed = {self.input_name: batch.astype(self.input_dtype, copy=False)}
        try:
            return self.session.run(outputs, feed)
        except (ort.capi.onnxruntime_pybind11_state.Fail,
                ort.capi.onnxruntime_pybind11_state.InvalidArgument,
                ort.capi.onnxruntime_pybind11_state.RuntimeException) as exc:
            raise ModelError(f"ONNX Runtime failed on a batch: {_short(exc)}") from exc


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
    output, so exposed tensors are computed as the deployed graph computes them, at 'all'."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[optimization]
    workdir = None
    if isinstance(model, bytes) or not is_large(model):
        source = model if isinstance(model, bytes) else model.SerializeToString()
    else:                    # over 2 GiB: ONNX Runtime reads it from a file and its weights
        workdir = tempfile.TemporaryDirectory(prefix="bdfix-ort-")
        source = str(write_for_runtime(model, Path(workdir.name)))
    try:
        session = ort.InferenceSession(source, options, providers=providers_for(device))
    except DeviceError:
        raise
    except Exception as exc:  # onnxruntime raises several unrelated types when loading
        raise ModelError(f"ONNX Runtime cannot load the model: {_short(exc)}") from exc
    provider = session.get_providers()[0]
    if device == "cuda" and provider != CUDA:
        raise DeviceError("--device cuda: the CUDA provider did not load (check the CUDA and "
                          "cuDNN libraries); use --device cpu")
    model_input = session.get_inputs()[0]
    dtype = np.float16 if model_input.type == "tensor(float16)" else np.float32
    return Runner(session, provider, model_input.name, np.dtype(dtype), workdir)


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


@dataclass
class Collected:
    """What one pass over the samples leaves behind: key statistics and class scores."""
    stats: dict          # layer name -> [KeyStats per fold]
    clean_scores: np.ndarray               # (N, classes), original model
    triggered_scores: np.ndarray | None    # (N, classes), original model
    marked: dict | None = None             # layer name -> [KeyStats per fold], marked samples
    kept: dict | None = None               # key tensor -> [(clean, triggered) per fold]
    kept_rows: list | None = None          # [row indices per fold] of the kept activations


# (clean scores, triggered scores) of a batch -> which samples to mark, or None for none
Marker = Callable[[np.ndarray, np.ndarray | None], np.ndarray | None]


def collect_statistics(model: onnx.ModelProto, layers: list, clean_x: np.ndarray,
                       triggered_x: np.ndarray | None, fold_bounds: list[int], output: str,
                       device: str, batch_size: int, progress: Progress | None = None,
                       stage: str = "collecting", mark: Marker | None = None,
                       keep_per_fold: int = 0) -> Collected:
    """One streamed pass: each sample's clean and triggered copies run once, in one batch.

    Samples are ordered by fold: fold f holds rows fold_bounds[f]:fold_bounds[f + 1]. The
    clean keys of the samples ``mark`` picks are summed once more, apart (``marked``). The
    key activations of the first ``keep_per_fold`` rows of each fold are kept (``kept``), for
    held-out scoring: memory grows with that cap, not with the number of samples.
    """
    from .graph import expose
    from .stats import KeyStats

    key_names = list(dict.fromkeys(layer.key_tensor for layer in layers))
    wanted = [output] + key_names
    runner = open_runner(expose(model, wanted), device, "all")  # exposed tensors stay intact
    with_triggered = triggered_x is not None
    stats = {layer.name: [] for layer in layers}
    marked = {layer.name: [] for layer in layers} if mark else None
    clean_scores, triggered_scores = [], []
    # a Gemm with transA reads its input batch-last: such tensors are not kept (the held-out
    # scoring then runs the whole model)
    batch_last = {layer.key_tensor for layer in layers
                  if layer.op == "Gemm" and layer.attrs.get("transA", 0)}
    kept_names = [name for name in key_names if name not in batch_last]
    kept = {name: [] for name in kept_names} if keep_per_fold and with_triggered else None
    kept_rows = []
    for fold in range(len(fold_bounds) - 1):
        fold_kept = {name: ([], []) for name in kept_names}
        fold_stats = {layer.name: KeyStats(layer.groups, layer.key_dim, with_triggered)
                      for layer in layers}
        fold_marked = {layer.name: KeyStats(layer.groups, layer.key_dim, False)
                       for layer in layers}
        for part in batch_slices(fold_bounds[fold + 1] - fold_bounds[fold], batch_size):
            rows = slice(part.start + fold_bounds[fold], part.stop + fold_bounds[fold])
            batch = clean_x[rows] if not with_triggered else \
                np.concatenate([clean_x[rows], triggered_x[rows]])
            values = dict(zip(wanted, runner.run(batch, wanted)))
            check_finite({name: values[name] for name in key_names})   # scores: per_sample
            size = rows.stop - rows.start
            scores_pair = _split_scores(per_sample(values[output], len(batch), output), size,
                                        with_triggered)
            clean_scores.append(scores_pair[0])
            if with_triggered:
                triggered_scores.append(scores_pair[1])
            chosen = mark(*scores_pair) if mark else None
            _accumulate(layers, values, size, with_triggered, fold_stats, fold_marked, chosen)
            if kept is not None and part.start < keep_per_fold:
                take = min(size, keep_per_fold - part.start)
                for name in kept_names:
                    fold_kept[name][0].append(values[name][:take])
                    fold_kept[name][1].append(values[name][size:size + take])
            if progress:
                progress(stage, rows.stop, len(clean_x))
        if kept is not None:
            count = min(keep_per_fold, fold_bounds[fold + 1] - fold_bounds[fold])
            kept_rows.append(np.arange(fold_bounds[fold], fold_bounds[fold] + count))
            for name in kept_names:
                kept[name].append(tuple(np.concatenate(p) for p in fold_kept[name]))
        for layer in layers:
            if not fold_stats[layer.name].finite():
                raise DataError(f"the key sums of layer {layer.name!r} overflow on these "
                                "samples: are they in the model's input scale (see 'scale' "
                                "and 'offset' in the data file)?")
            stats[layer.name].append(fold_stats[layer.name])
            if marked is not None:
                marked[layer.name].append(fold_marked[layer.name])
    as_array = lambda parts: np.concatenate(parts).astype(np.float32) if parts else None  # noqa
    return Collected(stats, as_array(clean_scores), as_array(triggered_scores), marked, kept,
                     kept_rows if kept is not None else None)


def _split_scores(batch_scores: np.ndarray, size: int, with_triggered: bool):
    clean = batch_scores[:size].reshape(size, -1)
    return clean, (batch_scores[size:].reshape(size, -1) if with_triggered else None)


def _accumulate(layers: list, values: dict, size: int, with_triggered: bool, fold_stats: dict,
                fold_marked: dict, chosen: np.ndarray | None) -> None:
    """Keys of one batch into the sums; ``chosen`` samples' clean keys also into marked."""
    from .layers import keys, split_samples

    ones = np.ones(size, np.float32)
    for layer in layers:
        clean_part, triggered_part = split_samples(layer, values[layer.key_tensor], size)
        clean_keys = keys(layer, clean_part)                          # (groups, n_keys, d)
        triggered_keys = keys(layer, triggered_part) if with_triggered else None
        fold_stats[layer.name].add(clean_keys, triggered_keys, ones)
        if chosen is not None and chosen.any():
            fold_marked[layer.name].add(clean_keys, None, chosen.astype(np.float32))
