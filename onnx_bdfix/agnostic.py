"""Trigger-agnostic repair: reconstruct the trigger with ONNX Runtime, then repair as if known.

The scan (:mod:`onnx_bdfix.scan`) finds, per class, the strongest small trigger. The class it
names (or the ``--target-class`` hint) and its trigger go through the known-trigger repair
unchanged, with one more rule: an edit must keep held-out clean agreement within
``max_clean_drop``, else the weights are left as they were.
"""
from __future__ import annotations

from dataclasses import replace

from .collect import Progress
from .data import Dataset
from .errors import InputError
from .repair import Repair, RepairConfig, RepairReport
from .scan import ScanResult, scan


def agnostic_repair(model_path, clean: Dataset, out_path, config: RepairConfig,
                    max_clean_drop: float = 0.01,
                    progress: Progress | None = None) -> tuple[RepairReport, ScanResult]:
    result = scan(model_path, clean, config.output, config.device, evidence=False)
    hint = config.target_class
    if hint is not None and not any(f.target == hint for f in result.found):
        raise InputError(f"--target-class {hint} is out of range: the model has "
                         f"{len(result.found)} classes (0..{len(result.found) - 1})")
    found = result.best(hint)
    settings = replace(config, target_class=found.target, mode="agnostic",
                       max_clean_drop=max_clean_drop)
    report = Repair(settings, progress).run(model_path, clean, found.trigger, out_path)
    return report, result
