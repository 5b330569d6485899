"""Release gate: named checks on one model, each passed, failed or skipped, and one verdict.

Checks (docs/gate.md):
- ``accuracy``: clean accuracy on labelled data, at least ``min_accuracy`` when one is set;
- ``attack_success_rate``: with a trigger, at most ``max_asr``: the share of triggered
  samples not of the target class that land in it (:mod:`onnx_bdfix.metrics`, the same rule
  as ``evaluate``). The target is the one given (or named in the trigger file), unless the
  trigger takes over ``TAKEOVER`` of the samples into another class; without one, the
  reference's (when given) unless the model's own worst class is taken over, else the model's
  own worst class: a strict bound that counts natural drift too;
- ``accuracy_drop``: with a reference model, its accuracy minus this one's (without labels,
  the share of samples whose predicted class differs), at most ``max_accuracy_drop``;
- ``scan``: with ``scan``, the label-free backdoor scan raises no alarm;
- ``structure``: with a reference model, only initializer values differ from it.
"""
from __future__ import annotations

import time

import numpy as np

from ..activations import profile
from ..data import Dataset, Trigger, TriggerSet, check_against_input
from ..diff import diff_protos
from ..errors import DataError, InputError
from ..evaluation import evaluate, triggered_rows
from ..metrics import TAKEOVER, declared_target, taken_over, takeover
from ..model import LoadedModel, as_loaded, model_input
from .checks import accuracy_check, asr_check, drop_check, scan_check, structure_check
from .result import GateOptions, GateResult, ModelFigures


def run_gate(model, data: Dataset, triggered=None, options: GateOptions | None = None,
             scan_data: Dataset | None = None, progress=None,
             reference: LoadedModel | None = None) -> GateResult:
    """Measure ``model`` (a path or a loaded model), and the reference, on ``data`` and hold
    the figures to the limits. ``triggered``: a trigger, or triggered copies of ``data``;
    ``reference``: the reference model already loaded (else read from options.reference)."""
    start, options = time.perf_counter(), options or GateOptions()
    if options.min_accuracy is not None and data.y is None:
        raise DataError(f"--min-accuracy needs labels: {data.source} has no 'y' array "
                        "(or give an image folder with one subfolder per class)")
    loaded = as_loaded(model)
    figures, provider = measure(loaded, data, triggered, options, progress)
    loaded_reference = reference_figures = None
    if options.reference or reference is not None:
        loaded_reference = as_loaded(reference if reference is not None else options.reference)
        check_against_input(data, model_input(loaded_reference),
                            f"data (for --reference {loaded_reference.path})")
        reference_figures = measure(loaded_reference, data, triggered, options, progress)[0]
        if triggered is not None and declared_target(options.target_class, triggered)[0] is None:
            settle_target(figures, reference_figures)
    checks = [accuracy_check(figures, options), asr_check(figures, triggered, options)]
    result = GateResult(checks, figures, reference_figures, _data_info(data),
                        describe_trigger(triggered), options, provider)
    if loaded_reference is not None:
        against_reference(result, loaded_reference.proto, loaded.proto)
    if options.scan:
        result.checks.append(scan_check(result, loaded, scan_data or data))
    if options.activations:
        result.activations = key_activations(loaded, data, triggered, options)
    result.seconds = time.perf_counter() - start
    return result


def measure(loaded: LoadedModel, data: Dataset, triggered, options: GateOptions,
            progress=None) -> tuple[ModelFigures, str]:
    """Clean accuracy, ASR at the target class, per-class accuracy of one loaded model,
    measured by :func:`onnx_bdfix.evaluation.evaluate`."""
    found = evaluate(loaded, data, triggered, options.target_class, options.output,
                     options.device, options.batch_size, progress)
    figures = ModelFigures(str(loaded.path), loaded.sha256,
                           None if data.y is None else found.quality.clean_accuracy,
                           None, None, "no trigger given", None, found.per_class_accuracy,
                           found.predictions, found.moved_into)
    if triggered is not None:
        figures.set_target(found.target_class, found.quality.attack_success_rate,
                           found.target_class_source)
        if declared_target(options.target_class, triggered)[0] is not None:
            guard_takeover(figures)
    return figures, found.provider


def guard_takeover(model: ModelFigures) -> None:
    """A given target does not hide a backdoor that sends the trigger elsewhere: a class the
    trigger takes ``TAKEOVER`` of the samples into is held to the limit instead (the rule of
    :func:`onnx_bdfix.metrics.takeover`, which ``evaluate`` applies too)."""
    moved = takeover(model.moved_into, model.target_class, model.attack_success_rate)
    if moved is not None:
        model.set_target(*moved, taken_over(model.target_class, moved[1]))


def settle_target(model: ModelFigures, reference: ModelFigures) -> None:
    """With no target given, the reference names it: the class its trigger takes samples to.
    The model's own worst class counts instead where the trigger takes over at least
    ``TAKEOVER`` of the samples there, so a backdoor moved to another class cannot hide."""
    target = reference.target_class
    worst = int(np.argmax(model.moved_into))
    if model.moved_into[worst] >= TAKEOVER and model.moved_into[worst] > \
            model.moved_into[target]:
        model.set_target(worst, model.moved_into[worst],
                         f"inferred: the trigger takes {model.moved_into[worst]:.0%} of other "
                         f"classes' samples into it, over the takeover level {TAKEOVER:.0%}")
    else:
        model.set_target(target, model.moved_into[target],
                         "inferred from the reference: the class its trigger moves the "
                         "largest share of correctly classified samples into")


def describe_trigger(triggered) -> dict | None:
    """{path, sha256, kind} of a trigger file or of triggered copies."""
    if isinstance(triggered, Trigger):
        return {"path": triggered.source, "sha256": triggered.sha256, "kind": triggered.kind}
    if isinstance(triggered, TriggerSet):
        return {"path": triggered.source, "sha256": triggered.sha256, "kind": "set"}
    if isinstance(triggered, Dataset):
        return {"path": triggered.source, "sha256": triggered.sha256, "kind": "copies"}
    return None


def _data_info(data: Dataset) -> dict:
    return {"path": data.source, "sha256": data.sha256, "samples": len(data),
            "labelled": data.y is not None}


def against_reference(result: GateResult, reference_proto, model_proto) -> None:
    options, model, reference = result.options, result.model, result.reference
    if len(reference.per_class_accuracy) != len(model.per_class_accuracy):
        raise InputError(f"--reference {options.reference} has "
                         f"{len(reference.per_class_accuracy)} classes, the model "
                         f"{len(model.per_class_accuracy)}; compare like with like")
    result.checks.append(drop_check(model, reference, options.max_accuracy_drop))
    diff = diff_protos(reference_proto, model_proto)
    result.checks.append(structure_check(diff))
    result.diff = diff.as_dict()
    result.edited_layers = edited_layers(model_proto, diff)


def edited_layers(proto, diff) -> list[str]:
    """Names of the nodes that read an initializer whose values changed."""
    changed = {c.name for c in diff.initializers if c.status == "changed"}
    return [node.name or f"{node.op_type}#{index}" for index, node in enumerate(proto.graph.node)
            if changed.intersection(node.input)]


def key_activations(loaded: LoadedModel, data: Dataset, triggered,
                    options: GateOptions) -> list[dict]:
    count = min(options.probe, len(data))
    clean_x = data.rows()[:count]
    rows = triggered_rows(data, triggered)
    triggered_x = None if rows is None else rows[:count]
    found = profile(loaded, clean_x, triggered_x, count, options.device)
    return [row.as_dict() for row in found if row.key_of]
