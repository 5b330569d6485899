"""Release gate: named checks on one model, each passed, failed or skipped, and one verdict.

Checks (docs/gate.md):
- ``accuracy``: clean accuracy on labelled data, at least ``min_accuracy`` when one is set;
- ``attack_success_rate``: with a trigger, at most ``max_asr``. With a target class (given,
  or named in the trigger file), the share of triggered samples not of that class that land
  in it. Without one, the rate is the share of other classes' correctly classified samples
  the trigger moves into the target, and the target is the reference's worst class when a
  reference is given (or the model's own, where the trigger takes over ``TAKEOVER`` there),
  else the model's worst class: a strict bound that counts natural drift too;
- ``accuracy_drop``: with a reference model, its accuracy minus this one's (without labels,
  the share of samples whose predicted class differs), at most ``max_accuracy_drop``;
- ``scan``: with ``scan``, the label-free backdoor scan raises no alarm;
- ``structure``: with a reference model, only initializer values differ from it.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from . import __version__
from .collect import open_runner, scores
from .data import Dataset, Rows, check_against_input
from .errors import DataError, InputError
from .graph import LoadedModel, load_model, model_input, score_output

SCHEMA = "onnx-bdfix/gate/v1"
PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
TAKEOVER = 0.25      # a trigger moving this share of samples into one class is a backdoor


@dataclass
class GateOptions:
    max_asr: float = 0.05
    min_accuracy: float | None = None
    reference: str | None = None
    max_accuracy_drop: float = 0.02
    scan: bool = False
    target_class: int | None = None
    target_class_source: str = "given"      # or "given in the trigger file"
    output: str | None = None
    device: str = "auto"
    batch_size: int = 256
    probe: int = 64
    activations: bool = False        # profile the key tensors on a probe batch (for --html)


@dataclass
class Check:
    name: str
    status: str                      # passed, failed or skipped
    value: float | None              # the measured figure (None when skipped)
    limit: float | None              # the bound it is held to (None when none is set)
    message: str                     # one line for a person

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ModelFigures:
    """Quality of one model on the gate's data."""
    path: str
    sha256: str
    clean_accuracy: float | None
    attack_success_rate: float | None
    target_class: int | None
    target_class_source: str
    target_class_accuracy: float | None
    per_class_accuracy: list[float | None]     # (classes,), None where no sample has it
    predictions: np.ndarray = field(repr=False, default=None)   # (N,) clean predicted class
    moved_into: list[float] = field(default_factory=list)      # (classes,) see moved_into()

    def set_target(self, target: int, rate: float | None, source: str) -> None:
        self.target_class, self.attack_success_rate = target, rate
        self.target_class_source = source
        self.target_class_accuracy = self.per_class_accuracy[target]

    def as_dict(self) -> dict:
        data = asdict(self)
        data.pop("predictions")
        return data


@dataclass
class GateResult:
    checks: list[Check]
    model: ModelFigures
    reference: ModelFigures | None
    data: dict
    trigger: dict | None
    options: GateOptions
    provider: str
    scan: dict | None = None
    diff: dict | None = None
    edited_layers: list[str] = field(default_factory=list)
    activations: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[str]:
        return [check.name for check in self.checks if check.status == FAILED]

    @property
    def passed(self) -> bool:
        """No check failed and at least one ran: a gate that checked nothing passes nothing."""
        return not self.failed and any(check.status == PASSED for check in self.checks)

    def summary(self) -> str:
        if self.passed:
            return "PASSED"
        return f"FAILED: {', '.join(self.failed) or 'no check ran (every one was skipped)'}"

    def as_dict(self) -> dict:
        """The stable JSON document of docs/gate.schema.json."""
        options = asdict(self.options)
        for key in ("device", "batch_size", "activations"):
            options.pop(key)
        return {"schema": SCHEMA, "tool": {"name": "onnx-bdfix", "version": __version__},
                "passed": self.passed, "failed_checks": self.failed,
                "checks": [check.as_dict() for check in self.checks],
                "model": self.model.as_dict(),
                "reference": None if self.reference is None else self.reference.as_dict(),
                "data": self.data, "trigger": self.trigger, "options": options,
                "scan": self.scan, "diff": self.diff, "edited_layers": self.edited_layers,
                "activations": self.activations, "provider": self.provider,
                "timings": {"seconds": round(self.seconds, 3)}}


# ------------------------------------------------------------------------------ gate
def run_gate(model_path, data: Dataset, triggered: Rows | None, options: GateOptions,
             trigger_info: dict | None = None, scan_data: Dataset | None = None,
             progress=None) -> GateResult:
    """Measure the model (and the reference) on ``data`` and hold the figures to the limits."""
    start = time.perf_counter()
    if options.min_accuracy is not None and data.y is None:
        raise DataError(f"--min-accuracy needs labels: {data.source} has no 'y' array "
                        "(or give an image folder with one subfolder per class)")
    loaded = load_model(model_path)
    figures, provider = measure(loaded, data, triggered, options, progress)
    reference = loaded_reference = None
    if options.reference:
        loaded_reference = load_model(options.reference)
        check_against_input(data, model_input(loaded_reference.proto),
                            f"data (for --reference {options.reference})")
        reference = measure(loaded_reference, data, triggered, options, progress)[0]
        if triggered is not None and options.target_class is None:
            settle_target(figures, reference)
    checks = [accuracy_check(figures, options), asr_check(figures, triggered, options)]
    result = GateResult(checks, figures, reference, _data_info(data), trigger_info, options,
                        provider)
    if reference is not None:
        _against_reference(result, loaded_reference.proto, loaded.proto)
    if options.scan:
        result.checks.append(_scan_check(result, loaded, scan_data or data))
    if options.activations:
        result.activations = _key_activations(loaded, data, triggered, options)
    result.seconds = time.perf_counter() - start
    return result


