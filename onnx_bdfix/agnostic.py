"""Trigger-agnostic repair: reconstruct the trigger with ONNX Runtime, then repair as if known.

The scan (:mod:`onnx_bdfix.scan`) finds, per class, the strongest small triggers. The class
it names (or the ``--target-class`` hint) goes through the known-trigger repair unchanged,
with its triggers taken in turn, one per cross-validation fold: the strongest and up to three
runners-up as strong as the alarm level; for a blend, the first is the strongest pattern
refined toward the backdoor. Each fold's held-out samples carry a reconstruction the other
folds never saw, so the layer and strength are chosen for how the edit carries over to new
instances of the trigger, not to the ones it was fitted on. One more rule: an edit must keep
held-out clean agreement within ``max_clean_drop``, else the weights are left as they were.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .collect import Progress
from .data import Dataset
from .errors import InputError
from .reconstruct import Found, refine_blend
from .repair import Repair, RepairConfig, RepairReport
from .scan import ALARM, PROBE, ScanResult, scan
from .triggers import Trigger, TriggerSet


def _refined(scanned: ScanResult, clean: Dataset, found: Found, triggers: list[Trigger],
             level: float) -> list[Trigger]:
    """Blends with their patterns refined toward the backdoor (reconstruct.py), on the
    scan's own session."""
    probe = clean.head(PROBE).x
    return [refine_blend(scanned.runner, scanned.output, probe, trigger, found.target, level,
                         seed)
            if _whole_image_blend(trigger) else trigger
            for seed, trigger in enumerate(triggers)]


def _whole_image_blend(trigger: Trigger) -> bool:
    mask = trigger.arrays.get("mask")
    return trigger.kind == "blend" and mask is not None and float(np.min(mask)) > 0 \
        and float(np.ptp(mask)) == 0


def agnostic_repair(model_path, clean: Dataset, out_path, config: RepairConfig,
                    max_clean_drop: float = 0.01,
                    progress: Progress | None = None) -> tuple[RepairReport, ScanResult]:
    result = scan(model_path, clean, config.output, config.device, evidence=False)
    hint = config.target_class
    if hint is not None and not any(f.target == hint for f in result.found):
        raise InputError(f"--target-class {hint} is out of range: the model has "
                         f"{len(result.found)} classes (0..{len(result.found) - 1})")
    found = result.best(hint)
    folds = config.folds                 # one reconstruction per cross-validation fold
    level = min(found.flip_rate, ALARM)
    triggers = found.strong(level, most=folds)
    if found.params["family"] == "blend":
        triggers = _refined(result, clean, found, triggers, level)
    result.runner = None                 # the repair opens its own sessions
    trigger = triggers[0] if len(triggers) == 1 else TriggerSet(triggers)
    settings = replace(config, target_class=found.target, mode="agnostic",
                       max_clean_drop=max_clean_drop)
    report = Repair(settings, progress).run(model_path, clean, trigger, out_path)
    return report, result
