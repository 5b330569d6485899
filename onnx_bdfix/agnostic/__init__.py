"""Without the trigger: reconstruct it from the model alone, then scan or repair.

``geometry`` (where the image sits in a sample) → ``families`` (the small triggers tried) →
``search`` (the best per class, patches refined) → ``refine`` (blends pushed toward the
backdoor) → ``scan`` (a verdict) → ``repair`` (the known-trigger pipeline on the
reconstructions).
"""
from .repair import agnostic_repair
from .scan import ScanResult, scan_model

__all__ = ["ScanResult", "agnostic_repair", "scan_model"]
