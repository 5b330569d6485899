"""Trigger-agnostic repair: reconstruct the trigger with ONNX Runtime, then repair as if known.

The scan (:mod:`onnx_bdfix.scan`) finds, per class, the strongest small triggers. The class
it names (or the ``--target-class`` hint) goes through the known-trigger repair unchanged,
with its triggers taken in turn (the strongest and up to three runners-up as strong as the
alarm level, so that the edit learns the backdoor rather than one reconstruction of it), and
with one more rule: an edit must keep held-out clean agreement within ``max_clean_drop``,
else the weights are left as they were.
"""
from __future__ import annotations

from dataclasses import replace

from .collect import Progress
from .data import Dataset
from .errors import InputError
from .repair import Repair, RepairConfig, RepairReport
from .scan import ALARM, ScanResult, scan
from .triggers import TriggerSet


def agnostic_repair(model_path, clean: Dataset, out_path, config: RepairConfig,
                    max_clean_drop: float = 0.01,
                    progress: Progress | None = None) -> tuple[RepairReport, ScanResult]:
    result = scan(model_path, clean, config.output, config.device, evidence=False)
    hint = config.target_class
    if hint is not None and not any(f.target == hint for f in result.found):
        raise InputError(f"--target-class {hint} is out of range: the model has "
                         f"{len(result.found)} classes (0..{len(result.found) - 1})")
    found = result.best(hint)
    triggers = found.strong(min(found.flip_rate, ALARM), most=4)
    trigger = triggers[0] if len(triggers) == 1 else TriggerSet(triggers)
    settings = replace(config, target_class=found.target, mode="agnostic",
                       max_clean_drop=max_clean_drop)
    report = Repair(settings, progress).run(model_path, clean, trigger, out_path)
    return report, result
