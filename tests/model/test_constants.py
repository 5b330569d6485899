"""Weights held in Constant nodes or passed through Identity nodes are read as initializers."""
import numpy as np
import onnx
from conftest import init, make_model, mlp, run, tensor_info
from onnx import TensorProto, helper, numpy_helper

from onnx_bdfix.model import load_model
from onnx_bdfix.model.constants import lift_constant_weights
from onnx_bdfix.repair.layers import find_layers

X = np.random.default_rng(1).normal(size=(5, 12)).astype(np.float32)


def with_constant_and_identity() -> onnx.ModelProto:
    """:func:`mlp` with w1 in a Constant node and w2 read through an Identity node."""
    model = mlp()
    inits = {tensor.name: tensor for tensor in model.graph.initializer}
    nodes = [helper.make_node("Constant", [], ["w1"], value=inits["w1"]),
             helper.make_node("Identity", ["w2"], ["w2_read"])]
    model.graph.node[2].input[1] = "w2_read"
    for node in reversed(nodes):
        model.graph.node.insert(0, node)
    kept = [tensor for tensor in model.graph.initializer if tensor.name != "w1"]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    onnx.checker.check_model(model)
    return model


def test_constant_and_identity_weights_become_editable_layers():
    model = with_constant_and_identity()
    assert find_layers(model) == []             # as exported: no initializer to edit
    expected = run(model, X)[0]
    assert lift_constant_weights(model) == (1, 1)
    onnx.checker.check_model(model)
    assert [node.op_type for node in model.graph.node] == ["Gemm", "Relu", "Gemm"]
    layers = {layer.name: layer.weight for layer in find_layers(model)}
    assert layers == {"fc1": "w1", "fc2": "w2"}
    np.testing.assert_array_equal(run(model, X)[0], expected)


def test_a_weight_shared_through_identities_stays_shared():
    w = np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)
    nodes = [helper.make_node("Identity", ["w"], ["w_a"]),
             helper.make_node("Identity", ["w"], ["w_b"]),
             helper.make_node("MatMul", ["x", "w_a"], ["h"], name="first"),
             helper.make_node("MatMul", ["h", "w_b"], ["y"], name="second")]
    model = make_model(nodes, [tensor_info("x", ["N", 4])], [tensor_info("y", ["N", 4])],
                       [init("w", w)])
    assert lift_constant_weights(model) == (0, 2)
    layers = find_layers(model)
    assert [(layer.name, layer.weight, layer.shared_weight) for layer in layers] == \
        [("first", "w", True), ("second", "w", True)]
    assert len(model.graph.initializer) == 1


def test_shapes_scalars_and_outputs_stay_nodes():
    w = np.ones((4, 4), np.float32)
    nodes = [helper.make_node("Constant", [], ["shape"],
                              value=numpy_helper.from_array(np.array([-1, 4], np.int64))),
             helper.make_node("Constant", [], ["half"],
                              value=numpy_helper.from_array(np.array(0.5, np.float32))),
             helper.make_node("Reshape", ["x", "shape"], ["flat"]),
             helper.make_node("Mul", ["flat", "half"], ["scaled"]),
             helper.make_node("Identity", ["w"], ["w_out"]),
             helper.make_node("MatMul", ["scaled", "w_out"], ["y"], name="fc")]
    model = make_model(nodes, [tensor_info("x", ["N", 4])],
                       [tensor_info("y", ["N", 4]), tensor_info("w_out", [4, 4])],
                       [init("w", w)])
    before = model.SerializeToString()
    assert lift_constant_weights(model) == (0, 0)
    assert model.SerializeToString() == before


def test_a_subgraph_reads_the_initializer_after_the_identity_goes():
    w = np.random.default_rng(2).normal(size=(4, 4)).astype(np.float32)
    branch = lambda name: helper.make_graph(  # noqa: E731
        [helper.make_node("MatMul", ["x", "w_read"], [name])], name, [],
        [tensor_info(name, ["N", 4])])
    nodes = [helper.make_node("Identity", ["w"], ["w_read"]),
             helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
             helper.make_node("Greater", ["total", "zero"], ["positive"]),
             helper.make_node("If", ["positive"], ["y"], then_branch=branch("then_y"),
                              else_branch=branch("else_y"))]
    model = make_model(nodes, [tensor_info("x", ["N", 4])], [tensor_info("y", ["N", 4])],
                       [init("w", w), init("zero", np.array(0.0, np.float32))])
    x = np.ones((2, 4), np.float32)
    expected = run(model, x)[0]
    assert lift_constant_weights(model) == (0, 1)
    onnx.checker.check_model(model)
    np.testing.assert_allclose(run(model, x)[0], expected)


def test_loading_lifts_them(tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save_model(with_constant_and_identity(), path)
    loaded = load_model(path)
    assert [layer.weight for layer in find_layers(loaded)] == ["w1", "w2"]
    assert TensorProto.FLOAT == loaded.index.initializers["w1"].data_type
