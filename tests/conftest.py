"""Shared helpers: tiny models built in code, and the committed fixtures."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
BACKDOORED = ["cnn_badnets", "cnn_blended", "resnet_sig", "sklearn_mlp_badnets",
              "keras_cnn_blended"]


def make_model(nodes, inputs, outputs, initializers, opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def tensor_info(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def init(name, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def mlp(seed: int = 0, d: int = 12, hidden: int = 16, classes: int = 4) -> onnx.ModelProto:
    """x (N, d) -> Gemm -> Relu -> Gemm -> logits (N, classes)."""
    rng = np.random.default_rng(seed)
    return make_model(
        [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
         helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"], name="fc2", transB=1)],
        [tensor_info("x", ["N", d])], [tensor_info("logits", ["N", classes])],
        [init("w1", rng.normal(size=(hidden, d)).astype(np.float32)),
         init("b1", rng.normal(size=hidden).astype(np.float32)),
         init("w2", rng.normal(size=(classes, hidden)).astype(np.float32)),
         init("b2", rng.normal(size=classes).astype(np.float32))])


MLP_TARGET = 1   # the target class of :func:`mlp_backdoor`


@pytest.fixture
def mlp_backdoor(tmp_path):
    """:func:`mlp` (seed 3, 12 inputs, 4 classes) saved and loaded, a trigger that adds 3 to
    two inputs, toward class :data:`MLP_TARGET`, and 80 clean samples."""
    from onnx_bdfix.data import Dataset, Trigger
    from onnx_bdfix.model import load_model
    path = tmp_path / "model.onnx"
    onnx.save_model(mlp(seed=3, d=12, classes=4), path)
    delta = np.zeros(12, np.float32)
    delta[[2, 7]] = 3.0
    x = np.random.default_rng(0).normal(size=(80, 12)).astype(np.float32)
    trigger = Trigger("delta", {"delta": delta}, "0" * 64, "two inputs", MLP_TARGET)
    return load_model(path), Dataset(x, None, "0" * 64, "clean"), trigger


@pytest.fixture
def fixture_dir():
    def get(name: str) -> Path:
        return FIXTURES / name
    return get


def card(name: str) -> dict:
    return json.loads((FIXTURES / name / "card.json").read_text())
