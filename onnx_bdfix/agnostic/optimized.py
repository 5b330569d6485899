"""Optimized triggers: per class, the full-image blend pattern and the smooth warp that pull
samples there most, found by zeroth-order ascent (:mod:`.nes`), not drawn from a menu.

Each family is a small piece: a low-resolution parameterization θ and the trigger it makes.
- blend: x' = (1 − a)·x + a·P, a = RATIO, P = low + span · sigmoid(upsampled θ), θ (C, 8, 8),
  inside each channel's own range. A real-image blend answers to the coarse content of its
  photograph (measured on the zoo's real-photo blends: 97–98 % of probe samples moved into
  the target, at most 25 % into any class of a clean model).
- noise blend: the same blend at full resolution, θ (C, H, W), started from the menu's noise
  that pulls the class most, for the NOISE_CLASSES classes the menu's noises pull most
  (:func:`noise_triggers`). A noise blend answers to the fine texture of its own noise,
  which no coarse pattern has and a random noise matches only in part (measured on the
  zoo's noise blends at 1 % poisoning: the best of 16 random noises moved 8–13 % of probe
  samples into the target, 60 steps of this ascent 86–100 %; on the clean models the same
  ascent reached at most 67 %).
- warp: x'(i, j) = x(i + dy, j + dx), (dy, dx) = MAX_SHIFT · tanh(upsampled θ), θ (2, 4, 4):
  WaNet's own parameterization, a k × k grid of offsets (measured: vgg11_wanet's target
  93 % at 1.5 pixels, at most 21 % on clean models).
- low frequency: x' = clip(x + δ), δ = LF_AMPLITUDE · range · tanh(Σ_k θ_{c,k} b_k), per
  channel c over a basis b_k of cosines and sines with at most LF_CYCLES cycles per image
  along each axis, diagonals both ways, and a constant (:func:`cosine_basis`). A smooth
  colour field answers to its own few frequencies, which no blend of a coarse pattern
  matches: the blend moves every pixel toward one value, the field adds to it.
The budget of these families is spent over (family, class) arms by successive halving, as
K-Arm schedules its bandit: every arm gets a few steps, then, in each family, only the
arms that pull most go on (a family whose arms all pull less than another's keeps its
best: a warp and a colour field are not scored on one scale). Where the budget cannot pay
one step of every arm (a hundred classes), the first round takes only the classes the menu's
triggers reached most, as many as its share pays for (:func:`screened`).
"""
from __future__ import annotations

import math

import numpy as np

from ..data import Trigger
from ..data.layout import Geometry
from ..model.runtime import Runner, scores
from ..repair.anchor import softmax
from .geometry import Domain, blend, made
from .nes import nes_step

RATIO = 0.2                     # blend ratio
MAX_SHIFT = 1.5                 # largest warp offset, in pixels
PAIRS = 8                       # antithetic pairs per step
SIGMA, STEP = 0.5, 0.5          # in θ units (before the sigmoid or tanh)
OUTSIDE = 32                    # probe samples outside the class the ascent is scored on
ROUNDS = ((1.0, 0.2), (0.3, 0.3), (0.1, 0.5))  # (share of arms kept, of budget) per round
MAX_STEPS = 60                  # steps one arm may take in one round
NOISE_CLASSES = 2               # classes whose noise blend is ascended
NOISE_STEPS = 40                # steps of each
NOISE_OUTSIDE = 16              # probe samples each of its steps is scored on
NOISE_STEP = 1.0                # larger than STEP: a pixel of a texture moves alone
LF_AMPLITUDE = 0.1              # largest change of a colour field, over the channel's range
LF_CYCLES = 2                   # most cycles per image of one of its cosines, per axis


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
                     f"optimized {self.family} {RATIO}")


