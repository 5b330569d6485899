"""Keys times the weight matrix reproduce ONNX Runtime's output, for every supported op."""
import numpy as np
import pytest
from conftest import init, make_model, run, tensor_info
from onnx import helper, numpy_helper

from onnx_bdfix.repair.keys import keys
from onnx_bdfix.repair.layers import find_layers, from_matrices, to_matrices, weight_array

CONV_CASES = [
    dict(kernel=(3, 3), pads=[1, 1, 1, 1]),
    dict(kernel=(3, 3), strides=[2, 2], pads=[0, 1, 2, 0]),
    dict(kernel=(3, 2), dilations=[2, 1], pads=[2, 0, 1, 1]),
    dict(kernel=(3, 3), group=2),
    dict(kernel=(3, 3), group=4, out=8, pads=[1, 1, 1, 1]),          # depthwise, multiplier 2
    dict(kernel=(5, 4), strides=[2, 1], auto_pad="SAME_UPPER"),
    dict(kernel=(4, 4), strides=[3, 3], auto_pad="SAME_LOWER"),
    dict(kernel=(2, 2), auto_pad="VALID", bias=False),
]


def conv_model(case, cin=4, h=9, w=8):
    rng = np.random.default_rng(1)
    group, out = case.get("group", 1), case.get("out", 6)
    weight = rng.normal(size=(out, cin // group, *case["kernel"])).astype(np.float32)
    attrs = {k: case[k] for k in ("pads", "strides", "dilations", "group", "auto_pad") if k in case}
    inputs = ["x", "w"] + (["b"] if case.get("bias", True) else [])
    inits = [init("w", weight)] + ([init("b", rng.normal(size=out).astype(np.float32))]
                                   if case.get("bias", True) else [])
    model = make_model([helper.make_node("Conv", inputs, ["y"], name="conv", **attrs)],
                       [tensor_info("x", [2, cin, h, w])],
                       [tensor_info("y", ["a", "b", "c", "d"])], inits)
    return model, rng.normal(size=(2, cin, h, w)).astype(np.float32)


def bias_of(model, name="b"):
    found = [i for i in model.graph.initializer if i.name == name]
    return numpy_helper.to_array(found[0]) if found else 0.0


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_keys_times_weight_give_the_conv_output(case):
    model, x = conv_model(case)
    (expected,) = run(model, x)                                   # (N, out, Ho, Wo)
    (layer,) = find_layers(model)
    matrices = to_matrices(layer, weight_array(model, layer))     # (groups, m, d)
    patches = keys(layer, x)                                      # (groups, N*Ho*Wo, d)
    per_group = np.matmul(patches, matrices.transpose(0, 2, 1))   # (groups, N*Ho*Wo, m)
    n, out, ho, wo = expected.shape
    got = per_group.transpose(1, 0, 2).reshape(n, ho, wo, out).transpose(0, 3, 1, 2)
    got = got + np.reshape(bias_of(model), (1, -1, 1, 1))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_conv1d_keys():
    rng = np.random.default_rng(2)
    weight = rng.normal(size=(5, 3, 3)).astype(np.float32)
    model = make_model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 2], strides=[2])],
                       [tensor_info("x", [2, 3, 11])], [tensor_info("y", ["a", "b", "c"])],
                       [init("w", weight)])
    x = rng.normal(size=(2, 3, 11)).astype(np.float32)
    (expected,) = run(model, x)
    (layer,) = find_layers(model)
    got = keys(layer, x)[0] @ to_matrices(layer, weight)[0].T
    np.testing.assert_allclose(got.reshape(2, -1, 5).transpose(0, 2, 1), expected, atol=1e-4)


@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.5, 2.0)])
def test_gemm_keys_times_weight(trans_a, trans_b, alpha, beta):
    rng = np.random.default_rng(3)
    n, d, m = 5, 7, 3
    b = rng.normal(size=(m, d) if trans_b else (d, m)).astype(np.float32)
    c = rng.normal(size=m).astype(np.float32)
    model = make_model([helper.make_node("Gemm", ["a", "b", "c"], ["y"], transA=trans_a,
                                         transB=trans_b, alpha=alpha, beta=beta)],
                       [tensor_info("a", [d, n] if trans_a else [n, d])],
                       [tensor_info("y", [n, m])], [init("b", b), init("c", c)])
    a = rng.normal(size=(d, n) if trans_a else (n, d)).astype(np.float32)
    (expected,) = run(model, a)
    (layer,) = find_layers(model)
    got = keys(layer, a)[0] @ to_matrices(layer, b)[0].T + beta * c
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(from_matrices(layer, to_matrices(layer, b)), b, rtol=1e-6)


