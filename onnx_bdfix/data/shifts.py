"""Shifted copies of a few clean samples: each image moved one pixel up, down, left and right
(edges repeated), so that a repair fitted on a hundred samples sees its trigger on more
than a hundred contents.

A known trigger is applied to the copies as to the samples (a patch stays where the
attacker put it; the garment under it moves); triggered copies given as files are shifted
with their clean ones. The copies of a sample stay in its cross-validation fold
(:func:`onnx_bdfix.repair.plan.fold_order`), so a held-out fold never holds a copy of a
sample another fold was fitted on.

Why: the edit is a least-squares fit on a hundred samples' keys. Measured on the zoo
(known trigger, 100 samples, 3,000 unseen test images; docs/benchmark-stop28.md), the
copies took vit_badnets_norm slice 3 from 2.7 % to 0.7 % attack success,
preact18_blended_noise slice 3 from 4.1 % to 1.6 % and vgg11_blended_noise slice 4 from
3.8 % to 1.3 %, clean accuracy within 0.3 points; 19 of 42 backdoored zoo models within
every criterion of issue 11, 15 without.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .dataset import Dataset
from .layout import spatial_axes

SHIFTS = ((1, 0), (-1, 0), (0, 1), (0, -1))     # (rows down, columns right)
MAX_ROWS = 512                                   # samples and copies together, at most


def copy_count(samples: int, sample_shape: tuple, wanted: int | None) -> int:
    """How many shifted copies of each sample to add: ``wanted`` (None: as many as
    :data:`SHIFTS` holds while samples and copies stay within :data:`MAX_ROWS`; a set of
    more than half that gets none), 0 where a sample holds no image with channels first
    or last, or is smaller than 8 × 8."""
    axes = spatial_axes(sample_shape)
    if axes is None or min(sample_shape[axis] for axis in axes) < 8:
        return 0
    if wanted is None:
        wanted = MAX_ROWS // max(samples, 1) - 1
    return int(np.clip(wanted, 0, len(SHIFTS)))


def shifted(images: np.ndarray, axes: tuple[int, int], down: int, right: int) -> np.ndarray:
    """``images`` (N, *sample_shape) moved ``down`` rows and ``right`` columns along the
    sample's ``axes``; the edge rows and columns fill what is uncovered."""
    pad = [(0, 0)] * images.ndim
    pad[axes[0] + 1] = (abs(down), abs(down))
    pad[axes[1] + 1] = (abs(right), abs(right))
    padded = np.pad(images, pad, mode="edge")
    window = [slice(None)] * images.ndim
    for axis, step in zip(axes, (down, right)):
        size = images.shape[axis + 1]
        window[axis + 1] = slice(abs(step) - step, abs(step) - step + size)
    return padded[tuple(window)]


def with_copies(dataset: Dataset, copies: int) -> Dataset:
    """``dataset`` followed by ``copies`` shifted copies of every sample, copy by copy:
    row ``c·N + i`` is sample i moved by ``SHIFTS[c - 1]`` (row i itself for c = 0).
    Labels are repeated; the digest and source stay the original's."""
    if copies <= 0:
        return dataset
    axes = spatial_axes(dataset.raw.shape[1:])
    raw = np.asarray(dataset.raw)
    moved = [shifted(raw, axes, *SHIFTS[number]) for number in range(copies)]
    labels = None if dataset.y is None else np.tile(dataset.y, copies + 1)
    return replace(dataset, raw=np.concatenate([raw, *moved]), y=labels)
