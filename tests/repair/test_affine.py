"""A normalization's per-channel scale as an editable layer: keys times W plus B reproduce
ONNX Runtime's output, the weight maps back exactly, and a repair that edits the scale
turns down the channel a trigger drives."""
import numpy as np
import onnx
import pytest
from conftest import init, make_model, run, tensor_info
from onnx import helper, numpy_helper

from onnx_bdfix.data import Dataset, Trigger
from onnx_bdfix.model import load_model
from onnx_bdfix.repair import RepairConfig, repair_model
from onnx_bdfix.repair.candidates import affine_layers, candidate_sets
from onnx_bdfix.repair.keys import keys
from onnx_bdfix.repair.layers import find_layers, from_matrices, to_matrices, weight_array
from onnx_bdfix.repair.plan import make_plan


def batchnorm_model(shape, rng, training_mode=0):
    channels = shape[1]
    params = [init("scale", rng.uniform(0.5, 2.0, channels).astype(np.float32)),
              init("shift", rng.normal(size=channels).astype(np.float32)),
              init("mean", rng.normal(size=channels).astype(np.float32)),
              init("var", rng.uniform(0.2, 3.0, channels).astype(np.float32))]
    node = helper.make_node("BatchNormalization", ["x", "scale", "shift", "mean", "var"],
                            ["y"], name="bn", epsilon=1e-3,
                            **({"training_mode": 1} if training_mode else {}))
    return make_model([node], [tensor_info("x", list(shape))],
                      [tensor_info("y", list(shape))], params, opset=15)


def layernorm_model(shape, rng, axis=-1):
    features = shape[-1]
    node = helper.make_node("LayerNormalization", ["x", "scale", "shift"], ["y"], name="ln",
                            axis=axis, epsilon=1e-5)
    return make_model([node], [tensor_info("x", list(shape))], [tensor_info("y", list(shape))],
                      [init("scale", rng.uniform(0.5, 2.0, features).astype(np.float32)),
                       init("shift", rng.normal(size=features).astype(np.float32))])


def affine_output(model, x):
    """keys @ Wᵀ + B per channel, back in the channel's place: (channels, n_keys)."""
    (layer,) = find_layers(model)
    matrices = to_matrices(layer, weight_array(model, layer))          # (C, 1, 1)
    values = np.matmul(keys(layer, x), matrices.transpose(0, 2, 1))[:, :, 0]
    bias = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "shift"))
    return layer, values + bias.reshape(-1)[:, None]


@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (7, 5)])
def test_batchnorm_keys_times_weight_give_its_output(shape):
    rng = np.random.default_rng(0)
    model = batchnorm_model(shape, rng)
    x = rng.normal(size=shape).astype(np.float32)
    (expected,) = run(model, x)
    layer, got = affine_output(model, x)
    assert (layer.groups, layer.key_dim, layer.out_dim, layer.bias) == (shape[1], 1, 1, "shift")
    np.testing.assert_allclose(got, np.moveaxis(expected, 1, 0).reshape(shape[1], -1),
                               rtol=1e-4, atol=1e-4)
    scale = weight_array(model, layer)
    np.testing.assert_allclose(from_matrices(layer, to_matrices(layer, scale)), scale, rtol=1e-6)


def test_layernorm_keys_times_weight_give_its_output():
    rng = np.random.default_rng(1)
    model = layernorm_model((2, 3, 8), rng)
    x = rng.normal(size=(2, 3, 8)).astype(np.float32) * 3 + 1
    (expected,) = run(model, x)
    layer, got = affine_output(model, x)
    assert (layer.groups, layer.key_dim, layer.out_dim) == (8, 1, 1)
    np.testing.assert_allclose(got, expected.reshape(-1, 8).T, rtol=1e-4, atol=1e-4)
    scale = weight_array(model, layer)
    np.testing.assert_array_equal(from_matrices(layer, to_matrices(layer, scale)), scale)


def mul_add_model(shape, constant_shape, rng, add_shape=None):
    nodes = [helper.make_node("Mul", ["x", "scale"], ["m"], name="mul"),
             helper.make_node("Add", ["m", "shift"], ["y"], name="add")]
    return make_model(nodes, [tensor_info("x", list(shape))], [tensor_info("y", list(shape))],
                      [init("scale", rng.uniform(0.5, 2.0, constant_shape).astype(np.float32)),
                       init("shift", rng.normal(size=add_shape or constant_shape)
                            .astype(np.float32))])


@pytest.mark.parametrize("shape,constant_shape,axis", [((2, 5, 3, 4), (1, 5, 1, 1), 1),
                                                      ((2, 5, 3, 4), (5, 1, 1), 1),
                                                      ((2, 3, 4, 5), (5,), 3)])
