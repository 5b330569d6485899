"""One streamed pass of ONNX Runtime over the samples, into the sums the solve needs.

Each sample's clean and triggered copies run once, in one batch, through a copy of the model
that exposes every candidate layer's key tensor. Samples are ordered by fold: fold f holds
rows fold_bounds[f]:fold_bounds[f + 1]. The pass leaves per-fold key statistics, the class
scores, the clean keys of the samples ``mark`` picks (``marked``), and the key activations
of the first ``keep_per_fold`` rows of each fold (``kept``) for held-out scoring: memory
grows with that cap and the batch, not with the number of samples.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx

from ..errors import DataError
from ..model.expose import expose
from ..model.runtime import (
    Progress,
    batch_slices,
    check_finite,
    open_runner,
    per_sample,
)
from .keys import keys, split_samples
from .stats import KeyStats


@dataclass
class Collected:
    """What one pass over the samples leaves behind: key statistics and class scores."""
    stats: dict          # layer name -> [KeyStats per fold]
    clean_scores: np.ndarray               # (N, classes), original model
    triggered_scores: np.ndarray | None    # (N, classes), original model
    marked: dict | None = None             # layer name -> [KeyStats per fold], marked samples
    kept: dict | None = None               # key tensor -> [(clean, triggered) per fold]
    kept_rows: list | None = None          # [row indices per fold] of the kept activations


# (clean scores, triggered scores) of a batch -> which samples to mark, or None for none
Marker = Callable[[np.ndarray, np.ndarray | None], np.ndarray | None]


@dataclass
class _Fold:
    """The running sums and kept activations of one fold."""
    stats: dict
    marked: dict
    kept: dict = field(default_factory=dict)     # key tensor -> ([clean], [triggered])


def collect_statistics(model: onnx.ModelProto, layers: list, clean_x, triggered_x,
                       fold_bounds: list[int], output: str, device: str, batch_size: int,
                       progress: Progress | None = None, stage: str = "collecting",
                       mark: Marker | None = None, keep_per_fold: int = 0,
                       inferred: onnx.ModelProto | None = None) -> Collected:
    """``clean_x``, ``triggered_x``: rows (N, ...) in fold order; ``triggered_x`` may be None.
    """
    key_names = list(dict.fromkeys(layer.key_tensor for layer in layers))
    skip_names = [layer.merge_skip for layer in layers if layer.merge]
    exposed = list(dict.fromkeys(key_names + skip_names))
    runner = open_runner(expose(model, [output] + exposed, inferred), device, "all")
    # a Gemm with transA reads its input batch-last: such tensors are not kept (held-out
    # scoring then runs the whole model)
    batch_last = {layer.key_tensor for layer in layers
                  if layer.op == "Gemm" and layer.attrs.get("transA", 0)}
    kept_names = [name for name in key_names if name not in batch_last]
    keep = keep_per_fold if triggered_x is not None else 0
    result = Collected({layer.name: [] for layer in layers}, [], [],
                       {layer.name: [] for layer in layers} if mark else None,
                       {name: [] for name in kept_names} if keep else None,
                       [] if keep else None)
    for fold in range(len(fold_bounds) - 1):
        rows = range(fold_bounds[fold], fold_bounds[fold + 1])
        sums = _Fold({layer.name: KeyStats(layer.groups, layer.key_dim, triggered_x is not None)
                      for layer in layers},
                     {layer.name: KeyStats(layer.groups, layer.key_dim, False) for layer in layers},
                     {name: ([], []) for name in kept_names})
        for part in batch_slices(len(rows), batch_size):
            batch_rows = slice(rows.start + part.start, rows.start + part.stop)
            _one_batch(runner, layers, exposed, output, clean_x, triggered_x, batch_rows,
                       sums, result, mark, max(0, min(part.stop, keep) - part.start))
            if progress:
                progress(stage, batch_rows.stop, len(clean_x))
        _close_fold(layers, sums, result, rows, keep)
    result.clean_scores = _stacked(result.clean_scores)
    result.triggered_scores = _stacked(result.triggered_scores)
    return result


def _one_batch(runner, layers, key_names, output, clean_x, triggered_x, rows: slice,
               sums: _Fold, result: Collected, mark, keep: int) -> None:
    """Run one batch (clean, then triggered copies) and add it to the fold's sums."""
    size = rows.stop - rows.start
    batch = clean_x[rows] if triggered_x is None else \
        np.concatenate([clean_x[rows], triggered_x[rows]])
    wanted = [output] + key_names
    values = dict(zip(wanted, runner.run(batch, wanted)))
    check_finite({name: values[name] for name in key_names})       # scores: per_sample
    scores = per_sample(values[output], len(batch), output)         # (batch, classes)
    clean_scores = scores[:size]
    triggered_scores = scores[size:] if triggered_x is not None else None
    result.clean_scores.append(clean_scores)
    if triggered_scores is not None:
        result.triggered_scores.append(triggered_scores)
    chosen = mark(clean_scores, triggered_scores) if mark else None
    _accumulate(layers, values, size, triggered_x is not None, sums, chosen)
    for name, (clean_parts, triggered_parts) in sums.kept.items():
        if keep > 0:
            clean_parts.append(values[name][:keep])
            triggered_parts.append(values[name][size:size + keep])


