"""Prove a repaired file: full checker, loads in ONNX Runtime, parity and quality figures."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from .errors import InternalError


def full_check(path: str | Path) -> None:
    """onnx.checker with full_check (shape inference) on the written file."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise InternalError(f"the repaired model fails onnx.checker: {exc}") from exc


@dataclass
class Parity:
    """How the repaired model's clean answers compare with the original's."""
    agreement: float              # share of clean samples with the same predicted class
    max_score_change: float       # largest |Δ score| over samples and classes
    mean_score_change: float

    def as_dict(self) -> dict:
        return asdict(self)


def parity(before: np.ndarray, after: np.ndarray) -> Parity:
    change = np.abs(after.astype(np.float64) - before)
    return Parity(float((before.argmax(1) == after.argmax(1)).mean()),
                  float(change.max()), float(change.mean()))


@dataclass
class Quality:
    """Clean accuracy, attack success rate and target-class accuracy of one model."""
    clean_accuracy: float | None
    attack_success_rate: float | None
    target_class_accuracy: float | None
    samples: int

    def as_dict(self) -> dict:
        return asdict(self)


def quality(clean_scores: np.ndarray, triggered_scores: np.ndarray | None,
            labels: np.ndarray | None, target: int | None) -> Quality:
    """ASR counts triggered samples whose label is not the target (``labels`` may be the
    original model's clean predictions when true labels are unknown)."""
    predicted = clean_scores.argmax(1)
    accuracy = float((predicted == labels).mean()) if labels is not None else None
    asr = target_accuracy = None
    if target is not None and labels is not None:
        target_rows = labels == target
        if target_rows.any():
            target_accuracy = float((predicted[target_rows] == target).mean())
        if triggered_scores is not None and (~target_rows).any():
            asr = float((triggered_scores[~target_rows].argmax(1) == target).mean())
    return Quality(accuracy, asr, target_accuracy, len(clean_scores))
