"""Triggers in the model's input layout and scale.

- blend:  x' = (1 − mask)·x + mask·pattern      (``mask`` and ``pattern``; BadNets, Blended)
- delta:  x' = clip(x + delta, clip_min, clip_max)   (``delta``; SIG-like; the bounds are
  numbers, or per channel for a model that takes normalized input)
- warp:   x'(i, j) = x(i + dy, j + dx), a smooth flow (``flow`` (2, H, W), in pixels):
  reconstructed by the scan (WaNet-like); a user gives warps as triggered copies
- or triggered copies of the samples, in the same order (warps, sample-specific triggers).

A trigger file may also say which class it sends samples to (``target_class``, one integer);
repair, evaluate and gate use it unless ``--target-class`` is given.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, TriggerError
from ..host import existing, file_sha256
from ..model.signature import model_input
from .dataset import Dataset, all_finite, scale_and_offset
from .npz import read_npz, read_npz_x
from .warp import warp_samples


@dataclass
class Trigger:
    kind: str                       # "blend", "delta" or "warp"
    arrays: dict[str, np.ndarray]   # each broadcastable to one sample
    sha256: str
    source: str
    target_class: int | None = None     # the class it sends samples to, when the file says

    def apply(self, x: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
        """Triggered copies of ``x`` (N, *sample_shape); ``index`` is ignored."""
        if self.kind == "blend":
            mask, pattern = self.arrays["mask"], self.arrays["pattern"]
            return ((1 - mask) * x + mask * pattern).astype(np.float32)
        if self.kind == "warp":
            return warp_samples(np.asarray(x, np.float32), self.arrays["flow"])
        low = self.arrays.get("clip_min", -np.inf)
        high = self.arrays.get("clip_max", np.inf)
        return np.clip(x + self.arrays["delta"], low, high).astype(np.float32)


@dataclass
class TriggerSet:
    """Several triggers of one backdoor, taken in turn: sample i gets trigger i mod k, or
    ``turns[i]`` when set (see :meth:`by_fold`)."""
    triggers: list[Trigger]
    turns: np.ndarray | None = None      # (N,) trigger number of each sample

    def by_fold(self, order: np.ndarray, bounds: list[int]) -> "TriggerSet":
        """The same triggers dealt out by fold: fold f's samples take, in turn, triggers
        f, f + folds, f + 2·folds, ... (trigger f mod k when there are fewer triggers than
        folds). With at least as many triggers as folds, each fold's held-out samples carry
        triggers the other folds never saw, so cross-validation measures how an edit carries
        over to new instances of the backdoor's trigger."""
        folds, count = len(bounds) - 1, len(self.triggers)
        turns = np.zeros(len(order), np.int64)
        for fold in range(folds):
            own = np.arange(fold % count, count, folds) if fold < count else [fold % count]
            rows = order[bounds[fold]:bounds[fold + 1]]
            turns[rows] = np.resize(own, len(rows))      # the fold's triggers, in turn
        return TriggerSet(self.triggers, turns)

    @property
    def sha256(self) -> str:
        return hashlib.sha256("".join(t.sha256 for t in self.triggers).encode()).hexdigest()

    @property
    def source(self) -> str:
        return " + ".join(t.source for t in self.triggers)

    def apply(self, x: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
        index = np.arange(len(x)) if index is None else np.asarray(index)
        turn_of = index % len(self.triggers) if self.turns is None else self.turns[index]
        out = np.empty(x.shape, np.float32)
        for turn, trigger in enumerate(self.triggers):
            rows = turn_of == turn
            if rows.any():
                out[rows] = trigger.apply(x[rows])
        return out


def load_trigger(path: str | Path, sample_shape) -> Trigger:
    """Read a trigger .npz and check it against one sample of shape ``sample_shape`` (or of
    the input of ``sample_shape``, given a model)."""
    if not isinstance(sample_shape, (tuple, list)):
        sample_shape = model_input(sample_shape).sample_shape
    path = existing(path, "trigger", TriggerError)
    try:
        stored = read_npz(path, "trigger")
    except DataError as exc:
        raise TriggerError(str(exc)) from exc
    target = _declared_target(path, stored.pop("target_class", None))
    for name, value in stored.items():
        if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
            raise TriggerError(f"trigger {path}: '{name}' has dtype {value.dtype}; use floats")
    arrays = {k: v.astype(np.float32) for k, v in stored.items()}
    if "mask" in arrays and "pattern" in arrays:
        kind, used = "blend", ("mask", "pattern")
    elif "delta" in arrays:
        kind, used = "delta", ("delta", "clip_min", "clip_max")
    else:
        raise TriggerError(f"trigger {path}: needs 'mask' and 'pattern', or 'delta' "
                           f"(found: {', '.join(arrays) or 'nothing'})")
    arrays = {k: v for k, v in arrays.items() if k in used}
    for name, array in arrays.items():
        _check_array(path, name, array, tuple(sample_shape))
    for name in ("clip_min", "clip_max"):
        if name in arrays and arrays[name].size == 1:
            arrays[name] = arrays[name].reshape(())        # one number, whatever its shape
    if kind == "blend" and (arrays["mask"].min() < 0 or arrays["mask"].max() > 1):
        raise TriggerError(f"trigger {path}: 'mask' must lie in [0, 1]")
    if np.any(np.asarray(arrays.get("clip_min", -np.inf)) > arrays.get("clip_max", np.inf)):
        raise TriggerError(f"trigger {path}: 'clip_min' is above 'clip_max'")
    digest = file_sha256(path)
    return Trigger(kind, arrays, digest, str(path), target)


def _declared_target(path: Path, value: np.ndarray | None) -> int | None:
    """The optional ``target_class`` of a trigger file: one non-negative integer."""
    if value is None:
        return None
    if value.size != 1 or not np.issubdtype(value.dtype, np.integer) \
            or int(value.reshape(())) < 0:
        raise TriggerError(f"trigger {path}: 'target_class' must be one non-negative integer, "
                           f"got {value!r}")
    return int(value.reshape(()))


def _check_array(path: Path, name: str, array: np.ndarray, sample_shape: tuple) -> None:
    if not np.isfinite(array).all():
        raise TriggerError(f"trigger {path}: '{name}' holds NaN or Inf")
    if name.startswith("clip_") and array.size == 1:
        return                 # one number; else per channel or per value, like the others
    try:
        fits = np.broadcast_shapes(array.shape, sample_shape) == sample_shape
    except ValueError:
        fits = False
    if not fits:
        raise TriggerError(f"trigger {path}: '{name}' has shape {array.shape}, which does not "
                           f"broadcast to one sample of shape {sample_shape}")


def load_triggered(path: str | Path, clean: Dataset) -> Dataset:
    """Triggered copies of ``clean``'s samples, same order and shape."""
    path = existing(path, "triggered data", TriggerError)
    try:
        raw, arrays = read_npz_x(path, "triggered data")
    except DataError as exc:
        raise TriggerError(str(exc)) from exc
    if raw.shape != clean.raw.shape:
        raise TriggerError(f"triggered data {path}: shape {raw.shape} differs from the clean "
                           f"data's {clean.raw.shape}; it must hold triggered copies of the "
                           "same samples, in the same order")
    if not all_finite(raw):
        raise TriggerError(f"triggered data {path}: 'x' holds NaN or Inf values")
    try:
        scale, offset = scale_and_offset(raw, arrays, path, "triggered data")
    except DataError as exc:
        raise TriggerError(str(exc)) from exc
    return Dataset(raw, clean.y, file_sha256(path), str(path), scale, offset)
