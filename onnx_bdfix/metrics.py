"""Every figure the tool reports, with one rule each: accuracy, attack success, per-class
accuracy, parity, the backdoor's target class and its range. ``evaluate``, ``repair``,
``scan`` and ``gate`` all measure through here, so they agree on the same inputs.

- Attack success rate (ASR) at a given target: the share of triggered samples whose label is
  not the target that the model puts in the target (labels may be the original model's clean
  answers when true labels are unknown). Its floor, with true labels, is the target
  confusion: the share of those samples the model puts in the target with no trigger.
- Target class, when none is given: the class the trigger moves the largest share of other
  classes' correctly classified samples into, and that share is its ASR (samples the model
  already gets wrong stay out, so natural confusion is not read as an attack). When one is
  given, a class the trigger takes over (``TAKEOVER``) instead is reported in its place,
  with that share.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import DataError, InputError

TAKEOVER = 0.25      # a trigger moving this share of samples into one class is a backdoor
INFERRED = "inferred: the class the trigger moves the largest share of other classes' " \
           "correctly classified samples into"


def check_target(target: int, n_classes: int, source: str = "given") -> None:
    """The one range check for a target class, wherever it came from."""
    if not 0 <= target < n_classes:
        raise InputError(f"target class {target} ({source}) is out of range: the model has "
                         f"{n_classes} classes (0..{n_classes - 1})")


def check_labels(labels: np.ndarray | None, n_classes: int, source: str) -> None:
    """Labels must name classes the model has."""
    if labels is None or len(labels) == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= n_classes:
        bad = low if low < 0 else high
        raise DataError(f"{source}: label {bad} is out of range: the model has {n_classes} "
                        f"classes (0..{n_classes - 1}); are these the model's labels?")


def declared_target(given: int | None, trigger=None) -> tuple[int | None, str]:
    """The target class a user declared, and where: ``given`` (an option) first, then the
    trigger file's ``target_class``; (None, "") when neither says."""
    if given is not None:
        return given, "given"
    from_file = getattr(trigger, "target_class", None)
    if from_file is not None:
        return from_file, "given in the trigger file"
    return None, ""


def attack_success(labels: np.ndarray, landed: np.ndarray, target: int) -> float | None:
    """Share of triggered samples whose label is not ``target`` that land in ``target``."""
    others = labels != target
    return float((landed[others] == target).mean()) if others.any() else None


def confusion_into(labels: np.ndarray | None, predicted: np.ndarray,
                   target: int | None) -> float | None:
    """Share of clean samples labelled other than ``target`` that the model already puts in
    ``target``: the floor under the attack success rate, which counts these too once they
    are triggered (a model that confuses 8 % of other classes' samples with the target
    reads at least about 8 % with any trigger, or none). None without true labels."""
    if labels is None or target is None or not (labels != target).any():
        return None
    return float((predicted[labels != target] == target).mean())


def moved_into(labels: np.ndarray, predicted: np.ndarray, landed: np.ndarray,
               n_classes: int) -> list[float]:
    """(classes,) for each class c: the share of correctly classified samples of other
    classes that the trigger moves into c."""
    shares = []
    for c in range(n_classes):
        rows = (labels != c) & (predicted == labels)
        shares.append(float((landed[rows] == c).mean()) if rows.any() else 0.0)
    return shares


def infer_target(labels: np.ndarray, predicted: np.ndarray, landed: np.ndarray,
                 n_classes: int) -> tuple[int, float]:
    """The backdoor's target class read off the model, and its attack success rate: the
    share of other classes' correctly classified samples the trigger moves there."""
    shares = moved_into(labels, predicted, landed, n_classes)
    target = int(np.argmax(shares))
    return target, shares[target]


def takeover(shares: list[float], target: int, rate: float | None,
             level: float = TAKEOVER) -> tuple[int, float] | None:
    """A declared target does not hide a backdoor that sends the trigger elsewhere: the class
    the trigger moves at least ``level`` (``TAKEOVER``) of other classes' correctly
    classified samples into (``shares``: :func:`moved_into`), when that is not ``target``
    and beats its ``rate``; (class, share), or None."""
    worst = int(np.argmax(shares)) if len(shares) else target
    share = shares[worst] if len(shares) else 0.0
    if worst != target and share >= level and share > (rate or 0.0):
        return worst, share
    return None


def taken_over(target: int, share: float) -> str:
    return f"the trigger takes {share:.0%} of other classes' samples into it, not into the " \
           f"given class {target}"


def per_class_accuracy(predicted: np.ndarray, labels: np.ndarray | None,
                       n_classes: int) -> list[float | None]:
    """(classes,) accuracy per true class; None where no sample has it, or no labels."""
    if labels is None:
        return [None] * n_classes
    return [float((predicted[labels == c] == c).mean()) if (labels == c).any() else None
            for c in range(n_classes)]


@dataclass
class Parity:
    """How the repaired model's clean answers compare with the original's."""
    agreement: float              # share of clean samples with the same predicted class
    max_score_change: float       # largest |Δ score| over samples and classes
    mean_score_change: float

    def as_dict(self) -> dict:
        return asdict(self)


def parity(before: np.ndarray, after: np.ndarray) -> Parity:
    """``before``, ``after``: (N, classes) scores of the same samples."""
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
    """Figures from (N, classes) scores; ``labels`` (N,) may be the original model's clean
    predictions when true labels are unknown."""
    predicted = clean_scores.argmax(1)
    accuracy = float((predicted == labels).mean()) if labels is not None else None
    asr = target_accuracy = None
    if target is not None and labels is not None:
        target_rows = labels == target
        if target_rows.any():
            target_accuracy = float((predicted[target_rows] == target).mean())
        if triggered_scores is not None:
            asr = attack_success(labels, triggered_scores.argmax(1), target)
    return Quality(accuracy, asr, target_accuracy, len(clean_scores))
