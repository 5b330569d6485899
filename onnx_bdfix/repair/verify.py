"""Prove a written model file: the full onnx.checker, held to the level its input passes.
(Parity and quality figures are :mod:`onnx_bdfix.metrics`.)"""
from __future__ import annotations

import logging
from pathlib import Path

import onnx

from ..errors import InternalError

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
