"""The PyTorch path of the zoo: poison, train (TrojanNN: optimize the patch first), export."""
from __future__ import annotations

from pathlib import Path

import attacks
import datasets
import train
from specs import Spec


def train_and_export(spec: Spec, attack, x_train, y_train, folder: Path):
    """Returns the model path and the attack (TrojanNN's is made here, from the model)."""
    channels, side = x_train.shape[1], x_train.shape[-1]
    classes = datasets.classes(spec.data)
    model = train.build_model(spec.arch, channels, spec.nhwc, spec.seed, classes)
    if spec.attack == "trojannn":      # a clean epoch, then the patch that excites a neuron
        train.train(model, train.convention(x_train, spec.normalize, spec.nhwc), y_train,
                    1, spec.seed)
        mask, pattern, neuron = train.trojan_patch(model, x_train, channels, side, 5,
                                                   spec.normalize, spec.nhwc, spec.seed)
        attack = attacks.trojan_patch(mask, pattern, neuron)
        model = train.build_model(spec.arch, channels, spec.nhwc, spec.seed, classes)
    x, y, _ = train.poison_set(x_train, y_train, attack, spec.target, spec.rate, spec.seed)
    model = train.train(model, train.convention(x, spec.normalize, spec.nhwc), y,
                        spec.epochs, spec.seed)
    path = folder / "model.onnx"
    shape = (side, side, channels) if spec.nhwc else (channels, side, side)
    train.export(model, path, shape, "dynamo" if spec.framework == "torch-dynamo"
                 else "torchscript")
    return path, attack
