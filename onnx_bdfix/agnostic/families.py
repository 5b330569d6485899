"""The families of small triggers the search tries, each a generator of (parameters, trigger):

- patches: small squares (about 1/9 of the side) at a grid of positions, white, black or
  checkered (on colour input, white or black); then a few random colourings (one bit per
  channel and cell, on a square 1.5 times the menu patch's side: :data:`COLOUR_SIZE`) at
  each position, scored on a smaller probe (:data:`COLOUR_PROBE`) for how much they pull
  each class: a multi-colour patch (TrojanNN's optimized one, a BadNets
  patch whose channels differ) answers to no single colour, but partly to random ones in
  its place (measured on vgg11_trojannn: 32 random colourings at its position pulled its
  target to 0.31–0.46, while every white, black or checkered patch anywhere pulled it at
  most 0.13). On one-channel input they are random grey bits, for the same reason: a
  patch of random bits answers to its own pattern in place, where a solid or checkered
  square elsewhere may answer to its texture (measured on the zoo's
  pairs_keras_badnets_b, a 3×3 patch of random bits: every white, black or checkered patch
  at its place sent at most 8 % of the probe into its target, a checkered one elsewhere
  47 %; the random grey bits that pulled it most, on three draws, pulled it to 0.70–0.98,
  and the scan then named it at 100 %, where it had called the model clean);
- blends: x' = (1 − a)·x + a·noise, a ≤ 0.25, several fixed noise images;
- waves: x' = clip(x + A·sin(2π f u)), A ≤ 0.15 of the range, u along rows or columns.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..data import Trigger
from ..data.layout import Geometry
from .geometry import Domain, blend, made, patch

NOISE_SEEDS = tuple(range(11, 19))
BLEND_RATIOS = (0.15, 0.25)
COLOURINGS = 8          # random colourings per position, colour input
COLOUR_SIZE = 1.5       # their side, over the menu patch's
COLOUR_PROBE = 16       # probe samples a random colouring is scored on
WAVE_FREQUENCIES = (3, 4, 5, 6, 7, 8, 10)
WAVE_AMPLITUDES = (0.08, 0.15)


def patch_side(geo: Geometry) -> int:
    return max(2, round(min(geo.height, geo.width) / 9))


def positions(geo: Geometry, size: int | None = None) -> Iterator[tuple[int, int]]:
    """(top, left) of every menu patch (of side ``size``, default the menu's): a grid at
    half the menu patch's side, rounded up, and the last row and column flush with the
    edge. Rounded down, a 3-pixel patch stepped by one pixel: on 28×28 input the patches
    took 173k of the 200k evaluations, and the optimized families starved (gray_cnn_lf's
    colour field); refinement moves a patch by single pixels anyway."""
    step = -(-patch_side(geo) // 2)
    size = size or patch_side(geo)
    for top in _grid(geo.height - size, step):
        for left in _grid(geo.width - size, step):
            yield top, left


def _grid(last: int, step: int) -> list[int]:
    """0, step, 2·step, ... and ``last`` itself."""
    return sorted(set(range(0, last + 1, step)) | {last})


def patch_triggers(geo: Geometry, span: Domain) -> Iterator[tuple[dict, Trigger]]:
    """White, black and (on one-channel input) checkered patches at every position."""
    size = patch_side(geo)
    cells = np.indices((size, size)).sum(axis=0) % 2
    patterns = {"white": np.ones((size, size)), "black": np.zeros((size, size))}
    if geo.channels == 1:
        patterns.update(checker=cells, checker2=1 - cells)
    for top, left in positions(geo):
        for name, cells_on in patterns.items():
            yield _patch_entry(geo, span, top, left, cells_on, name)


def pull_patch_triggers(geo: Geometry, span: Domain, seed: int = 0
                        ) -> Iterator[tuple[dict, Trigger]]:
    """The patches scored for their pulls only: random colourings (C, size, size) of one
    bit per channel and cell at every position (random grey bits on one-channel input)."""
    rng = np.random.default_rng(seed)
    size = round(COLOUR_SIZE * patch_side(geo))
    name = "colour" if geo.channels > 1 else "grey bits"
    for top, left in positions(geo, size):
        for _ in range(COLOURINGS):
            yield _patch_entry(geo, span, top, left,
                               rng.integers(0, 2, (geo.channels, size, size)), name)


def _patch_entry(geo, span, top, left, cells_on, name) -> tuple[dict, Trigger]:
    return ({"family": "patch", "top": top, "left": left, "size": np.shape(cells_on)[-1],
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
