"""What the gate is asked (:class:`GateOptions`) and what it answers: a named :class:`Check`
each, the figures of the model (and reference), and the stable JSON document of
docs/gate.schema.json."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .. import __version__

SCHEMA = "onnx-bdfix/gate/v1"
PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass
class GateOptions:
    max_asr: float = 0.05
    min_accuracy: float | None = None
    reference: str | None = None
    max_accuracy_drop: float = 0.02
    scan: bool = False
    target_class: int | None = None         # else the trigger file's, else inferred
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
    moved_into: list[float] = field(default_factory=list)      # (classes,) metrics.moved_into

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
