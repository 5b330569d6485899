"""Score one model on data and its triggered copies: the figures of :mod:`onnx_bdfix.metrics`.

``evaluate`` is what ``onnx-bdfix evaluate`` prints and what the gate measures each model
with, so the two report the same target class and attack success rate on the same inputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .data import Dataset, Rows, Trigger, TriggerSet
from .metrics import (
    INFERRED,
    Quality,
    check_labels,
    check_target,
    confusion_into,
    declared_target,
    infer_target,
    moved_into,
    per_class_accuracy,
    quality,
    taken_over,
    takeover,
)
from .model import as_loaded, model_input, score_output
from .model.runtime import Progress, open_runner, scores


@dataclass
class Evaluation:
    """Quality of one model on labelled (or unlabelled) data and its triggered copies."""
    quality: Quality
    target_class: int | None
    target_class_source: str
    provider: str
    per_class_accuracy: list = field(default_factory=list)     # (classes,)
    predictions: np.ndarray = field(default=None, repr=False)  # (N,) clean predicted class
    moved_into: list = field(default_factory=list)             # (classes,) metrics.moved_into
    target_confusion: float | None = None    # metrics.confusion_into: the ASR floor

    def as_dict(self) -> dict:
        return {**self.quality.as_dict(), "target_class": self.target_class,
                "target_class_source": self.target_class_source, "provider": self.provider,
                "target_confusion": self.target_confusion,
                "per_class_accuracy": list(self.per_class_accuracy)}


def triggered_rows(data: Dataset, triggered) -> Rows | np.ndarray | None:
    """The triggered samples: a trigger applied to ``data``, triggered copies (a Dataset),
    or rows as they are."""
    if isinstance(triggered, (Trigger, TriggerSet)):
        return data.rows(trigger=triggered)
    if isinstance(triggered, Dataset):
        return triggered.rows()
    return triggered


def evaluate(model, data: Dataset, triggered=None, target: int | None = None,
             output: str | None = None, device: str = "auto", batch_size: int = 256,
             progress: Progress | None = None) -> Evaluation:
    """Clean accuracy, attack success rate and target-class accuracy of ``model`` (a path or
    a loaded model). ``triggered``: a trigger, triggered copies of ``data``, or their rows.
    The target class is ``target``, else the trigger file's, else read off the model. Without
    labels, the model's own clean predictions stand in for them (agreement)."""
    loaded = as_loaded(model)
    model_input(loaded)
    name = score_output(loaded, output)
    target, source = declared_target(target, triggered)
    rows = triggered_rows(data, triggered)
    runner = open_runner(loaded.proto, device, "all")
    clean = scores(runner, data.rows(), name, batch_size, progress, "scoring clean")
    n_classes = clean.shape[1]
    check_labels(data.y, n_classes, f"labels of {data.source}")
    predicted = clean.argmax(1)                                              # (N,)
    labels = data.y if data.y is not None else predicted                     # (N,)
    landed = None if rows is None else \
        scores(runner, rows, name, batch_size, progress, "scoring triggered")
    shares = [] if landed is None else moved_into(labels, predicted, landed.argmax(1),
                                                  n_classes)
    inferred_rate = None
    if target is not None:
        check_target(target, n_classes, source)
    elif landed is not None:
        target, inferred_rate = infer_target(labels, predicted, landed.argmax(1), n_classes)
        source = INFERRED
    figures = quality(clean, landed, labels, target)
    if inferred_rate is not None:
        figures = replace(figures, attack_success_rate=inferred_rate)
    moved = None if landed is None else \
        takeover(shares, target, figures.attack_success_rate)
    if moved is not None:        # a given target that the backdoor does not use
        source = taken_over(target, moved[1])
        figures = replace(quality(clean, landed, labels, moved[0]),
                          attack_success_rate=moved[1])
        target = moved[0]
    return Evaluation(figures, target, source or "none", runner.provider,
                      per_class_accuracy(predicted, data.y, n_classes), predicted, shares,
                      confusion_into(data.y, predicted, target))
