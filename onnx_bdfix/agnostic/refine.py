"""Blend refinement: a reconstructed blend's pattern pushed toward what the backdoor answers
to, with natural-evolution-strategy gradient estimates from ONNX Runtime queries alone."""
from __future__ import annotations

import numpy as np

from ..data import Trigger
from ..data.layout import geometry
from ..model.runtime import Runner, scores
from ..repair.anchor import softmax
from .geometry import Domain, blend, domain
from .nes import nes_step

BLEND_STEPS = 30          # ascent steps
BLEND_PAIRS = 20          # antithetic perturbation pairs per step
BLEND_SIGMA = 0.1         # perturbation size, relative to the input range
BLEND_STEP = 0.05         # largest change of one pixel per step, relative to the range


def refine_blend(runner: Runner, output: str, probe: np.ndarray, trigger: Trigger,
                 target: int, level: float, seed: int = 0, span: Domain | None = None
                 ) -> Trigger:
    """A blend's noise pattern pushed toward what the backdoor responds to most.

    A natural-evolution-strategy ascent (antithetic Gaussian perturbations, ONNX Runtime
    only) on the mean probability of the target class over probe samples outside it. It runs
    at half the blend ratio, where the backdoor does not yet answer every sample, so the
    probabilities still move. The refined pattern is returned at the weakest ratio that still
    sends ``level`` of those samples to the target: the smallest trigger of its kind, as close
    to the backdoor's own boundary as the search gets. ``span``: the input range the
    pattern stays in (default: the probe's own, per channel).
    """
    geo = geometry(probe.shape[1:])
    span = span or domain(geo, probe)
    grey = geo.channels == 1
    low = span.low[0] if grey else span.low[:, None, None]             # () or (C, 1, 1)
    high = span.high[0] if grey else span.high[:, None, None]
    ratio = float(np.max(trigger.arrays["mask"]))
    outside = probe[scores(runner, probe, output, len(probe)).argmax(1) != target]
    if len(outside) == 0:
        return trigger
    weak = np.full((geo.height, geo.width), ratio / 2)

    def pull(pattern: np.ndarray) -> float:
        triggered = blend(geo, weak, pattern, "").apply(outside)
        return float(softmax(scores(runner, triggered, output, len(outside)))[:, target].mean())

    rng = np.random.default_rng(seed)
    pattern = geo.to_image(np.asarray(trigger.arrays["pattern"], np.float64))   # (C, H, W)
    pattern = pattern[0] if grey else pattern
    sigma, step = BLEND_SIGMA * (high - low), BLEND_STEP * (high - low)
    for _ in range(BLEND_STEPS):
        pattern = nes_step(pull, pattern, BLEND_PAIRS, sigma, step, rng, (low, high))
    def flips(strength: float) -> float:
        triggered = blend(geo, np.full((geo.height, geo.width), strength), pattern,
                          "").apply(outside)
        return float((scores(runner, triggered, output, len(outside)).argmax(1)
                      == target).mean())

    weakest = weakest_ratio(flips, ratio, level)
    return blend(geo, np.full((geo.height, geo.width), weakest), pattern,
                 f"noise blend {weakest:.3g}, refined")


def weakest_ratio(flips, ratio: float, level: float, steps: int = 6) -> float:
    """The smallest ratio in [ratio / 4, ratio] with flips(ratio) >= level (bisection)."""
    if flips(ratio) < level:
        return ratio
    low, high = ratio / 4, ratio
    for _ in range(steps):
        middle = (low + high) / 2
        low, high = (low, middle) if flips(middle) >= level else (middle, high)
    return high
