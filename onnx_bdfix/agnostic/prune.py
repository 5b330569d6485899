"""Patch pruning: a reconstructed patch cut down to the pixels the backdoor needs, Neural
Cleanse's smallest trigger reached from a found one, with ONNX Runtime queries alone.

The search finds a patch that flips the probe, but a square of random colours bigger than the
real trigger (6×6 where the real one is 3×3): an edit fitted to it can remove what the extra
pixels add and leave the real trigger working. Measured on convnext_badnets (500 samples,
3,000 unseen images): repaired against its 6×6 reconstruction, 99.5 % attack success; pruned
to the 4 pixels it needs, all inside the real 3×3, and the deepest edit that meets the goal
chosen (``RepairConfig.prefer_late``), 2.8 %.
"""
from __future__ import annotations

import numpy as np

from ..data import Trigger
from ..model.runtime import Runner, scores
from ..repair.anchor import margins
from .geometry import blend, geometry



def is_patch(trigger: Trigger) -> bool:
    """A pasted region: a blend whose mask is 1 on some pixels and 0 on the rest."""
    mask = trigger.arrays.get("mask")
    if trigger.kind != "blend" or mask is None:
        return False
    values = np.unique(mask)
    return len(values) == 2 and values[0] == 0 and values[1] == 1


def prune_patch(runner: Runner, output: str, probe: np.ndarray, trigger: Trigger,
                target: int, level: float) -> Trigger:
    """``trigger`` (a patch, :func:`is_patch`) without the pixels the backdoor does not need.

    Each pixel is first taken out alone and scored by the mean target-logit margin left over
    the probe samples outside the target (the higher, the less it is needed); then, in that
    order, a pixel stays out while the trigger still sends ``level`` of those samples to the
    target: the smallest trigger of its kind, at the backdoor's own boundary. Two forward
    passes over those samples per pixel of the patch. Returns ``trigger`` itself when no
    sample is outside the target or no pixel can go.
    """
    geo = geometry(probe.shape[1:])
    outside = probe[scores(runner, probe, output, len(probe)).argmax(1) != target]
    mask = geo.to_image(np.asarray(trigger.arrays["mask"], np.float64))[0]      # (H, W)
    pattern = geo.to_image(np.asarray(trigger.arrays["pattern"], np.float64))   # (C, H, W)
    pattern = pattern[0] if geo.channels == 1 else pattern
    if len(outside) == 0:
        return trigger

    def answers(kept: np.ndarray) -> np.ndarray:          # (outside, classes) scores
        return scores(runner, blend(geo, kept, pattern, "").apply(outside), output,
                      len(outside))

    pixels = [tuple(p) for p in np.argwhere(mask > 0)]
    left = [margins(answers(_without(mask, [p])), target).mean() for p in pixels]
    removed = []
    for index in np.argsort(left)[::-1]:                   # least needed first
        kept = _without(mask, removed + [pixels[index]])
        if not kept.any():
            continue
        if (answers(kept).argmax(1) == target).mean() >= level:
            removed.append(pixels[index])
    if not removed:
        return trigger
    kept = _without(mask, removed)
    return blend(geo, kept, pattern,
                 f"{trigger.source}, pruned to {int(kept.sum())} of {len(pixels)} pixels")


def _without(mask: np.ndarray, pixels: list[tuple]) -> np.ndarray:
    kept = mask.copy()
    for row, column in pixels:
        kept[row, column] = 0.0
    return kept