def _accumulate(layers: list, values: dict, size: int, with_triggered: bool, sums: _Fold,
                chosen: np.ndarray | None) -> None:
    """Keys of one batch into the sums; ``chosen`` samples' clean keys also into marked."""
    ones = np.ones(size, np.float32)
    for layer in layers:
        clean_part, triggered_part = split_samples(layer, values[layer.key_tensor], size)
        clean_keys = keys(layer, clean_part)                          # (groups, n_keys, d)
        triggered_keys = keys(layer, triggered_part) if with_triggered else None
        change = skip_change(layer, values, size) if layer.merge and with_triggered else None
        sums.stats[layer.name].add(clean_keys, triggered_keys, ones, change)
        if chosen is not None and chosen.any():
            sums.marked[layer.name].add(clean_keys, None, chosen.astype(np.float32))


def skip_change(layer, values: dict, size: int) -> np.ndarray:
    """s − s̃ at the merge, one row per key location: (1, n_keys, m), in the layer's own
    output layout and scale (back through a Transpose and a layer scale on the way)."""
    skip = np.asarray(values[layer.merge_skip], np.float32)
    if layer.merge_perm:                                        # the merge's layout -> the layer's
        skip = np.transpose(skip, np.argsort(layer.merge_perm))
    if layer.op == "Conv":                                      # (N, C, H, W) -> (N·H·W, C)
        skip = np.moveaxis(skip, 1, -1)
    rows = skip.reshape(-1, skip.shape[-1])
    half = len(rows) // 2
    change = rows[:half] - rows[half:]                          # (n_keys, m)
    if layer.merge_scale is not None:                           # y·scale + s: y answers for /scale
        change = change / layer.merge_scale.astype(np.float32)
    return change[None]


def _close_fold(layers: list, sums: _Fold, result: Collected, rows: range, keep: int) -> None:
    """Check the fold's sums and move them, and its kept activations, into the result."""
    for layer in layers:
        if not sums.stats[layer.name].finite():
            raise DataError(f"the key sums of layer {layer.name!r} overflow on these "
                            "samples: are they in the model's input scale (see 'scale' "
                            "and 'offset' in the data file)?")
        result.stats[layer.name].append(sums.stats[layer.name])
        if result.marked is not None:
            result.marked[layer.name].append(sums.marked[layer.name])
    if result.kept is not None:
        result.kept_rows.append(np.arange(rows.start, rows.start + min(keep, len(rows))))
        for name, parts in sums.kept.items():
            result.kept[name].append(tuple(np.concatenate(p) for p in parts))


def _stacked(parts: list) -> np.ndarray | None:
    return np.concatenate(parts).astype(np.float32) if parts else None