class NoiseBlend(BlendPattern):
    """θ (C, H, W), one value per pixel and channel -> the pattern, and the blend trigger."""
    family = "noise blend"

    def __init__(self, geo: Geometry, span: Domain):
        super().__init__(geo, span)
        self.shape = (geo.channels, geo.height, geo.width)

    def start_at(self, pattern: np.ndarray) -> np.ndarray:
        """θ whose image is ``pattern`` (C, H, W), kept off the sigmoid's flat ends."""
        share = np.clip((pattern - self.low) / np.maximum(self.span, 1e-12), 0.02, 0.98)
        return np.log(share / (1.0 - share))

    def image(self, theta: np.ndarray) -> np.ndarray:
        return self.low + self.span / (1.0 + np.exp(-theta))


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


def cosine_basis(height: int, width: int, cycles: int = LF_CYCLES) -> np.ndarray:
    """(K, H, W): a constant, then cos and sin of 2π(fy·y/H + fx·x/W) for every frequency
    pair up to ``cycles`` per axis (fy ≥ 0; fx of either sign once fy > 0: diagonals both
    ways), each of amplitude 1."""
    rows, cols = np.arange(height)[:, None] / height, np.arange(width)[None] / width
    pairs = [(0, fx) for fx in range(1, cycles + 1)]
    pairs += [(fy, fx) for fy in range(1, cycles + 1) for fx in range(-cycles, cycles + 1)]
    basis = [np.ones((height, width))]
    for fy, fx in pairs:
        angle = 2 * np.pi * (fy * rows + fx * cols)
        basis += [np.cos(angle), np.sin(angle)]
    return np.stack(basis)


class LowFrequency:
    """θ (C, K), K coefficients per channel over :func:`cosine_basis` -> a smooth additive
    colour field of at most LF_AMPLITUDE of each channel's range, and its delta trigger."""
    family = "low frequency"

    def __init__(self, geo: Geometry, span: Domain):
        self.geo, self.basis = geo, cosine_basis(geo.height, geo.width)   # (K, H, W)
        self.shape = (geo.channels, len(self.basis))
        self.amplitude = LF_AMPLITUDE * span.span[:, None, None]          # (C, 1, 1)
        self.low, self.high = geo.per_channel(span.low), geo.per_channel(span.high)

    def trigger(self, theta: np.ndarray) -> Trigger:
        field = self.amplitude * np.tanh(np.einsum("ck,khw->chw", theta, self.basis))
        field = field.astype(np.float32)                                  # (C, H, W)
        return made("delta", {"delta": self.geo.to_sample(field[0] if self.geo.channels == 1
                                                          else field),
                              "clip_min": self.low, "clip_max": self.high},
                    f"optimized low-frequency field {LF_AMPLITUDE:g}")


FAMILIES = (BlendPattern, SmoothWarp, LowFrequency)


