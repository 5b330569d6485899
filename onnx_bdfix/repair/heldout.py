"""Held-out scoring of candidate edits, on the part of the network after the edited layers.

The collect pass keeps the key activations of a capped number of samples per fold. A
candidate edit is scored by running only the tail of the graph, from those key tensors to
the class scores, with the edited weights: the layers before the edit are not run again. Where
no clean tail can be cut (a path bypasses the keys), the whole edited model runs on the kept
samples instead.
"""
from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx.utils

from ..model.expose import with_inferred_shapes
from ..model.index import GraphIndex
from ..model.runtime import Runner, batch_slices, open_runner, scores

log = logging.getLogger(__name__)


class HeldOut:
    """Scores of edited models on the kept rows of each fold: (clean, triggered)."""

    def __init__(self, proto: onnx.ModelProto, output: str, kept: dict, rows: list[np.ndarray],
                 clean_x: np.ndarray, triggered_x: np.ndarray, device: str, batch_size: int,
                 inferred: onnx.ModelProto | None = None):
        self.proto, self.output, self.kept, self.rows = proto, output, kept, rows
        self.clean_x, self.triggered_x = clean_x, triggered_x
        self.device, self.batch_size = device, batch_size
        self._tails: dict[tuple, onnx.ModelProto | None] = {}
        self._extractor = None
        self._inferred = inferred           # ``proto`` with its shapes inferred, if known

    def tail(self, key_tensors: tuple[str, ...]) -> onnx.ModelProto | None:
        """The graph from ``key_tensors`` to the scores, or None when it needs other inputs."""
        if key_tensors not in self._tails:
            self._tails[key_tensors] = self._cut(list(key_tensors))
        return self._tails[key_tensors]

    def _cut(self, key_tensors: list[str]) -> onnx.ModelProto | None:
        inputs = {value.name for value in GraphIndex(self.proto).inputs}
        if any(name in inputs for name in key_tensors) \
                or any(name not in self.kept for name in key_tensors):
            return None
        try:
            if self._extractor is None:
                self._extractor = onnx.utils.Extractor(
                    self._inferred if self._inferred is not None
                    else with_inferred_shapes(self.proto))
            tail = self._extractor.extract_model(key_tensors, [self.output])
        except Exception as exc:  # noqa: BLE001 - any failure means: run the whole model
            log.debug("no tail from %s: %s", key_tensors, exc)
            return None
        index = GraphIndex(tail)
        needed = {value.name for value in index.inputs}
        known = needed | set(index.initializers) | set(index.producers)
        unfed = {name for node in tail.graph.node for name in node.input if name} - known
        return tail if needed <= set(key_tensors) and not unfed else None

    def scores(self, edited: onnx.ModelProto, key_tensors: tuple[str, ...],
               fold: int, whole: bool) -> tuple[np.ndarray, np.ndarray]:
        """Clean and triggered scores of the kept rows of ``fold`` under ``edited``: the
        whole edited model (``whole``), or the tail that :meth:`tail` gave, edited."""
        runner = open_runner(edited, self.device)
        rows = self.rows[fold]
        if whole:
            return (scores(runner, self.clean_x[rows], self.output, self.batch_size),
                    scores(runner, self.triggered_x[rows], self.output, self.batch_size))
        return tuple(self._run_tail(runner, key_tensors, fold, part) for part in (0, 1))

    def _run_tail(self, runner: Runner, key_tensors, fold: int, part: int) -> np.ndarray:
        arrays = {name: self.kept[name][fold][part] for name in key_tensors}
        count = len(next(iter(arrays.values())))
        out = []
        for piece in batch_slices(count, self.batch_size):
            feed = {name: value[piece] for name, value in arrays.items()}
            out.append(np.asarray(runner.run_feed(feed, [self.output])[0], np.float32))
        return np.concatenate(out).reshape(count, -1)
