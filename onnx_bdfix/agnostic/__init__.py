"""Without the trigger: reconstruct it from the model alone, then scan or repair.

``geometry`` (where the image sits in a sample) → ``families`` (the small triggers tried) →
``search`` (the best per class, patches refined) → ``scan`` (a verdict) → ``prune`` (patches
cut to the pixels the backdoor needs) and ``refine`` (blends pushed toward the backdoor) →
``repair`` (the known-trigger pipeline on the reconstructions).
"""
from .repair import agnostic_repair
from .scan import ScanResult, scan_model

__all__ = ["ScanResult", "agnostic_repair", "scan_model"]
