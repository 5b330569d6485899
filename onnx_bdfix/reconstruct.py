"""Gradient-free trigger reconstruction with ONNX Runtime alone.

Backdoor triggers are shortcuts: a small patch, a faint blend or a faint wave that sends most
inputs to one class. This module tries such perturbations on a probe of clean samples and
measures, for every class, the share of samples it flips there:

- patches: small squares (about 1/9 of the side) at a grid of positions, white, black or
  checkered, then refined by local search (flip pattern cells, move by one pixel);
- blends: x' = (1 − a)·x + a·noise, a ≤ 0.25, several fixed noise images;
- waves: x' = clip(x + A·sin(2π f u)), A ≤ 0.15 of the range, u along rows or columns.

Each reconstruction is a :class:`~onnx_bdfix.triggers.Trigger` in the model's layout and scale,
so the known-trigger repair can use it as it is.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .collect import Runner, scores
from .errors import DataError
from .triggers import Trigger

NOISE_SEEDS = tuple(range(11, 19))
BLEND_RATIOS = (0.15, 0.25)
WAVE_FREQUENCIES = (3, 4, 5, 6, 7, 8, 10)
WAVE_AMPLITUDES = (0.08, 0.15)
REFINE_STEPS = 40
RUNNERS_UP = 8


@dataclass
class Geometry:
    """Where height, width and channels sit in one sample of the model's input."""
    layout: str          # "CHW", "HWC" or "flat"
    height: int
    width: int
    channels: int
    shape: tuple

    def to_sample(self, image: np.ndarray) -> np.ndarray:
        """(H, W) image -> an array that broadcasts to one sample."""
        if self.layout == "CHW":
            return image[None]
        if self.layout == "HWC":
            return image[..., None]
        return image.reshape(-1)


def geometry(sample_shape: tuple) -> Geometry:
    shape = tuple(sample_shape)
    if len(shape) == 3 and shape[0] in (1, 3) and shape[1] > 4:
        return Geometry("CHW", shape[1], shape[2], shape[0], shape)
    if len(shape) == 3 and shape[2] in (1, 3):
        return Geometry("HWC", shape[0], shape[1], shape[2], shape)
    if len(shape) == 1 and int(np.sqrt(shape[0])) ** 2 == shape[0]:
        side = int(np.sqrt(shape[0]))
        return Geometry("flat", side, side, 1, shape)
    raise DataError(f"cannot read an image out of samples shaped {shape}; trigger-agnostic "
                    "mode needs (C, H, W), (H, W, C) or a flattened square image")