def measure(loaded: LoadedModel, data: Dataset, triggered: Rows | None, options: GateOptions,
            progress=None) -> tuple[ModelFigures, str]:
    """Clean accuracy, ASR at the target class, per-class accuracy of one loaded model."""
    model_input(loaded.proto)
    runner = open_runner(loaded.proto, options.device)
    output = score_output(loaded.proto, options.output)
    clean = scores(runner, data.rows(), output, options.batch_size, progress, "scoring clean")
    predicted = clean.argmax(1)                                          # (N,)
    classes = clean.shape[1]
    labels = data.y if data.y is not None else predicted                 # (N,)
    figures = ModelFigures(str(loaded.path), loaded.sha256,
                           None if data.y is None else float((predicted == data.y).mean()),
                           None, None, "no trigger given", None,
                           per_class_accuracy(predicted, data.y, classes), predicted)
    if triggered is not None:
        landed = scores(runner, triggered, output, options.batch_size, progress,
                        "scoring triggered").argmax(1)
        figures.moved_into = moved_into(labels, predicted, landed, classes)
        if options.target_class is not None:
            _check_range(options.target_class, classes, options.target_class_source)
            figures.set_target(options.target_class, attack_success(
                labels, landed, options.target_class), options.target_class_source)
            guard_takeover(figures)
        else:
            worst = int(np.argmax(figures.moved_into))
            figures.set_target(worst, figures.moved_into[worst],
                               "inferred: the class the trigger moves the largest share of "
                               "other classes' correctly classified samples into")
    return figures, runner.provider


def attack_success(labels: np.ndarray, landed: np.ndarray, target: int) -> float | None:
    """Share of triggered samples whose label is not ``target`` that land in ``target``."""
    others = labels != target
    return float((landed[others] == target).mean()) if others.any() else None


def moved_into(labels: np.ndarray, predicted: np.ndarray, landed: np.ndarray,
               classes: int) -> list[float]:
    """(classes,) for each class c: the share of correctly classified samples of other classes
    that the trigger moves into c. Samples the model already gets wrong stay out, so natural
    confusion between two classes is not read as an attack."""
    shares = []
    for c in range(classes):
        rows = (labels != c) & (predicted == labels)
        shares.append(float((landed[rows] == c).mean()) if rows.any() else 0.0)
    return shares


def guard_takeover(model: ModelFigures) -> None:
    """A given target does not hide a backdoor that sends the trigger elsewhere: a class the
    trigger takes ``TAKEOVER`` of the samples into is held to the limit instead."""
    worst = int(np.argmax(model.moved_into))
    share = model.moved_into[worst]
    if worst != model.target_class and share >= TAKEOVER and \
            share > (model.attack_success_rate or 0.0):
        model.set_target(worst, share, f"the trigger takes {share:.0%} of other classes' "
                         f"samples into it, not into the given class "
                         f"{model.target_class}")


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


def _check_range(target: int, classes: int, source: str) -> None:
    if not 0 <= target < classes:
        raise InputError(f"target class {target} ({source}) is out of range: the model has "
                         f"{classes} classes (0..{classes - 1})")


def per_class_accuracy(predicted: np.ndarray, labels: np.ndarray | None,
                       classes: int) -> list[float | None]:
    if labels is None:
        return [None] * classes
    return [float((predicted[labels == c] == c).mean()) if (labels == c).any() else None
            for c in range(classes)]


def _data_info(data: Dataset) -> dict:
    return {"path": data.source, "sha256": data.sha256, "samples": len(data),
            "labelled": data.y is not None}


# ---------------------------------------------------------------------------- checks
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


def asr_check(figures: ModelFigures, triggered: Rows | None, options: GateOptions) -> Check:
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


def _against_reference(result: GateResult, reference_proto, model_proto) -> None:
    from .diff import diff_protos
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


def _scan_check(result: GateResult, loaded: LoadedModel, scan_data: Dataset) -> Check:
    from .scan import scan
    options = result.options
    found = scan(loaded, scan_data, options.output, options.device, options.probe,
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


def _key_activations(loaded: LoadedModel, data: Dataset, triggered: Rows | None,
                     options: GateOptions) -> list[dict]:
    from .activations import profile
    count = min(options.probe, len(data))
    clean_x = data.rows()[:count]
    triggered_x = None if triggered is None else triggered[:count]
    rows = profile(loaded.proto, clean_x, triggered_x, count, options.device)
    return [row.as_dict() for row in rows if row.key_of]