def test_matmul_add_keys_times_weight():
    rng = np.random.default_rng(4)
    weight = rng.normal(size=(6, 4)).astype(np.float32)
    bias = rng.normal(size=4).astype(np.float32)
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["h"]),
                        helper.make_node("Add", ["h", "b"], ["y"])],
                       [tensor_info("x", [3, 2, 6])], [tensor_info("y", [3, 2, 4])],
                       [init("w", weight), init("b", bias)])
    x = rng.normal(size=(3, 2, 6)).astype(np.float32)
    (expected,) = run(model, x)
    (layer,) = find_layers(model)
    assert layer.followed_by == "Add (bias)" and layer.bias == "b"
    got = keys(layer, x)[0] @ to_matrices(layer, weight)[0].T + bias
    np.testing.assert_allclose(got.reshape(3, 2, 4), expected, rtol=1e-5, atol=1e-5)


def transposed_weight_model(weight, second_user=False):
    nodes = [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
             helper.make_node("MatMul", ["x", "wt"], ["y"], name="fc")]
    outputs = [tensor_info("y", [3, weight.shape[0]])]
    if second_user:
        nodes.append(helper.make_node("Identity", ["wt"], ["w_seen"]))
        outputs.append(tensor_info("w_seen", list(weight.shape[::-1])))
    return make_model(nodes, [tensor_info("x", [3, weight.shape[1]])], outputs,
                      [init("w", weight)])


def test_matmul_weight_through_a_transpose_is_editable():
    rng = np.random.default_rng(6)
    weight = rng.normal(size=(4, 6)).astype(np.float32)       # stored (m, d)
    model = transposed_weight_model(weight)
    x = rng.normal(size=(3, 6)).astype(np.float32)
    (expected,) = run(model, x)
    (layer,) = find_layers(model)
    assert (layer.weight, layer.transposed, layer.key_dim, layer.out_dim) == ("w", True, 6, 4)
    matrices = to_matrices(layer, weight_array(model, layer))  # (1, m, d)
    np.testing.assert_allclose(keys(layer, x)[0] @ matrices[0].T, expected, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_array_equal(from_matrices(layer, matrices), weight)


def test_a_transposed_weight_used_elsewhere_is_not_editable():
    weight = np.ones((4, 6), np.float32)
    assert find_layers(transposed_weight_model(weight, second_user=True)) == []


def test_conv_then_batchnorm_is_listed_with_its_follower():
    rng = np.random.default_rng(5)
    channels = 3
    stats = [init(n, rng.uniform(0.5, 1.5, channels).astype(np.float32))
             for n in ("scale", "shift", "mean", "var")]
    model = make_model(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
         helper.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["y"])],
        [tensor_info("x", [1, 2, 5, 5])], [tensor_info("y", ["a", "b", "c", "d"])],
        [init("w", rng.normal(size=(channels, 2, 3, 3)).astype(np.float32))] + stats)
    layer, norm = find_layers(model)
    assert (layer.name, layer.followed_by, layer.key_dim, layer.out_dim) == \
        ("conv", "BatchNormalization", 18, 3)
    assert (norm.op, norm.groups, norm.key_dim, norm.key_tensor) == \
        ("BatchNormalization", channels, 1, "c")


def test_weights_that_are_not_constants_are_not_editable():
    model = make_model([helper.make_node("MatMul", ["x", "z"], ["y"])],
                       [tensor_info("x", [2, 3]), tensor_info("z", [3, 4])],
                       [tensor_info("y", [2, 4])], [])
    assert find_layers(model) == []


def test_branch_layers_know_the_bypass_they_merge_with():
    from conftest import init, make_model, tensor_info
    from onnx import TensorProto
    rng = np.random.default_rng(0)
    model = make_model(
        [helper.make_node("MatMul", ["x", "w_in"], ["h"], name="fc_in"),
         helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w_branch"], ["b0"], name="fc_branch"),
         helper.make_node("Add", ["b0", "bias"], ["b"]),
         helper.make_node("Add", ["h", "b"], ["c"], name="merge"),
         helper.make_node("MatMul", ["c", "w_out"], ["y"], name="fc_out")],
        [tensor_info("x", ["N", 6])], [tensor_info("y", ["N", 3], TensorProto.FLOAT)],
        [init("w_in", rng.normal(size=(6, 8)).astype(np.float32)),
         init("w_branch", rng.normal(size=(8, 8)).astype(np.float32)),
         init("bias", np.zeros(8, np.float32)),
         init("w_out", rng.normal(size=(8, 3)).astype(np.float32))])
    found = {layer.name: layer for layer in find_layers(model)}
    assert found["fc_branch"].merge_skip == "h"
    assert found["fc_in"].merge_skip == "" and found["fc_out"].merge_skip == ""
    assert found["fc_branch"].with_bypass().merge
