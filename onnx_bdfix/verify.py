"""Prove a repaired file: full checker, loads in ONNX Runtime, parity and quality figures."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from .errors import InternalError

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


def infer_target(clean_pred: np.ndarray, triggered_pred: np.ndarray) -> tuple[int, float]:
    """The class the trigger sends most flipped samples to, and the share it gets."""
    flipped = triggered_pred != clean_pred
    counts = np.bincount(triggered_pred[flipped] if flipped.any() else triggered_pred)
    target = int(counts.argmax())
    others = clean_pred != target
    return target, float((triggered_pred[others] == target).mean()) if others.any() else 0.0


@dataclass
class Evaluation:
    """Quality of one model on labelled (or unlabelled) data and its triggered copies."""
    quality: Quality
    target_class: int | None
    target_class_source: str
    provider: str

    def as_dict(self) -> dict:
        return {**self.quality.as_dict(), "target_class": self.target_class,
                "target_class_source": self.target_class_source, "provider": self.provider}


def evaluate(model_path, data, triggered_x, target: int | None = None,
             output: str | None = None, device: str = "auto", batch_size: int = 256,
             progress=None) -> Evaluation:
    """Clean accuracy, attack success rate and target-class accuracy of the model at a path.

    Without labels, the model's own clean predictions stand in for them (agreement).
    """
    from .collect import open_runner, scores
    from .errors import InputError
    from .graph import load_model, score_output

    proto = load_model(model_path).proto
    name = score_output(proto, output)
    runner = open_runner(proto, device, "all")
    clean_scores = scores(runner, data.rows(), name, batch_size, progress, "scoring clean")
    triggered = None if triggered_x is None else \
        scores(runner, triggered_x, name, batch_size, progress, "scoring triggered")
    n_classes = clean_scores.shape[1]
    source = "given"
    if target is not None and not 0 <= target < n_classes:
        raise InputError(f"--target-class {target} is out of range: the model has "
                         f"{n_classes} classes (0..{n_classes - 1})")
    if target is None and triggered is not None:
        target, share = infer_target(clean_scores.argmax(1), triggered.argmax(1))
        source = f"read off the model: {share:.0%} of triggered non-target samples"
    labels = data.y if data.y is not None else clean_scores.argmax(1)
    return Evaluation(quality(clean_scores, triggered, labels, target), target, source,
                      runner.provider)
