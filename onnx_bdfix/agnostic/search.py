"""Gradient-free trigger reconstruction with ONNX Runtime alone.

Backdoor triggers are shortcuts: a small patch, a faint blend or a faint wave that sends most
inputs to one class. The search tries every member of :mod:`.families` on a probe of clean
samples and keeps, for every class, the triggers that flip the largest share of samples
there; patches are then refined by local search (flip pattern cells, move by one pixel) for
the promising classes, the noise blends that pull a class most are ascended at full
resolution, and full-image blends, smooth warps and low-frequency colour fields are
optimized per class (:mod:`.optimized`) with what is left of the budget of image
evaluations.
Each reconstruction is a :class:`~onnx_bdfix.data.Trigger` in the model's layout and scale,
so the known-trigger repair can use it as it is.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ..data import Trigger
from ..data.layout import Geometry, geometry
from ..errors import InputError
from ..model.runtime import Runner, scores
from ..repair.anchor import softmax
from .families import COLOUR_PROBE, global_triggers, patch_triggers, pull_patch_triggers
from .geometry import Domain, domain, patch
from .optimized import (
    FAMILIES,
    NOISE_CLASSES,
    noise_cost,
    noise_triggers,
    optimized_triggers,
    screened,
)

REFINE_STEPS = 40
REFINE_CLASSES = 3    # classes refined by flip rate, and again by pull (a union)
RUNNERS_UP = 8
BUDGET = 200_000      # image evaluations of a whole search, by default

log = logging.getLogger(__name__)


@dataclass
class Found:
    """The strongest reconstructed trigger for one class, and the runners-up."""
    target: int
    flip_rate: float       # share of probe samples not already in the class sent there
    params: dict
    trigger: Trigger
    others: list = field(default_factory=list)   # [(flip rate, Trigger)], strongest first
    families: dict = field(default_factory=dict)  # family -> (flip rate, its strongest)

    def strong(self, level: float, most: int = 4) -> list[Trigger]:
        """This trigger, then the strongest of each other family that reaches ``level``
        (strongest first), then the runners-up that reach it: at most ``most``. A repair
        holds one out per fold, so reconstructions of different kinds come first: an edit
        that removes only the kind it was fitted on then fails its held-out fold (measured
        on vgg11_lf: a 6x6 patch and a colour field both at 100 %, and the patch alone
        repaired to 46.9 % attack success)."""
        own = self.params["family"]
        kinds = sorted((entry for family, entry in self.families.items()
                        if family != own and entry[0] >= level), key=lambda e: -e[0])
        picked = [self.trigger] + [trigger for _, trigger in kinds]
        picked += [t for rate, t in self.others
                   if rate >= level and all(t is not p for p in picked)]
        return picked[:most]


def flip_rates(runner: Runner, output: str, probe: np.ndarray, base: np.ndarray,
               trigger: Trigger, n_classes: int, with_pull: bool = False):
    """(classes,): per class, the share of probe samples outside it that the trigger sends
    into it; with ``with_pull`` also (classes,) the class's mean probability over those
    samples, which moves before any sample flips."""
    raw = scores(runner, trigger.apply(probe), output, len(probe))
    predicted = raw.argmax(1)
    probabilities = softmax(raw)
    rates, pulls = np.zeros(n_classes), np.zeros(n_classes)
    for cls in range(n_classes):
        outside = base != cls
        rates[cls] = (predicted[outside] == cls).mean() if outside.any() else 0.0
        if outside.any():
            pulls[cls] = probabilities[outside, cls].mean()
    return (rates, pulls) if with_pull else rates


@dataclass
class Spent:
    """Image evaluations a search made: the menu and the patch refinement (shared by every
    class: one evaluation scores all classes), and the optimization, per class."""
    menu: int = 0
    refine: int = 0
    optimized: dict = field(default_factory=dict)     # class -> evaluations

    @property
    def total(self) -> int:
        return self.menu + self.refine + sum(self.optimized.values())

    def as_dict(self) -> dict:
        return {"menu": self.menu, "refine": self.refine,
                "optimized_per_class": {str(k): v for k, v in self.optimized.items()},
                "total": self.total}


def search(runner: Runner, output: str, probe: np.ndarray, seed: int = 0,
           budget: int = BUDGET, span: Domain | None = None, enough: float = 1.0
           ) -> tuple[list[Found], Spent]:
    """The best trigger per class over every family, patches refined by local search, then
    blends optimized per class with what is left of ``budget`` image evaluations; every
    trigger inside ``span`` (default: the probe's own range per channel). ``enough``: a
    flip rate that settles a verdict; once a menu trigger or a refined patch reaches it,
    the noise ascent's share of the budget goes to the other optimized families."""
    base = scores(runner, probe, output, len(probe)).argmax(1)
    n_classes = int(scores(runner, probe[:1], output, 1).shape[1])
    geo = geometry(probe.shape[1:])
    span = span or domain(geo, probe)
    spent, fixed = Spent(), menu_cost(geo, span, len(probe), seed)
    if budget < fixed:
        raise InputError(f"a budget of {budget:,} image evaluations is below this model's "
                         f"fixed search cost, {fixed:,} (the menu of patches, blends and "
                         f"waves on {len(probe)} probe samples); give --budget {fixed:,} or "
                         "more, or a smaller --probe")
    best, pulled, noisy = _menu(runner, output, probe, base, n_classes, geo, span, seed, spent)
    refine_cost = (REFINE_STEPS * geo.channels + 2) * len(probe)
    for cls in promising(best, pulled):
        if spent.total + refine_cost > budget:
            log.info("no budget left to refine a patch for class %d", cls)
            continue
        start = _refine_start(best[cls], pulled.get(cls), runner, output, probe, base,
                              n_classes)
        if start.params["family"] == "patch":
            spent.refine += refine_cost
            _keep_best_found(best, refine(runner, output, probe, base, start, geo, span,
                                          n_classes, np.random.default_rng(seed)))
    settled = max(f.flip_rate for f in best.values()) >= enough
    affordable = budget - spent.total >= noise_cost(len(probe)) + NOISE_CLASSES * len(probe)
    starts = {} if settled or not affordable else _noise_starts(noisy, geo)
    made, spent.optimized = noise_triggers(runner, output, probe, base, geo, span, starts,
                                           seed)
    # each made trigger is scored once, on the whole probe: the noise blends, and an arm of
    # every family for each class the optimized families take
    left = budget - spent.total - len(made) * len(probe)
    taken = screened(n_classes, left, reached(best, pulled, noisy))
    more, by_class = optimized_triggers(runner, output, probe, base, n_classes, geo, span,
                                        left - len(FAMILIES) * len(taken) * len(probe), seed,
                                        taken)
    for cls, evaluations in by_class.items():
        spent.optimized[cls] = spent.optimized.get(cls, 0) + evaluations
    for cls, family, trigger in made + more:
        spent.optimized[cls] += len(probe)
        rate = flip_rates(runner, output, probe, base, trigger, n_classes)[cls]
        _keep_best_found(best, Found(cls, float(rate), {"family": family, "optimized": True},
                                     trigger))
    return [best[cls] for cls in sorted(best)], spent


def menu_cost(geo: Geometry, span: Domain, probe_size: int, seed: int = 0) -> int:
    """Image evaluations the menu makes on a probe of ``probe_size``: every search's fixed
    cost, which ``budget`` must cover (:func:`_menu` scores the same triggers)."""
    scored = sum(1 for source in (patch_triggers(geo, span), global_triggers(geo, span))
                 for _ in source)
    pulled = sum(1 for _ in pull_patch_triggers(geo, span, seed))
    return scored * probe_size + pulled * min(COLOUR_PROBE, probe_size)


def _menu(runner, output, probe, base, n_classes, geo, span, seed, spent: Spent
          ) -> tuple[dict, dict, dict]:
    """Every menu trigger scored on the probe: (class -> its best Found, class -> (pull,
    params, trigger) of the patch that pulls it most, the same for noise blends)."""
    best: dict[int, Found] = {}
    pulls_of = {"patch": {}, "blend": {}}
    for source in (patch_triggers(geo, span), global_triggers(geo, span)):
        for params, trigger in source:
            spent.menu += len(probe)
            rates, pulls = flip_rates(runner, output, probe, base, trigger, n_classes, True)
            _keep_best(best, rates, params, trigger)
            if params["family"] in pulls_of:
                _keep_pull(pulls_of[params["family"]], pulls, params, trigger)
    small = probe[:COLOUR_PROBE]
    for params, trigger in pull_patch_triggers(geo, span, seed):     # pulls only
        spent.menu += len(small)
        _keep_pull(pulls_of["patch"], flip_rates(runner, output, small, base[:COLOUR_PROBE],
                                                 trigger, n_classes, True)[1], params, trigger)
    return best, pulls_of["patch"], pulls_of["blend"]


def reached(best: dict, pulled: dict, noisy: dict) -> list[int]:
    """The classes, those the menu and the refined patches flip most first (then those a
    patch or a noise blend pulls most)."""
    pull = lambda cls: max(pulled.get(cls, (0.0,))[0], noisy.get(cls, (0.0,))[0])  # noqa
    return sorted(best, key=lambda cls: (-best[cls].flip_rate, -pull(cls), cls))


def _noise_starts(noisy: dict, geo: Geometry) -> dict[int, np.ndarray]:
    """class -> (C, H, W) the menu's noise that pulls it most, for the NOISE_CLASSES classes
    that the menu's noises pull most."""
    ranked = sorted(noisy, key=lambda cls: -noisy[cls][0])[:NOISE_CLASSES]
    return {cls: geo.to_image(noisy[cls][2].arrays["pattern"]) for cls in ranked}


def promising(best: dict, pulled: dict, most: int = REFINE_CLASSES) -> list[int]:
    """The classes worth refining a patch for, as a bandit moves its pulls to promising
    arms: the ``most`` that the menu's triggers flip most, and the ``most`` whose
    probability a patch pulls most (a coloured patch matched only in place shows there)."""
    by_rate = sorted(best, key=lambda cls: -best[cls].flip_rate)[:most]
    by_pull = sorted(pulled, key=lambda cls: -pulled[cls][0])[:most]
    return sorted(set(by_rate) | set(by_pull))


def _keep_pull(pulled: dict, pulls: np.ndarray, params: dict, trigger: Trigger) -> None:
    for cls, pull in enumerate(pulls):
        if cls not in pulled or pull > pulled[cls][0]:
            pulled[cls] = (float(pull), params, trigger)


def _refine_start(found: Found, pulled: tuple | None, runner, output, probe, base,
                  n_classes) -> Found:
    """Where local search starts for a class: its strongest patch, unless no patch flips
    half the probe; then the patch that pulls the class's probability most. A coloured
    trigger matched only in place, not yet in colour, shows there first (measured:
    preact18_badnets, a multi-colour 3x3 patch, from 22.9 % to 100 %)."""
    if pulled is None or (found.params["family"] == "patch" and found.flip_rate >= 0.5):
        return found
    _, params, trigger = pulled
    rate = flip_rates(runner, output, probe, base, trigger, n_classes)[found.target]
    return Found(found.target, float(rate), params, trigger)


def _keep_best(best: dict, rates: np.ndarray, params: dict, trigger: Trigger) -> None:
    for cls, rate in enumerate(rates):
        _offer(best, cls, float(rate), params, trigger)


def _keep_best_found(best: dict, found: "Found") -> None:
    _offer(best, found.target, found.flip_rate, found.params, found.trigger)


def _offer(best: dict, cls: int, rate: float, params: dict, trigger: Trigger) -> None:
    """Keep ``trigger`` as the class's best, or among its runners-up, and as its family's
    strongest if it is."""
    old = best.get(cls)
    if old is None:
        best[cls] = Found(cls, rate, params, trigger)
    elif rate > old.flip_rate:
        best[cls] = Found(cls, rate, params, trigger,
                          [(old.flip_rate, old.trigger)] + old.others[:RUNNERS_UP - 1],
                          old.families)
    elif len(old.others) < RUNNERS_UP or rate > old.others[-1][0]:
        old.others = sorted(old.others + [(rate, trigger)], key=lambda o: -o[0])[:RUNNERS_UP]
    families = best[cls].families
    if params["family"] not in families or rate > families[params["family"]][0]:
        families[params["family"]] = (rate, trigger)


def refine(runner, output, probe, base, found: Found, geo: Geometry, span: Domain,
           n_classes, rng) -> Found:
    """Local search on a patch: flip one cell (one channel of it, on colour input) or move
    one pixel; keep what flips as many samples and pulls the class's probability at least
    as much. Colour input gets more steps: it has more bits."""
    params = dict(found.params)
    cells = np.array(params["cells"])
    if geo.channels > 1 and cells.ndim == 2:
        cells = np.repeat(cells[None], geo.channels, axis=0)          # (C, size, size)
    top, left, size = params["top"], params["left"], params["size"]
    rate = found.flip_rate
    pull = flip_rates(runner, output, probe, base, found.trigger, n_classes, True)[1][found.target]
    current = found
    for _ in range(REFINE_STEPS * geo.channels):
        new_cells, new_top, new_left = cells.copy(), top, left
        if rng.random() < 0.5:
            i, j = rng.integers(size, size=2)
            if cells.ndim == 3:
                channel = rng.integers(geo.channels)
                new_cells[channel, i, j] = 1 - new_cells[channel, i, j]
            else:
                new_cells[i, j] = 1 - new_cells[i, j]
        else:
            new_top = int(np.clip(top + rng.integers(-1, 2), 0, geo.height - size))
            new_left = int(np.clip(left + rng.integers(-1, 2), 0, geo.width - size))
        trigger = patch(geo, new_top, new_left, new_cells, span)
        rates_, pulls_ = flip_rates(runner, output, probe, base, trigger, n_classes, True)
        new_rate, new_pull = rates_[found.target], pulls_[found.target]
        if (new_rate, new_pull) >= (rate, pull):
            pull = new_pull
            cells, top, left, rate = new_cells, new_top, new_left, float(new_rate)
            params.update(top=top, left=left, cells=cells.astype(int).tolist(),
                          pattern="refined")
            current = Found(found.target, rate, dict(params), trigger)
    return current
