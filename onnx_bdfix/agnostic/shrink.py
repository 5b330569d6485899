"""Smaller patches inside a reconstructed one, refined: more instances of a patch trigger for
the trigger-agnostic repair to hold out.

The scan finds a patch at the menu's size (6 × 6 cells, one bit per channel, on 3 × 32 × 32
input) and refines it; the backdoor's own patch is often smaller and sits inside it, or next
to it. An edit fitted on the large patch removes what that patch does, not the smaller
trigger: on the zoo's convnext_badnets (a 3 × 3 patch in the corner, found as a 6 × 6 one
overlapping it) the repair left 95 % attack success. So the found patch's square
sub-windows, from half its side up, are scored on the probe; the :data:`TRIES` smallest that
flip the most are refined by the scan's own local search (:func:`.search.refine`: one cell of
one channel flipped, or the patch moved by a pixel), and those that still reach the level the
repair asks are kept, distinct ones only. On convnext_badnets one of them settled on the
backdoor's corner and the repair left 1.9 % (docs/agnostic.md, "Stop 26").
"""
from __future__ import annotations

import numpy as np

from ..data import Trigger
from ..data.layout import geometry
from ..model.runtime import Runner, scores
from .geometry import Domain, patch
from .search import Found, flip_rates, refine

TRIES = 6     # sub-windows refined at most (each costs the scan's refinement steps)


def windows(size: int) -> list[tuple[int, int, int]]:
    """(side, row, column) of every square sub-window of a ``size`` × ``size`` patch, sides
    from half of ``size`` (at least 2) to ``size`` - 1, smallest first."""
    return [(side, row, column) for side in range(max(2, size // 2), size)
            for row in range(size - side + 1) for column in range(size - side + 1)]


def shrunk_patches(runner: Runner, output: str, probe: np.ndarray, found: Found,
                   level: float, span: Domain, most: int, seed: int = 0) -> list[Trigger]:
    """At most ``most`` refined sub-windows of the patch ``found`` (none for another family)
    that send at least ``level`` of the probe's samples outside its class into it."""
    if found.params.get("family") != "patch" or most <= 0:
        return []
    raw = scores(runner, probe, output, len(probe))                     # (N, classes)
    base, n_classes, geo = raw.argmax(1), raw.shape[1], geometry(probe.shape[1:])
    starts = [_window(found, geo, span, window) for window in windows(found.params["size"])]
    for start in starts:
        start.flip_rate = float(flip_rates(runner, output, probe, base, start.trigger,
                                           n_classes)[found.target])
    starts.sort(key=lambda start: (start.params["size"], -start.flip_rate))
    kept, rng = [], np.random.default_rng(seed)
    for start in starts[:TRIES]:
        refined = refine(runner, output, probe, base, start, geo, span, n_classes, rng)
        if refined.flip_rate >= level and \
                all(refined.trigger.sha256 != other.sha256 for other in kept):
            kept.append(refined.trigger)
        if len(kept) == most:
            break
    return kept


def _window(found: Found, geo, span: Domain, window: tuple[int, int, int]) -> Found:
    """The sub-window (side, row, column) of ``found``'s patch, as a patch of its own (its
    flip rate not yet scored)."""
    side, row, column = window
    cells = np.array(found.params["cells"])[..., row:row + side, column:column + side]
    top, left = found.params["top"] + row, found.params["left"] + column
    params = {**found.params, "top": top, "left": left, "size": side,
              "cells": cells.tolist(), "pattern": "window"}
    return Found(found.target, 0.0, params, patch(geo, top, left, cells, span))
