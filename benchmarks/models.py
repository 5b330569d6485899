"""Timing models built in code with onnx.helper (random weights: only their cost matters).

- resnet18(): the CIFAR-style ResNet-18, input 3x32x32, 10 classes, about 11.2 M parameters
  (BatchNorm folded into the convolutions, as PyTorch's exporter does).
- wide_mlp(): 3,072 -> 4,096 -> 4,096 -> 10, about 29 M parameters.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class Builder:
    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.count = [], [], 0

    def name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}_{self.count}"

    def weight(self, shape, fan_in) -> str:
        name = self.name("w")
        value = self.rng.normal(0, np.sqrt(2.0 / fan_in), size=shape).astype(np.float32)
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def bias(self, size) -> str:
        name = self.name("b")
        self.inits.append(numpy_helper.from_array(np.zeros(size, np.float32), name))
        return name

    def node(self, op, inputs, **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x, cin, cout, k, stride=1) -> str:
        w = self.weight((cout, cin, k, k), cin * k * k)
        return self.node("Conv", [x, w, self.bias(cout)], kernel_shape=[k, k],
                         strides=[stride, stride], pads=[k // 2] * 4)

    def model(self, x_shape, output, out_shape) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "bench", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                 ["N", *x_shape])],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", out_shape])],
            self.inits)
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        proto.ir_version = 8
        onnx.checker.check_model(proto)
        return proto


def resnet18(classes: int = 10) -> onnx.ModelProto:
    b = Builder()
    x = b.node("Relu", [b.conv("x", 3, 64, 3)])
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            s = stride if block == 0 else 1
            h = b.node("Relu", [b.conv(x, cin, cout, 3, s)])
            h = b.conv(h, cout, cout, 3)
            short = b.conv(x, cin, cout, 1, s) if (s != 1 or cin != cout) else x
            x = b.node("Relu", [b.node("Add", [h, short])])
            cin = cout
    pooled = b.node("Flatten", [b.node("GlobalAveragePool", [x])], axis=1)
    logits = b.node("Gemm", [pooled, b.weight((classes, 512), 512), b.bias(classes)], transB=1)
    return b.model([3, 32, 32], logits, classes)


def wide_mlp(classes: int = 10) -> onnx.ModelProto:
    b = Builder(1)
    x, width = "x", 3072
    for out in (4096, 4096):
        x = b.node("Relu", [b.node("Gemm", [x, b.weight((out, width), width), b.bias(out)],
                                   transB=1)])
        width = out
    logits = b.node("Gemm", [x, b.weight((classes, width), width), b.bias(classes)], transB=1)
    return b.model([3072], logits, classes)


def parameters(proto: onnx.ModelProto) -> int:
    return sum(int(np.prod(init.dims)) for init in proto.graph.initializer)
