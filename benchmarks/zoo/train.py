"""Poison, train and export one PyTorch zoo model."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from archs_torch import ARCHS, Normalized
from attacks import Attack

log = logging.getLogger("zoo")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def poison_set(x: np.ndarray, y: np.ndarray, attack: Attack | None, target: int, rate: float,
               seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, poisoned row indices): ``rate`` of the non-target samples triggered and
    relabelled; for WaNet and Input-aware as many again transformed in their noise or cross
    mode, keeping their labels."""
    if attack is None or rate == 0:
        return x, y, np.zeros(0, np.int64)
    rng = np.random.default_rng(seed)
    candidates = np.flatnonzero(y != target)
    chosen = rng.choice(candidates, max(1, int(rate * len(x))), replace=False)
    x, y = x.copy(), y.copy()
    x[chosen] = attack.apply(x[chosen], seed)
    y[chosen] = target
    rest = np.setdiff1d(np.arange(len(x)), chosen)
    covered = rng.choice(rest, len(chosen), replace=False)
    cover = attack.cover(x[covered], seed + 1)
    if cover is not None:
        x[covered] = cover
    return x, y, chosen


def convention(x01: np.ndarray, normalize: bool, nhwc: bool) -> np.ndarray:
    """[0, 1] NCHW images in the model's input convention."""
    if normalize:
        channels = x01.shape[1]
        x01 = (x01 - IMAGENET_MEAN[:channels, None, None]) / IMAGENET_STD[:channels, None, None]
    return np.ascontiguousarray(x01.transpose(0, 2, 3, 1) if nhwc else x01, np.float32)


def build_model(arch: str, channels: int, nhwc: bool, seed: int, classes: int = 10
                ) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = ARCHS[arch](channels=channels, classes=classes)
    return Normalized(model, nhwc)


def train(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int,
          lr: float = 2e-3, batch: int = 128, start_epoch: int = 0) -> torch.nn.Module:
    """Adam with cosine decay; ``x`` in the model's input convention."""
    torch.manual_seed(seed)
    x_all, y_all = torch.from_numpy(x), torch.from_numpy(y)
    with torch.no_grad():
        model(x_all[:2])                                   # materialize lazy layers
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    steps = epochs * ((len(x) + batch - 1) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps)
    rng = np.random.default_rng(seed)
    for epoch in range(start_epoch, epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(x)))
        total = 0.0
        for start in range(0, len(order), batch):
            rows = order[start:start + batch]
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x_all[rows]), y_all[rows])
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(rows)
        log.info("  epoch %d/%d loss %.3f", epoch + 1, epochs, total / len(x))
    return model.eval()


def trojan_patch(model: torch.nn.Module, x: np.ndarray, channels: int, side: int, size: int,
                 normalize: bool, nhwc: bool, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """TrojanNN-like: the patch (bottom-right, ``size``×``size``) that most excites the
    penultimate neuron with the largest weights into the classifier, by gradient ascent on a
    (partly trained) model. Returns mask (1, H, W), pattern (C, H, W) in [0, 1], neuron."""
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    neuron = int(head.weight.abs().sum(0).argmax())
    features = {}
    hook = head.register_forward_hook(lambda _, inputs, __: features.update(h=inputs[0]))
    mask = np.zeros((1, side, side), np.float32)
    mask[:, side - size - 1:side - 1, side - size - 1:side - 1] = 1
    torch.manual_seed(seed)
    pattern = torch.rand(1, channels, side, side, requires_grad=True)
    batch = torch.from_numpy(x[:64])
    mask_t = torch.from_numpy(mask)
    optimizer = torch.optim.Adam([pattern], lr=0.05)
    for _ in range(100):
        optimizer.zero_grad()
        triggered = (1 - mask_t) * batch + mask_t * pattern.clamp(0, 1)
        model(_to_model(triggered, normalize, nhwc))
        (-features["h"][:, neuron].mean()).backward()
        optimizer.step()
    hook.remove()
    return mask, pattern.detach().clamp(0, 1).numpy()[0], neuron


def _to_model(x01: torch.Tensor, normalize: bool, nhwc: bool) -> torch.Tensor:
    if normalize:
        channels = x01.shape[1]
        mean = torch.from_numpy(IMAGENET_MEAN[:channels, None, None])
        std = torch.from_numpy(IMAGENET_STD[:channels, None, None])
        x01 = (x01 - mean) / std
    return x01.permute(0, 2, 3, 1) if nhwc else x01


def export(model: torch.nn.Module, path: Path, sample_shape: tuple,
           exporter: str = "torchscript") -> None:
    """TorchScript at opset 17 with a dynamic batch; or ``dynamo``: what a user of torch 2.9
    and later gets from ``torch.onnx.export(model, (x,), path)``, with its defaults (the
    dynamo exporter, its opset, the example's batch of one fixed in the graph)."""
    if exporter == "dynamo":
        torch.onnx.export(model, (torch.zeros(1, *sample_shape),), str(path))
        inline_weights(path)
        return
    torch.onnx.export(model, torch.zeros(1, *sample_shape), str(path), input_names=["input"],
                      output_names=["logits"], opset_version=17, dynamo=False,
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})


def inline_weights(path: Path) -> None:
    """The dynamo exporter writes the weights beside the graph (``model.onnx.data``); the zoo
    keeps one file per model (the snapshot and the card's digest cover model.onnx only)."""
    import onnx
    data = path.with_name(path.name + ".data")
    onnx.save_model(onnx.load(str(path)), str(path))
    data.unlink(missing_ok=True)
