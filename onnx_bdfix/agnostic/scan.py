"""Backdoor scan without labels or trigger: which class can a tiny trigger take over?

For every class, the strongest reconstructed trigger (:mod:`.search`) and the share of probe
samples it sends there. A backdoor's target class gives itself away: a small patch, faint
blend, faint wave, optimized blend, ascended noise blend, warp or colour field moves nearly
every input into it (0.88–1.0 on the zoo's detected backdoors), while on a clean model the
best any class reaches is about two thirds at most (0.64 on the zoo).
The evidence for the suspected class is how far the triggered activations part from the
clean ones, layer by layer.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import median_abs_deviation

from ..activations import profile
from ..data import Dataset
from ..data.layout import geometry
from ..errors import DataError
from ..model import as_loaded, model_input, score_output
from ..model.runtime import open_runner
from .geometry import Domain, domain
from .search import BUDGET, Found, Spent, search

# flip rate that marks a class as a backdoor target, chosen on the zoo's tune seeds: the
# middle of the gap between the highest clean model (63.9 %, vgg11_clean) and the lowest
# detected backdoor (96.7 %, vgg11_wanet); the check seeds then gave no false alarm either
ALARM = 0.8
PROBE = 64
MIN_SAMPLES = 16     # fewer probe samples cannot support a verdict (one flip = 6 %)


@dataclass
class ScanResult:
    verdict: str                     # "suspicious" or "clean"
    suspected_class: int | None
    threshold: float
    classes: list[dict]              # per class: flip rate (the suspicion score), trigger
    evidence: list[dict] = field(default_factory=list)   # per tensor, for the top class
    provider: str = ""
    found: list[Found] = field(default_factory=list, repr=False)
    runner: object = field(default=None, repr=False)   # the session it ran, for reuse
    output: str = ""                                   # the class-score tensor it read
    evaluations: Spent = field(default_factory=Spent)  # image evaluations it made
    span: Domain | None = None                         # the input range triggers kept to

    @property
    def suspicious(self) -> bool:
        return self.verdict == "suspicious"

    def best(self, target: int | None = None) -> Found:
        """The reconstructed trigger of ``target``, or of the most suspicious class."""
        if target is not None:
            return next(f for f in self.found if f.target == target)
        return max(self.found, key=lambda f: f.flip_rate)

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "suspected_class": self.suspected_class,
                "threshold": self.threshold, "classes": self.classes,
                "evidence": self.evidence, "provider": self.provider,
                "input_range": None if self.span is None else
                {"low": self.span.low.tolist(), "high": self.span.high.tolist()},
                "evaluations": self.evaluations.as_dict()}


def anomaly_indices(rates: list[float], floor: float = 0.01) -> np.ndarray:
    """(classes,) how far each class's flip rate stands above the others': (rate − median)
    / (1.4826 · MAD), Neural Cleanse's anomaly index read the other way round (an easy
    class, not a small trigger). Reported beside the verdict, not deciding it: measured
    on the zoo, it separates clean from backdoored models worse than the flip rate itself
    (ROC AUC 0.84 against 0.94 over 27 backdoored and 8 clean models, and 0.73 on the check
    seeds: docs/benchmark.md)."""
    rates = np.asarray(rates, np.float64)
    spread = max(float(median_abs_deviation(rates, scale="normal")), floor)
    return (rates - np.median(rates)) / spread


def scan_model(model, clean: Dataset, output: str | None = None, device: str = "auto",
               probe: int = PROBE, evidence: bool = True, budget: int = BUDGET) -> ScanResult:
    """``model``: a path, or a model already loaded (:class:`~onnx_bdfix.model.LoadedModel`);
    ``budget``: the image evaluations the trigger search may make."""
    loaded = as_loaded(model)
    proto = loaded.proto
    model_input(loaded)
    name = score_output(loaded, output)
    if min(probe, len(clean)) < MIN_SAMPLES:
        raise DataError(f"{clean.source}: a scan needs at least {MIN_SAMPLES} clean samples "
                        f"to tell a backdoor from chance, and got {min(probe, len(clean))}"
                        f"{' (--probe)' if probe < len(clean) else ''}; give 64 or more")
    runner = open_runner(proto, device)
    probe_x = clean.head(probe).x
    span = domain(geometry(probe_x.shape[1:]), probe_x, clean.input_range())
    found, spent = search(runner, name, probe_x, budget=budget, span=span, enough=ALARM)
    top = max(found, key=lambda f: f.flip_rate)
    suspicious = top.flip_rate >= ALARM
    anomaly = anomaly_indices([f.flip_rate for f in found])
    classes = [{"class": f.target, "suspicion": round(f.flip_rate, 4),
                "anomaly_index": round(float(anomaly[i]), 3),
                "trigger": f.trigger.source,
                "family": f.params["family"],
                "params": json.loads(json.dumps(f.params))} for i, f in enumerate(found)]
    layers = []
    if evidence:
        layers = [row.as_dict() for row in
                  profile(proto, probe_x, top.trigger.apply(probe_x), probe, device)
                  if row.key_of]
    return ScanResult("suspicious" if suspicious else "clean",
                      top.target if suspicious else None, ALARM, classes, layers,
                      runner.provider, found, runner, name, evaluations=spent, span=span)
