"""Zeroth-order ascent with ONNX Runtime queries alone: antithetic natural-evolution-strategy
gradient estimates (as B3D reconstructs triggers without gradients).

Each step draws ``pairs`` Gaussian directions d and estimates the gradient as
Σ d · (f(θ + σd) − f(θ − σd)); the step moves every parameter by at most ``step``, in the
direction of that estimate (a sign-like, scale-free update that needs no learning-rate tuning
across models and input scales).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np


def nes_step(objective: Callable[[np.ndarray], float], theta: np.ndarray, pairs: int,
             sigma, step, rng: np.random.Generator,
             clip: tuple | None = None) -> np.ndarray:
    """θ after one ascent step (``sigma`` and ``step`` may be arrays broadcasting to θ;
    ``clip``: (low, high) bounds every evaluated and returned θ stays inside)."""
    def bounded(values: np.ndarray) -> np.ndarray:
        return values if clip is None else np.clip(values, *clip)
    gradient = np.zeros_like(theta)
    for _ in range(pairs):
        direction = rng.normal(size=theta.shape)
        gradient += direction * (objective(bounded(theta + sigma * direction))
                                 - objective(bounded(theta - sigma * direction)))
    largest = float(np.abs(gradient).max())
    if largest == 0.0:
        return theta
    return bounded(theta + step * gradient / largest)