def test_a_mul_add_pair_keys_times_weight_give_its_output(shape, constant_shape, axis):
    rng = np.random.default_rng(3)
    model = mul_add_model(shape, constant_shape, rng)
    x = rng.normal(size=shape).astype(np.float32)
    (expected,) = run(model, x)
    layer, got = affine_output(model, x)
    assert (layer.op, layer.groups, layer.bias, layer.followed_by) == \
        ("Mul", 5, "shift", "Add (bias)")
    np.testing.assert_allclose(got, np.moveaxis(expected, axis, 0).reshape(5, -1),
                               rtol=1e-5, atol=1e-5)
    scale = weight_array(model, layer)
    np.testing.assert_array_equal(from_matrices(layer, to_matrices(layer, scale)), scale)


def test_normalizations_whose_scale_is_no_per_channel_constant_are_not_editable():
    rng = np.random.default_rng(2)
    assert find_layers(layernorm_model((2, 3, 8), rng, axis=1)) == []
    assert find_layers(batchnorm_model((4, 3), rng, training_mode=1)) == []
    assert find_layers(mul_add_model((2, 5), (1,), rng)) == []            # a scalar
    assert find_layers(mul_add_model((2, 5, 3), (5, 3), rng)) == []       # not per channel
    assert find_layers(mul_add_model((2, 5), (5,), rng, add_shape=(2, 5))) == []


def gated_model(rng, d=6, classes=3, target=0):
    """x (N, d) -> fc1 -> BatchNormalization -> Relu -> head. Hidden channel d − 1 reads only
    the last input, which clean samples hold near 0 and the trigger sets to 4; the head sends
    that channel to ``target``."""
    w1 = np.eye(d, dtype=np.float32)
    head = rng.normal(size=(classes, d)).astype(np.float32)
    head[:, -1] = 0.0
    head[target, -1] = 6.0
    bn = [init("scale", np.ones(d, np.float32)), init("shift", np.zeros(d, np.float32)),
          init("mean", np.zeros(d, np.float32)), init("var", np.ones(d, np.float32))]
    return make_model(
        [helper.make_node("Gemm", ["x", "w1"], ["h"], name="fc1", transB=1),
         helper.make_node("BatchNormalization", ["h", "scale", "shift", "mean", "var"],
                          ["n"], name="bn"),
         helper.make_node("Relu", ["n"], ["r"]),
         helper.make_node("Gemm", ["r", "head"], ["logits"], name="head", transB=1)],
        [tensor_info("x", ["N", d])], [tensor_info("logits", ["N", classes])],
        [init("w1", w1), init("head", head)] + bn)


def test_normalization_scales_are_stronger_edits_not_plain_ones(tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save_model(gated_model(np.random.default_rng(3)), path)
    loaded = load_model(path)
    layers = find_layers(loaded)
    assert [layer.name for layer in affine_layers(loaded.index, layers, "logits")] == ["bn"]
    assert ("bn",) not in candidate_sets(loaded.index, layers, "logits")
    x = np.random.default_rng(4).normal(size=(40, 6)).astype(np.float32)
    plan = make_plan(loaded, Dataset(x, None, "0" * 64, "clean"), tmp_path / "out.onnx",
                     RepairConfig(device="cpu"))
    assert ("bn",) in plan.stronger


def test_a_repair_of_the_scale_turns_down_the_triggered_channel(tmp_path):
    rng = np.random.default_rng(5)
    path = tmp_path / "model.onnx"
    onnx.save_model(gated_model(rng), path)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    x[:, -1] = rng.normal(scale=0.01, size=200)
    delta = np.zeros(6, np.float32)
    delta[-1] = 4.0
    trigger = Trigger("delta", {"delta": delta}, "0" * 64, "last input", 0)
    config = RepairConfig(device="cpu", layers=["bn"], target_class=0)
    report = repair_model(path, Dataset(x, None, "0" * 64, "clean"), trigger,
                          tmp_path / "out.onnx", config)
    repaired = onnx.load(tmp_path / "out.onnx")
    weights = {i.name: numpy_helper.to_array(i) for i in repaired.graph.initializer}
    assert weights["scale"][-1] < 0.2                       # the triggered channel, down
    np.testing.assert_allclose(weights["scale"][:-1], 1.0, atol=0.1)
    np.testing.assert_array_equal(weights["head"], numpy_helper.to_array(
        next(i for i in onnx.load(path).graph.initializer if i.name == "head")))
    held = x[150:]
    before = run(onnx.load(path), held)[0].argmax(1)
    after_clean = run(repaired, held)[0].argmax(1)
    after_triggered = run(repaired, held + delta)[0].argmax(1)
    assert (after_clean == before).mean() >= 0.95
    assert ((after_triggered == 0) & (before != 0)).sum() <= 0.05 * (before != 0).sum()
    assert report.chosen == ["bn"]
