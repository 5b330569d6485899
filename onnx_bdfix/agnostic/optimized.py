"""Optimized triggers: per class, the full-image blend pattern and the smooth warp that pull
samples there most, found by zeroth-order ascent (:mod:`.nes`), not drawn from a menu.

Each family is a small piece: a low-resolution parameterization θ and the trigger it makes.
- blend: x' = (1 − a)·x + a·P, a = RATIO, P = low + span · sigmoid(upsampled θ), θ (C, 8, 8),
  inside each channel's own range. A real-image blend answers to the coarse content of its
  photograph (measured on the zoo's real-photo blends: 97–98 % of probe samples moved into
  the target, at most 25 % into any class of a clean model).
- warp: x'(i, j) = x(i + dy, j + dx), (dy, dx) = MAX_SHIFT · tanh(upsampled θ), θ (2, 4, 4):
  WaNet's own parameterization, a k × k grid of offsets (measured: vgg11_wanet's target
  93 % at 1.5 pixels, at most 21 % on clean models).
The budget is spent over (family, class) arms by successive halving, as K-Arm schedules its
bandit: every arm gets a few steps, then only the arms that pull most go on.
"""
from __future__ import annotations

import math

import numpy as np

from ..data import Trigger
from ..model.runtime import Runner, scores
from ..repair.anchor import softmax
from .geometry import Domain, Geometry, blend, made
from .nes import nes_step

RATIO = 0.2                     # blend ratio
MAX_SHIFT = 1.5                 # largest warp offset, in pixels
PAIRS = 8                       # antithetic pairs per step
SIGMA, STEP = 0.5, 0.5          # in θ units (before the sigmoid or tanh)
OUTSIDE = 32                    # probe samples outside the class the ascent is scored on
ROUNDS = ((1.0, 0.2), (0.3, 0.3), (0.1, 0.5))  # (share of arms kept, of budget) per round
MAX_STEPS = 60                  # steps one arm may take in one round


def interpolation(size: int, cells: int) -> np.ndarray:
    """(size, cells) linear interpolation from ``cells`` grid values to ``size`` pixels."""
    grid = np.linspace(0, cells - 1, size)
    return np.stack([np.interp(grid, np.arange(cells), unit) for unit in np.eye(cells)], 1)


class BlendPattern:
    """θ (C, 8, 8) -> the (C, H, W) pattern inside the domain, and the blend trigger."""
    family = "blend"

    def __init__(self, geo: Geometry, span: Domain, cells: int = 8):
        self.geo, self.shape = geo, (geo.channels, cells, cells)
        self.rows, self.cols = interpolation(geo.height, cells), interpolation(geo.width, cells)
        self.low, self.span = span.low[:, None, None], span.span[:, None, None]
        self.mask = np.full((geo.height, geo.width), RATIO)

    def image(self, theta: np.ndarray) -> np.ndarray:
        smooth = np.einsum("hr,crs,ws->chw", self.rows, theta, self.cols)   # (C, H, W)
        return self.low + self.span / (1.0 + np.exp(-smooth))

    def trigger(self, theta: np.ndarray) -> Trigger:
        pattern = self.image(theta)
        return blend(self.geo, self.mask, pattern[0] if self.geo.channels == 1 else pattern,
                     f"optimized blend {RATIO}")


class SmoothWarp:
    """θ (2, 4, 4) -> a flow (2, H, W) of at most MAX_SHIFT pixels, and the warp trigger."""
    family = "warp"

    def __init__(self, geo: Geometry, span: Domain, cells: int = 4):
        self.shape = (2, cells, cells)
        self.rows, self.cols = interpolation(geo.height, cells), interpolation(geo.width, cells)

    def trigger(self, theta: np.ndarray) -> Trigger:
        flow = MAX_SHIFT * np.tanh(np.einsum("hr,crs,ws->chw", self.rows, theta, self.cols))
        return made("warp", {"flow": flow.astype(np.float32)},
                    f"optimized warp {MAX_SHIFT:g} px")


FAMILIES = (BlendPattern, SmoothWarp)


def optimized_triggers(runner: Runner, output: str, probe: np.ndarray, base: np.ndarray,
                       n_classes: int, geo: Geometry, span: Domain, budget: int, seed: int = 0
                       ) -> tuple[list[tuple[int, str, Trigger]], dict[int, int]]:
    """([(class, family, its optimized trigger)] for every arm that got any steps, the image
    evaluations spent per class). ``base`` (N,): the model's answers on ``probe``;
    ``budget`` caps the evaluations."""
    families = [family(geo, span) for family in FAMILIES]
    arms = [(cls, family) for family in families for cls in range(n_classes)]
    theta = {arm: np.zeros(arm[1].shape) for arm in arms}
    spent = {cls: 0 for cls in range(n_classes)}
    stepped = set()
    rng = np.random.default_rng(seed)
    alive, per_step = arms, 2 * PAIRS * OUTSIDE
    for share, money in ROUNDS:
        if budget - sum(spent.values()) < len(alive) * OUTSIDE + per_step:
            break                                   # not even one step after ranking
        keep = max(1, math.ceil(share * len(arms)))
        alive = _ranked(alive, theta, runner, output, probe, base, spent)[:keep]
        left = budget - sum(spent.values())
        steps = min(MAX_STEPS, int(min(money * budget, left) // (per_step * len(alive))))
        if steps == 0:
            break
        for arm in alive:
            pull = _pull(arm, runner, output, probe, base, spent)
            stepped.add(arm)
            for _ in range(steps):
                theta[arm] = nes_step(pull, theta[arm], PAIRS, SIGMA, STEP, rng)
    return [(cls, family.family, family.trigger(theta[(cls, family)]))
            for cls, family in arms if (cls, family) in stepped], spent


def _pull(arm: tuple, runner, output, probe, base, spent: dict):
    """θ -> mean log-probability of the arm's class over probe samples outside it, counted."""
    cls, family = arm
    outside = probe[base != cls][:OUTSIDE]

    def pull(theta: np.ndarray) -> float:
        if len(outside) == 0:
            return 0.0
        spent[cls] += len(outside)
        triggered = family.trigger(theta).apply(outside)
        probability = softmax(scores(runner, triggered, output, len(outside)))[:, cls]
        return float(np.log(probability + 1e-6).mean())
    return pull


def _ranked(alive: list, theta: dict, runner, output, probe, base, spent: dict) -> list:
    """``alive`` arms by how strongly their current triggers pull, strongest first."""
    values = {arm: _pull(arm, runner, output, probe, base, spent)(theta[arm]) for arm in alive}
    return sorted(alive, key=lambda arm: -values[arm])