def optimized_triggers(runner: Runner, output: str, probe: np.ndarray, base: np.ndarray,
                       n_classes: int, geo: Geometry, span: Domain, budget: int, seed: int = 0,
                       classes: list[int] | None = None
                       ) -> tuple[list[tuple[int, str, Trigger]], dict[int, int]]:
    """([(class, family, its optimized trigger)] for every arm that got any steps, the image
    evaluations spent per class). ``base`` (N,): the model's answers on ``probe``;
    ``budget`` caps the evaluations; ``classes``: those whose arms the first round takes
    (default every class; :func:`screened` picks them where the budget cannot pay for all)."""
    families = [family(geo, span) for family in FAMILIES]
    first = list(range(n_classes)) if classes is None else classes
    arms = [(cls, family) for family in families for cls in first]
    theta = {arm: np.zeros(arm[1].shape) for arm in arms}
    spent = {cls: 0 for cls in range(n_classes)}
    stepped = set()
    # each arm draws its own directions: adding a family or an arm changes no other's
    rngs = {(cls, family): np.random.default_rng([seed, number, cls])
            for number, family in enumerate(families) for cls in first}
    alive, per_step = arms, 2 * PAIRS * OUTSIDE
    for share, money in ROUNDS:
        if budget - sum(spent.values()) < len(alive) * OUTSIDE + per_step:
            break                                   # not even one step after ranking
        alive = _halved(alive, max(1, math.ceil(share * len(first))), theta, runner, output,
                        probe, base, spent)
        left = budget - sum(spent.values())
        steps = min(MAX_STEPS, int(min(money * budget, left) // (per_step * len(alive))))
        if steps == 0 and left >= per_step * len(alive):
            steps = 1                               # a share too small for one step each
        if steps == 0:
            break
        for arm in alive:
            stepped.add(arm)
            theta[arm] = _ascend(arm, theta[arm], steps, runner, output, probe, base, spent,
                                 rngs[arm])
    return [(cls, family.family, family.trigger(theta[(cls, family)]))
            for cls, family in arms if (cls, family) in stepped], spent


def screened(n_classes: int, budget: int, ranked: list[int]) -> list[int]:
    """The classes whose arms the first round of :func:`optimized_triggers` ranks and steps.
    Every class, when ``budget`` pays for one ranking and one step of every arm (each 10-class
    zoo model). Else, as K-Arm screens its arms before the bandit, the first of ``ranked``
    (the classes, most promising first) that the first round's share of the budget pays one
    of each for: a hundred classes' arms would cost more than the whole budget for one step
    apiece, and then none would get any."""
    per_class = len(FAMILIES) * (OUTSIDE + 2 * PAIRS * OUTSIDE)
    if n_classes * per_class <= budget:
        return list(range(n_classes))
    count = max(1, int(ROUNDS[0][1] * budget // per_class))
    return sorted(ranked[:count])


def noise_triggers(runner: Runner, output: str, probe: np.ndarray, base: np.ndarray,
                   geo: Geometry, span: Domain, starts: dict[int, np.ndarray], seed: int = 0
                   ) -> tuple[list[tuple[int, str, Trigger]], dict[int, int]]:
    """Per class of ``starts`` (class -> the (C, H, W) noise pattern to start from), the
    full-resolution noise blend after NOISE_STEPS ascent steps, and the evaluations spent
    per class."""
    family, rng = NoiseBlend(geo, span), np.random.default_rng(seed)
    spent = {cls: 0 for cls in starts}
    found = []
    for cls, pattern in starts.items():
        theta = _ascend((cls, family), family.start_at(pattern), NOISE_STEPS, runner, output,
                        probe, base, spent, rng, NOISE_OUTSIDE, NOISE_STEP)
        found.append((cls, family.family, family.trigger(theta)))
    return found, spent


def noise_cost(n_probe: int) -> int:
    """Image evaluations :func:`noise_triggers` makes, at most, with ``n_probe`` samples."""
    return NOISE_CLASSES * NOISE_STEPS * 2 * PAIRS * min(NOISE_OUTSIDE, n_probe)


def _ascend(arm: tuple, theta: np.ndarray, steps: int, runner, output, probe, base,
            spent: dict, rng, outside: int = OUTSIDE, step: float = STEP) -> np.ndarray:
    """θ after ``steps`` ascent steps of at most ``step`` on the arm's pull over
    ``outside`` probe samples."""
    pull = _pull(arm, runner, output, probe, base, spent, outside)
    for _ in range(steps):
        theta = nes_step(pull, theta, PAIRS, SIGMA, step, rng)
    return theta


def _pull(arm: tuple, runner, output, probe, base, spent: dict, most: int = OUTSIDE):
    """θ -> mean log-probability of the arm's class over (at most ``most``) probe samples
    outside it, counted."""
    cls, family = arm
    outside = probe[base != cls][:most]

    def pull(theta: np.ndarray) -> float:
        if len(outside) == 0:
            return 0.0
        spent[cls] += len(outside)
        triggered = family.trigger(theta).apply(outside)
        probability = softmax(scores(runner, triggered, output, len(outside)))[:, cls]
        return float(np.log(probability + 1e-6).mean())
    return pull


def _halved(alive: list, keep: int, theta: dict, runner, output, probe, base,
            spent: dict) -> list:
    """The ``keep`` arms of each family in ``alive`` whose current triggers pull most."""
    values = {arm: _pull(arm, runner, output, probe, base, spent)(theta[arm]) for arm in alive}
    families = dict.fromkeys(family for _, family in alive)
    return [arm for family in families
            for arm in sorted((a for a in alive if a[1] is family),
                              key=lambda a: -values[a])[:keep]]
