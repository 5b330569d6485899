"""The collect stage: one streamed pass over the fold-ordered samples gives every candidate
layer's key statistics, the original model's scores, the target class (given, or read off
the model) and, for the repair step, the target class's own clean keys."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx

from ..data import Dataset, Rows, TriggerSet
from ..metrics import INFERRED, check_target, infer_target
from ..model.runtime import Progress
from .anchor import logit_layer
from .collect import Collected, collect_statistics
from .edit import combined
from .heldout import HeldOut
from .layers import Layer
from .plan import Plan, RepairConfig
from .stats import KeyStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Samples:
    """Clean samples and their triggered copies, both in the plan's fold order."""
    clean: Rows
    triggered: Rows


def order_samples(plan: Plan, clean: Dataset, triggered) -> Samples:
    """``triggered``: a trigger, a set of triggers (dealt out by fold), or triggered copies."""
    if isinstance(triggered, TriggerSet):
        triggered = triggered.by_fold(plan.order, plan.bounds)
    triggered_x = triggered.rows(plan.order) if isinstance(triggered, Dataset) \
        else clean.rows(plan.order, triggered)
    return Samples(clean.rows(plan.order), triggered_x)


@dataclass(frozen=True)
class Fit:
    """What every candidate edit is fitted and scored on (samples ordered by fold)."""
    proto: onnx.ModelProto
    collected: Collected
    target_stats: dict | None         # layer name -> [KeyStats per fold], target-class keys
    target_weight: float
    samples: Samples
    bounds: list[int]
    reference: np.ndarray             # (N,) the original model's clean predictions
    target: int
    target_source: str
    output: str
    anchor_layer: Layer | None
    held_out: HeldOut
    labels: np.ndarray | None = None  # (N,) true clean labels where given, in fold order

    def stats(self, layers: list[Layer], leave_out: int | None = None,
              target_weight: float | None = None) -> dict[str, KeyStats]:
        weight = self.target_weight if target_weight is None else target_weight
        return {layer.name: combined(self.collected.stats[layer.name],
                                     self.target_stats[layer.name] if self.target_stats
                                     else None, weight, leave_out)
                for layer in layers}

    @property
    def held_out_count(self) -> int:
        return sum(map(len, self.held_out.rows))


class TargetGuess:
    """Marks the clean samples the model puts in the target class, batch by batch; without a
    given target, the first batch's triggered answers name it."""

    def __init__(self, target: int | None):
        self.target = target

    def __call__(self, clean_scores: np.ndarray, triggered_scores: np.ndarray) -> np.ndarray:
        clean_pred = clean_scores.argmax(1)
        if self.target is None:
            self.target = infer_target(clean_pred, clean_pred, triggered_scores.argmax(1),
                                       clean_scores.shape[1])[0]
        return clean_pred == self.target


def collect_fit(plan: Plan, samples: Samples, config: RepairConfig,
                declared: tuple[int | None, str], progress: Progress | None = None,
                labels: np.ndarray | None = None) -> Fit:
    """One pass for the key statistics; the repair step's target-class keys come along,
    for the target guessed from the first batch (a second pass only if the guess was wrong).
    ``labels``: the clean samples' true classes in fold order, if known.
    """
    proto = plan.loaded.proto
    guess = TargetGuess(declared[0])
    collected = collect_statistics(proto, plan.involved, samples.clean, samples.triggered,
                                   plan.bounds, plan.output, config.device, config.batch_size,
                                   progress, mark=guess if config.repair_step else None,
                                   keep_per_fold=max(1, config.cv_samples // plan.folds),
                                   inferred=plan.loaded.index.inferred)
    reference = collected.clean_scores.argmax(1)
    target, source = target_class(reference, collected, declared)
    n_classes = collected.clean_scores.shape[1]
    warn_if_few(reference[plan.given], target, n_classes)
    target_stats = anchor_layer = None
    if config.repair_step:
        target_stats = collected.marked if guess.target == target else \
            target_class_stats(plan, samples.clean, reference, target, config, progress)
        anchor_layer = logit_layer(plan.loaded, plan.layers, plan.output, n_classes)
    held_out = HeldOut(proto, plan.output, collected.kept, collected.kept_rows, samples.clean,
                       samples.triggered, config.device, config.batch_size,
                       plan.loaded.index.inferred)
    return Fit(proto, collected, target_stats, config.target_weight or float(n_classes),
               samples, plan.bounds, reference, target, source, plan.output, anchor_layer,
               held_out, labels)


FEW_TARGET = 3      # target-class samples below which the held-out checks cannot see the class


def warn_if_few(answers: np.ndarray, target: int, n_classes: int) -> None:
    """Warn when the clean samples as given (``answers`` (N,): the model's classes of them)
    hold fewer than FEW_TARGET of the target class: then neither the clean-cost bound nor the
    repair step can show what an edit costs that class. Measured on the zoo's 100-class
    models at 100 samples (0 or 1 of the target each): on pairs_cnn_blended_noise the repair
    left at most 0.2 % attack success and, on three slices of five, 2-5 fewer of the target
    class's 27 test images right (14 before)."""
    held = int((answers == target).sum())
    if held < FEW_TARGET:
        log.warning("the clean samples hold %d of the target class %d (%d samples, %d "
                    "classes): what the edit costs that class goes unseen; about %d clean "
                    "samples (%d per class) let the repair check it", held, target,
                    len(answers), n_classes, 2 * FEW_TARGET * n_classes, 2 * FEW_TARGET)


def target_class(reference: np.ndarray, collected: Collected,
                 declared: tuple[int | None, str]) -> tuple[int, str]:
    """The declared target (checked against the model's classes), or the one the trigger
    sends the original model's answers to."""
    n_classes = collected.clean_scores.shape[1]
    if declared[0] is not None:
        check_target(declared[0], n_classes, declared[1])
        return declared
    landed = collected.triggered_scores.argmax(1)
    target, share = infer_target(reference, reference, landed, n_classes)
    log.info("target class %d: %.0f%% of triggered samples go there", target, 100 * share)
    return target, f"{INFERRED} ({share:.0%} of triggered non-target samples land there)"


def target_class_stats(plan: Plan, clean_x: Rows, reference: np.ndarray, target: int,
                       config: RepairConfig, progress: Progress | None) -> dict | None:
    """Clean keys of the samples the model puts in the target class, in a second pass
    (only when the first batch guessed the target wrong)."""
    bounds = plan.bounds
    rows = [np.flatnonzero(reference[bounds[f]:bounds[f + 1]] == target) + bounds[f]
            for f in range(plan.folds)]
    sub_bounds = np.cumsum([0] + [len(r) for r in rows]).tolist()
    picked = np.concatenate(rows)
    if len(picked) == 0:
        return None
    again = collect_statistics(plan.loaded.proto, plan.involved, clean_x[picked], None,
                               sub_bounds, plan.output, config.device, config.batch_size,
                               progress, "repair step", inferred=plan.loaded.index.inferred)
    return again.stats
