"""Prove the repaired model: the full onnx.checker on the written file, held to the level
its input passes, and the repaired model's own answers for the report. (Parity and quality
figures are :mod:`onnx_bdfix.metrics`.)"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx

from ..errors import InternalError
from ..model.large import copy_proto
from ..model.runtime import open_runner, scores

log = logging.getLogger(__name__)


def full_check(path: str | Path, original: str | Path | None = None) -> None:
    """onnx.checker with full_check (strict shape inference) on the written file. Where that
    fails and the ``original`` model fails it too, the file is held to the basic check, like
    its input: a repair changes weights, never what shape inference sees."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
        return
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        if original is None or _passes_full_check(original):
            raise InternalError(f"the repaired model fails onnx.checker: {exc}") from exc
        log.warning("the input model fails the full onnx.checker too; the repaired file is "
                    "held to the basic check, like its input")
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise InternalError(f"the repaired model fails onnx.checker: {exc}") from exc


def _passes_full_check(path: str | Path) -> bool:
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError):
        return False
    return True


# ------------------------------------------------------------ the repaired model's answers
SPOT_SAMPLES = 64          # rows the whole repaired model is run on, to check the tail


def repaired_scores(repaired: onnx.ModelProto, fit, samples, layers: list, output: str,
                    device: str, batch_size: int, limit: int, progress=None
                    ) -> tuple[str, tuple[np.ndarray, np.ndarray], np.ndarray]:
    """(provider, (clean, triggered) scores of the repaired model, the rows they are of).

    Where a clean tail of the graph follows the edited layers, the repaired weights run on
    the key activations kept from the collect pass (no second pass over the samples), and
    the whole repaired model is run on a few rows to prove the tail gives its answers.
    Otherwise the whole repaired model runs on the first ``limit`` samples."""
    runner = open_runner(repaired, device, "all")
    tail = _repaired_tail(repaired, fit, layers)
    if tail is not None:
        cut = tuple(dict.fromkeys(layer.key_tensor for layer in layers))
        parts = [fit.held_out.scores(tail, cut, fold, False)
                 for fold in range(len(fit.held_out.rows))]
        rows = np.concatenate(fit.held_out.rows)
        clean, triggered = (np.concatenate([part[i] for part in parts]) for i in (0, 1))
        spot = rows[:SPOT_SAMPLES]
        whole = scores(runner, samples.clean[spot], output, batch_size)
        if np.allclose(whole, clean[:len(spot)], rtol=1e-3, atol=1e-4):
            return runner.provider, (clean, triggered), rows
        log.warning("the repaired tail differs from the whole repaired model (largest "
                    "difference %.3g); verifying with the whole model",
                    float(np.abs(whole - clean[:len(spot)]).max()))
    rows = np.arange(min(len(samples.clean), limit))
    after = tuple(scores(runner, part[rows], output, batch_size, progress, "verifying")
                  for part in (samples.clean, samples.triggered))
    return runner.provider, after, rows


def _repaired_tail(repaired: onnx.ModelProto, fit, layers: list) -> onnx.ModelProto | None:
    """The graph after the edited layers' keys, with the repaired model's weights."""
    if not layers or fit.held_out.kept is None:
        return None
    tail = fit.held_out.tail(tuple(dict.fromkeys(layer.key_tensor for layer in layers)))
    if tail is None:
        return None
    weights = {init.name: init for init in repaired.graph.initializer}
    if not {layer.weight for layer in layers} <= {i.name for i in tail.graph.initializer}:
        return None
    result = copy_proto(tail)
    for init in result.graph.initializer:
        if init.name in weights:
            init.CopyFrom(weights[init.name])
    return result
