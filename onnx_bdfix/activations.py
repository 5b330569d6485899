"""Activation profile: expose every intermediate tensor on a probe batch and summarize it.

For each float tensor: its shape, mean |value|, the share of exact zeros (dead units after a
ReLU), and, with triggered copies, how far the triggered activations part from the clean
ones (‖ã − a‖² / ‖a‖², summed over the probe). The layer choice uses the same divergence,
measured on the keys of the editable layers.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .model.expose import expose
from .model.index import index_of
from .model.runtime import open_runner
from .repair.layers import find_layers

PROBE = 64


@dataclass
class TensorProfile:
    name: str
    made_by: str                 # op type of the node that writes it
    shape: list[int]             # one sample's shape
    mean_abs: float
    zero_share: float
    divergence: float | None     # triggered vs clean, when triggered copies are given
    key_of: list[str]            # editable layers that read it as their keys

    def as_dict(self) -> dict:
        return asdict(self)


def profile(model, clean_x: np.ndarray, triggered_x: np.ndarray | None = None,
            probe: int = PROBE, device: str = "auto") -> list[TensorProfile]:
    """Per-tensor figures on the first ``probe`` samples, in graph order (``model``: a
    loaded model, its index or a proto)."""
    index = index_of(model)
    names = index.intermediate_tensors()
    runner = open_runner(expose(index.proto, names), device)
    count = min(probe, len(clean_x))
    batch = clean_x[:count] if triggered_x is None else \
        np.concatenate([clean_x[:count], triggered_x[:count]])
    values = dict(zip(names, runner.run(batch, names)))
    readers: dict[str, list[str]] = {}
    for layer in find_layers(index):
        readers.setdefault(layer.key_tensor, []).append(layer.name)
    return [_summarize(name, _op(index, name), values[name], count,
                       triggered_x is not None, readers.get(name, []))
            for name in names if _is_per_sample(values[name], len(batch))]


def _op(index, name: str) -> str:
    node = index.producers.get(name)
    return node.op_type if node is not None else ""


def _is_per_sample(value: np.ndarray, rows: int) -> bool:
    return np.issubdtype(value.dtype, np.floating) and value.ndim >= 1 and len(value) == rows


def _summarize(name, op, value, count, with_triggered, key_of) -> TensorProfile:
    clean = value[:count].astype(np.float64)
    divergence = None
    if with_triggered:
        moved = float(((value[count:] - clean) ** 2).sum())
        energy = float((clean ** 2).sum())
        divergence = moved / energy if energy > 0 else 0.0
    return TensorProfile(name, op, list(clean.shape[1:]), float(np.abs(clean).mean()),
                         float((clean == 0).mean()), divergence, key_of)
