"""Activation profile: expose every intermediate tensor on a probe batch and summarize it.

For each float tensor: its shape, mean |value|, the share of exact zeros (dead units after a
ReLU), and, with triggered copies, how far the triggered activations part from the clean
ones (‖ã − a‖² / ‖a‖², summed over the probe). The layer choice uses the same divergence,
measured on the keys of the editable layers.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx

from .collect import open_runner
from .graph import expose, intermediate_tensors
from .layers import find_layers

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


def profile(proto: onnx.ModelProto, clean_x: np.ndarray, triggered_x: np.ndarray | None = None,
            probe: int = PROBE, device: str = "auto") -> list[TensorProfile]:
    """Per-tensor figures on the first ``probe`` samples, in graph order."""
    names = intermediate_tensors(proto)
    runner = open_runner(expose(proto, names), device)
    count = min(probe, len(clean_x))
    batch = clean_x[:count] if triggered_x is None else \
        np.concatenate([clean_x[:count], triggered_x[:count]])
    values = dict(zip(names, runner.run(batch, names)))
    made_by = {out: node.op_type for node in proto.graph.node for out in node.output}
    readers: dict[str, list[str]] = {}
    for layer in find_layers(proto):
        readers.setdefault(layer.key_tensor, []).append(layer.name)
    return [_summarize(name, made_by.get(name, ""), values[name], count,
                       triggered_x is not None, readers.get(name, []))
            for name in names if _is_per_sample(values[name], len(batch))]


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
