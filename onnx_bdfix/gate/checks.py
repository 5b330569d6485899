"""The gate's checks, each passed, failed or skipped with a one-line message:
``accuracy``, ``attack_success_rate``, ``accuracy_drop``, ``structure`` and ``scan``."""
from __future__ import annotations

from ..agnostic.scan import scan_model
from ..data import Dataset
from ..model import LoadedModel
from .result import (
    FAILED,
    PASSED,
    SKIPPED,
    Check,
    GateOptions,
    GateResult,
    ModelFigures,
)


def accuracy_check(figures: ModelFigures, options: GateOptions) -> Check:
    value, limit = figures.clean_accuracy, options.min_accuracy
    if value is None:
        return Check("accuracy", SKIPPED, None, None, "no labels in the data")
    if limit is None:
        return Check("accuracy", SKIPPED, value, None,
                     f"clean accuracy {value:.2%}; no --min-accuracy set")
    status = PASSED if value >= limit else FAILED
    return Check("accuracy", status, value, limit,
                 f"clean accuracy {value:.2%} {'>=' if status == PASSED else '<'} {limit:.2%}")


def asr_check(figures: ModelFigures, triggered, options: GateOptions) -> Check:
    value, limit = figures.attack_success_rate, options.max_asr
    if triggered is None:
        return Check("attack_success_rate", SKIPPED, None, limit,
                     "no trigger given (--trigger or --triggered-data)")
    if value is None:
        return Check("attack_success_rate", SKIPPED, None, limit,
                     f"every sample is of target class {figures.target_class}")
    status = PASSED if value <= limit else FAILED
    return Check("attack_success_rate", status, value, limit,
                 f"attack success {value:.2%} into class {figures.target_class} "
                 f"({figures.target_class_source}); {'<=' if status == PASSED else '>'} "
                 f"{limit:.2%}")


def drop_check(model: ModelFigures, reference: ModelFigures, limit: float) -> Check:
    if model.clean_accuracy is not None and reference.clean_accuracy is not None:
        value = reference.clean_accuracy - model.clean_accuracy
        what = (f"accuracy {reference.clean_accuracy:.2%} -> {model.clean_accuracy:.2%}, "
                f"a drop of {value:.2%}")
    else:
        value = float((model.predictions != reference.predictions).mean())
        what = f"{value:.2%} of samples change class against the reference (no labels)"
    status = PASSED if value <= limit else FAILED
    return Check("accuracy_drop", status, value, limit,
                 f"{what}; {'<=' if status == PASSED else '>'} {limit:.2%}")


def structure_check(diff) -> Check:
    changed = [c for c in diff.initializers if c.status == "changed"]
    if diff.weights_only:
        largest = max((c.relative_change or 0.0 for c in changed), default=0.0)
        return Check("structure", PASSED, float(len(changed)), None,
                     f"only weights differ from the reference: {len(changed)} initializers "
                     f"changed (largest relative change {largest:.2%})")
    first = diff.structure[0] if diff.structure else \
        next(f"initializer {c.name} {c.status}" for c in diff.initializers if c not in changed)
    count = len(diff.structure) + len(diff.initializers) - len(changed)
    return Check("structure", FAILED, float(count), None,
                 f"{count} structural differences from the reference, first: {first}")


def scan_check(result: GateResult, loaded: LoadedModel, scan_data: Dataset) -> Check:
    options = result.options
    found = scan_model(loaded, scan_data, options.output, options.device, options.probe,
                 evidence=False)
    result.scan = found.as_dict()
    top = max(row["suspicion"] for row in found.classes)
    if found.suspicious:
        return Check("scan", FAILED, top, found.threshold,
                     f"suspicious: a reconstructed trigger sends {top:.1%} of probe samples to "
                     f"class {found.suspected_class} (alarm at {found.threshold:.0%})")
    return Check("scan", PASSED, top, found.threshold,
                 f"clean: the strongest reconstructed trigger reaches {top:.1%} "
                 f"(alarm at {found.threshold:.0%})")