def made(kind: str, arrays: dict, label: str) -> Trigger:
    """A reconstructed trigger; its digest covers its arrays, its source says what it is."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        digest.update(key.encode() + np.ascontiguousarray(arrays[key]).tobytes())
    return Trigger(kind, arrays, digest.hexdigest(), label)


def blend(geo: Geometry, mask: np.ndarray, pattern: np.ndarray, label: str) -> Trigger:
    return made("blend", {"mask": geo.to_sample(mask.astype(np.float32)),
                          "pattern": geo.to_sample(pattern.astype(np.float32))}, label)


def patch_triggers(geo: Geometry, low: float, high: float) -> Iterator[tuple[dict, Trigger]]:
    size = max(2, round(min(geo.height, geo.width) / 9))
    step = max(1, size // 2)
    cells = np.indices((size, size)).sum(axis=0) % 2
    patterns = {"white": np.ones((size, size)), "black": np.zeros((size, size)),
                "checker": cells, "checker2": 1 - cells}
    for top in range(0, geo.height - size + 1, step):
        for left in range(0, geo.width - size + 1, step):
            for name, cells_on in patterns.items():
                yield ({"family": "patch", "top": top, "left": left, "size": size,
                        "cells": cells_on.astype(int).tolist(), "pattern": name},
                       patch(geo, top, left, cells_on, low, high))


def patch(geo: Geometry, top: int, left: int, cells: np.ndarray, low: float,
          high: float) -> Trigger:
    size = len(cells)
    mask = np.zeros((geo.height, geo.width))
    pattern = np.full((geo.height, geo.width), low)
    mask[top:top + size, left:left + size] = 1.0
    pattern[top:top + size, left:left + size] = np.where(cells > 0, high, low)
    return blend(geo, mask, pattern, f"patch {size}x{size} at ({top}, {left})")


def global_triggers(geo: Geometry, low: float, high: float) -> Iterator[tuple[dict, Trigger]]:
    for seed in NOISE_SEEDS:
        noise = np.random.default_rng(seed).uniform(low, high, (geo.height, geo.width))
        for ratio in BLEND_RATIOS:
            yield ({"family": "blend", "seed": seed, "ratio": ratio},
                   blend(geo, np.full((geo.height, geo.width), ratio), noise,
                         f"noise blend {ratio}"))
    for axis in (0, 1):
        length = geo.width if axis == 1 else geo.height
        for frequency in WAVE_FREQUENCIES:
            wave = np.sin(2 * np.pi * np.arange(length) * frequency / length)
            image = np.broadcast_to(wave if axis == 1 else wave[:, None],
                                    (geo.height, geo.width))
            for amplitude in WAVE_AMPLITUDES:
                delta = (amplitude * (high - low) * image).astype(np.float32)
                label = f"wave f={frequency} along {'columns' if axis else 'rows'}"
                yield ({"family": "wave", "axis": axis, "frequency": frequency,
                        "amplitude": amplitude},
                       made("delta", {"delta": geo.to_sample(delta),
                                      "clip_min": np.float32(low),
                                      "clip_max": np.float32(high)}, label))


@dataclass
class Found:
    """The strongest reconstructed trigger for one class, and the runners-up."""
    target: int
    flip_rate: float       # share of probe samples not already in the class sent there
    params: dict
    trigger: Trigger
    others: list = field(default_factory=list)   # [(flip rate, Trigger)], strongest first

    def strong(self, level: float, most: int = 4) -> list[Trigger]:
        """This trigger and the runners-up that reach ``level`` too (at most ``most``)."""
        return [self.trigger] + [t for rate, t in self.others if rate >= level][:most - 1]


def flip_rates(runner: Runner, output: str, probe: np.ndarray, base: np.ndarray,
               trigger: Trigger, n_classes: int) -> np.ndarray:
    """(classes,): per class, the share of probe samples outside it that the trigger sends
    into it."""
    predicted = scores(runner, trigger.apply(probe), output, len(probe)).argmax(1)
    rates = np.zeros(n_classes)
    for cls in range(n_classes):
        outside = base != cls
        rates[cls] = (predicted[outside] == cls).mean() if outside.any() else 0.0
    return rates


def search(runner: Runner, output: str, probe: np.ndarray, seed: int = 0) -> list[Found]:
    """The best trigger per class over every family, patches refined by local search."""
    base = scores(runner, probe, output, len(probe)).argmax(1)
    n_classes = int(scores(runner, probe[:1], output, 1).shape[1])
    geo = geometry(probe.shape[1:])
    low, high = float(np.min(probe)), float(np.max(probe))
    best: dict[int, Found] = {}
    for source in (patch_triggers(geo, low, high), global_triggers(geo, low, high)):
        for params, trigger in source:
            rates = flip_rates(runner, output, probe, base, trigger, n_classes)
            _keep_best(best, rates, params, trigger)
    for found in list(best.values()):
        if found.params["family"] == "patch":
            _keep_best_found(best, refine(runner, output, probe, base, found, geo, low, high,
                                          n_classes, np.random.default_rng(seed)))
    return [best[cls] for cls in sorted(best)]


def _keep_best(best: dict, rates: np.ndarray, params: dict, trigger: Trigger) -> None:
    for cls, rate in enumerate(rates):
        if cls not in best:
            best[cls] = Found(cls, float(rate), params, trigger)
        elif rate > best[cls].flip_rate:
            old = best[cls]
            best[cls] = Found(cls, float(rate), params, trigger,
                              [(old.flip_rate, old.trigger)] + old.others[:RUNNERS_UP - 1])
        elif len(best[cls].others) < RUNNERS_UP or rate > best[cls].others[-1][0]:
            others = sorted(best[cls].others + [(float(rate), trigger)], key=lambda o: -o[0])
            best[cls].others = others[:RUNNERS_UP]


def _keep_best_found(best: dict, found: "Found") -> None:
    old = best[found.target]
    if found.flip_rate > old.flip_rate:
        found.others = [(old.flip_rate, old.trigger)] + old.others[:RUNNERS_UP - 1]
        best[found.target] = found


def refine(runner, output, probe, base, found: Found, geo: Geometry, low, high, n_classes,
           rng) -> Found:
    """Local search on a patch: flip one cell or move one pixel, keep what flips more."""
    params = dict(found.params)
    cells = np.array(params["cells"])
    top, left, size = params["top"], params["left"], params["size"]
    rate = found.flip_rate
    current = found
    for _ in range(REFINE_STEPS):
        new_cells, new_top, new_left = cells.copy(), top, left
        if rng.random() < 0.5:
            i, j = rng.integers(size, size=2)
            new_cells[i, j] = 1 - new_cells[i, j]
        else:
            new_top = int(np.clip(top + rng.integers(-1, 2), 0, geo.height - size))
            new_left = int(np.clip(left + rng.integers(-1, 2), 0, geo.width - size))
        trigger = patch(geo, new_top, new_left, new_cells, low, high)
        new_rate = flip_rates(runner, output, probe, base, trigger, n_classes)[found.target]
        if new_rate >= rate:
            cells, top, left, rate = new_cells, new_top, new_left, float(new_rate)
            params.update(top=top, left=left, cells=cells.astype(int).tolist(),
                          pattern="refined")
            current = Found(found.target, rate, dict(params), trigger)
    return current


# ------------------------------------------------------------------ blend refinement
BLEND_STEPS = 30          # ascent steps
BLEND_PAIRS = 20          # antithetic perturbation pairs per step
BLEND_SIGMA = 0.1         # perturbation size, relative to the input range
BLEND_STEP = 0.05         # largest change of one pixel per step, relative to the range


def refine_blend(runner: Runner, output: str, probe: np.ndarray, trigger: Trigger,
                 target: int, level: float, seed: int = 0) -> Trigger:
    """A blend's noise pattern pushed toward what the backdoor responds to most.

    A natural-evolution-strategy ascent (antithetic Gaussian perturbations, ONNX Runtime
    only) on the mean probability of the target class over probe samples outside it. It runs
    at half the blend ratio, where the backdoor does not yet answer every sample, so the
    probabilities still move. The refined pattern is returned at the weakest ratio that still
    sends ``level`` of those samples to the target: the smallest trigger of its kind, as close
    to the backdoor's own boundary as the search gets.
    """
    from .calibrate import softmax
    geo = geometry(probe.shape[1:])
    low, high = float(np.min(probe)), float(np.max(probe))
    ratio = float(np.max(trigger.arrays["mask"]))
    outside = probe[scores(runner, probe, output, len(probe)).argmax(1) != target]
    if len(outside) == 0:
        return trigger
    weak = np.full((geo.height, geo.width), ratio / 2)

    def pull(pattern: np.ndarray) -> float:
        triggered = blend(geo, weak, pattern, "").apply(outside)
        return float(softmax(scores(runner, triggered, output, len(outside)))[:, target].mean())

    rng = np.random.default_rng(seed)
    pattern = np.asarray(trigger.arrays["pattern"], np.float64).reshape(geo.height, geo.width)
    sigma, step = BLEND_SIGMA * (high - low), BLEND_STEP * (high - low)
    for _ in range(BLEND_STEPS):
        gradient = np.zeros_like(pattern)
        for _ in range(BLEND_PAIRS):
            direction = rng.normal(size=pattern.shape)
            gradient += direction * (pull(np.clip(pattern + sigma * direction, low, high))
                                     - pull(np.clip(pattern - sigma * direction, low, high)))
        largest = np.abs(gradient).max()
        if largest == 0:
            break
        pattern = np.clip(pattern + step * gradient / largest, low, high)
    def flips(strength: float) -> float:
        triggered = blend(geo, np.full_like(pattern, strength), pattern, "").apply(outside)
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
