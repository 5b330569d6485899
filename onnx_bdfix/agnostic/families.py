"""The families of small triggers the search tries, each a generator of (parameters, trigger):

- patches: small squares (about 1/9 of the side) at a grid of positions, white, black or
  checkered;
- blends: x' = (1 − a)·x + a·noise, a ≤ 0.25, several fixed noise images;
- waves: x' = clip(x + A·sin(2π f u)), A ≤ 0.15 of the range, u along rows or columns.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..data import Trigger
from .geometry import Domain, Geometry, blend, made, patch

NOISE_SEEDS = tuple(range(11, 19))
BLEND_RATIOS = (0.15, 0.25)
WAVE_FREQUENCIES = (3, 4, 5, 6, 7, 8, 10)
WAVE_AMPLITUDES = (0.08, 0.15)


def patch_triggers(geo: Geometry, span: Domain) -> Iterator[tuple[dict, Trigger]]:
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
                       patch(geo, top, left, cells_on, span))


def global_triggers(geo: Geometry, span: Domain) -> Iterator[tuple[dict, Trigger]]:
    """Noise blends and waves, each channel within its own range."""
    grey = geo.channels == 1
    low, high = span.low[:, None, None], span.high[:, None, None]
    for seed in NOISE_SEEDS:
        noise = np.random.default_rng(seed).uniform(
            low[0, 0, 0] if grey else low, high[0, 0, 0] if grey else high,
            (geo.height, geo.width) if grey else (geo.channels, geo.height, geo.width))
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
                delta = (amplitude * (high - low) * image).astype(np.float32)   # (C, H, W)
                label = f"wave f={frequency} along {'columns' if axis else 'rows'}"
                yield ({"family": "wave", "axis": axis, "frequency": frequency,
                        "amplitude": amplitude},
                       made("delta", {"delta": geo.to_sample(delta[0] if grey else delta),
                                      "clip_min": geo.per_channel(span.low),
                                      "clip_max": geo.per_channel(span.high)}, label))
