"""One streamed pass gives the same sums whatever the batch size, and marks samples exactly."""
import numpy as np
import onnx
import pytest
from conftest import mlp, run
from onnx import helper

from onnx_bdfix.errors import DeviceError
from onnx_bdfix.model.runtime import open_runner, providers_for
from onnx_bdfix.repair.collect import collect_statistics
from onnx_bdfix.repair.layers import find_layers
from onnx_bdfix.repair.stats import total


def data(n=30, d=12, seed=0):
    rng = np.random.default_rng(seed)
    clean = rng.normal(size=(n, d)).astype(np.float32)
    return clean, clean + 0.5


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_sums_do_not_depend_on_batch_size(batch_size):
    model, (clean, triggered) = mlp(), data()
    layers = find_layers(model)
    whole = collect_statistics(model, layers, clean, triggered, [0, 30], "logits", "cpu", 64)
    streamed = collect_statistics(model, layers, clean, triggered, [0, 10, 30], "logits",
                                  "cpu", batch_size)
    for layer in layers:
        a, b = total(whole.stats[layer.name]), total(streamed.stats[layer.name])
        np.testing.assert_allclose(a.trig_clean, b.trig_clean, rtol=1e-4, atol=1e-3)
        assert a.n_keys == b.n_keys == 30
    np.testing.assert_allclose(whole.clean_scores, run(model, clean)[0], rtol=1e-5)
    np.testing.assert_allclose(streamed.triggered_scores, run(model, triggered)[0], rtol=1e-5)


def test_marked_samples_match_a_pass_over_them_alone():
    model, (clean, triggered) = mlp(), data()
    layers = find_layers(model)
    picked = lambda clean_scores, _: clean_scores.argmax(1) == 1  # noqa: E731
    marked = collect_statistics(model, layers, clean, triggered, [0, 30], "logits", "cpu", 8,
                                mark=picked).marked
    rows = run(model, clean)[0].argmax(1) == 1
    alone = collect_statistics(model, layers, clean[rows], None, [0, int(rows.sum())],
                               "logits", "cpu", 8)
    for layer in layers:
        np.testing.assert_allclose(marked[layer.name][0].clean_clean,
                                   alone.stats[layer.name][0].clean_clean, rtol=1e-4, atol=1e-4)


def test_cpu_runner_says_which_provider_ran():
    assert open_runner(mlp(), "cpu").provider == "CPUExecutionProvider"
    with pytest.raises(DeviceError, match="unknown device"):
        providers_for("tpu")


def convnext_block(rng, scale_first=True, channels=3, size=4):
    """x (N, C, H, W) -> Transpose to (N, H, W, C) -> MatMul W, + bias, then × layer scale
    gamma and Transpose back (a ConvNeXt block), or Transpose back and × gamma (C, 1, 1)
    (torchvision's) -> + x (the bypass) -> Flatten: the branch meets its bypass in another
    layout and scale."""
    from conftest import init, make_model, tensor_info
    gamma = np.asarray([0.5, -2.0, 0.1], np.float32)
    back = helper.make_node("Transpose", ["hs" if scale_first else "hb"], ["back"],
                            perm=[0, 3, 1, 2])
    scaled = helper.make_node("Mul", ["gamma", "hb" if scale_first else "back"], ["hs"])
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("MatMul", ["t", "w"], ["h"], name="pw"),
             helper.make_node("Add", ["h", "bias"], ["hb"]),
             *([scaled, back] if scale_first else [back, scaled]),
             helper.make_node("Add", ["x", "back" if scale_first else "hs"], ["merged"]),
             helper.make_node("Flatten", ["merged"], ["y"])]
    return make_model(nodes, [tensor_info("x", ["N", channels, size, size])],
                      [tensor_info("y", ["N", channels * size * size])],
                      [init("w", rng.normal(size=(channels, channels)).astype(np.float32)),
                       init("bias", rng.normal(size=channels).astype(np.float32)),
                       init("gamma", gamma if scale_first else gamma.reshape(3, 1, 1))])


@pytest.mark.parametrize("scale_first", [True, False])
def test_a_merge_edit_answers_through_a_layer_scale_and_a_transpose(scale_first):
    """The bypass's change reaches the branch's keys back through the Transpose and divided by
    the layer scale: solved on those sums, the edited block gives triggered samples the
    merged output of their clean copies (the trigger lifts channel 2, which clean samples
    never use)."""
    rng = np.random.default_rng(0)
    model = convnext_block(rng, scale_first)
    layer = next(layer for layer in find_layers(model) if layer.name == "pw").with_bypass()
    assert layer.merge_skip == "x" and layer.merge_perm == (0, 3, 1, 2)
    np.testing.assert_allclose(layer.merge_scale, [0.5, -2.0, 0.1])
    assert_the_merge_edit_cleans(model, layer, rng)


def assert_the_merge_edit_cleans(model, layer, rng):
    """Solved on one pass's sums (a trigger that lifts channel 2, which clean samples never
    use), the edit of ``layer`` gives triggered samples their clean copies' merged output
    and leaves clean ones as they were."""
    from onnx import numpy_helper
    from onnx_bdfix.repair.layers import from_matrices, to_matrices, weight_array
    from onnx_bdfix.repair.solve import bdk_correction
    clean = rng.normal(size=(200, 3, 4, 4)).astype(np.float32)
    clean[:, 2] = 0.0
    triggered = clean.copy()
    triggered[:, 2] = 1.0
    sums = collect_statistics(model, [layer], clean, triggered, [0, 200], "y", "cpu", 64)
    weights = to_matrices(layer, weight_array(model, layer))
    delta = bdk_correction(weights, total(sums.stats[layer.name]), alpha=100.0, eps=1e-6)
    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    stored = next(t for t in edited.graph.initializer if t.name == layer.weight)
    stored.CopyFrom(numpy_helper.from_array(from_matrices(layer, weights + delta), layer.weight))
    before, after = run(model, triggered)[0], run(edited, triggered)[0]
    wanted = run(model, clean)[0]
    assert np.abs(before - wanted).mean() > 0.5
    assert np.abs(after - wanted).mean() < 0.01 * np.abs(before - wanted).mean()
    np.testing.assert_allclose(run(edited, clean)[0], wanted, atol=1e-3)


def test_a_scale_along_another_axis_leaves_a_plain_branch():
    """After the Transpose back to (N, C, H, W), a (3,) constant scales the width, not the
    channels: no merge edit (its change could not be divided back per channel)."""
    model = convnext_block(np.random.default_rng(0), scale_first=False, size=3)
    for tensor in model.graph.initializer:
        if tensor.name == "gamma":
            tensor.CopyFrom(onnx.numpy_helper.from_array(
                np.asarray([0.5, -2.0, 0.1], np.float32), "gamma"))
    onnx.checker.check_model(model)
    branch = next(layer for layer in find_layers(model) if layer.name == "pw")
    assert branch.merge_skip == "" and branch.merge_scale is None


@pytest.mark.parametrize("smallest", [0.0, 1e-7])
def test_a_layer_scale_near_zero_leaves_a_plain_branch(smallest):
    """A channel its layer scale all but switches off: the bypass's change divided by that
    scale would be without bound, so no merge edit is made, and the plain branch stays."""
    model = convnext_block(np.random.default_rng(0), scale_first=True)
    for tensor in model.graph.initializer:
        if tensor.name == "gamma":
            tensor.CopyFrom(onnx.numpy_helper.from_array(
                np.asarray([0.5, -2.0, smallest], np.float32), "gamma"))
    branch = next(layer for layer in find_layers(model) if layer.name == "pw")
    assert branch.merge_skip == "" and branch.merge_scale is None


def conv_block(rng, follower, channels=3, size=4):
    """x -> 1×1 Conv -> a BatchNormalization (not folded) or a constant Mul (a layer scale)
    -> + x -> Flatten: a ResNet branch as an exporter that keeps the normalization writes it,
    or a layer-scaled convolutional branch."""
    from conftest import init, make_model, tensor_info
    scale = np.asarray([0.5, -2.0, 0.3], np.float32)
    floats = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    if follower == "BatchNormalization":
        norm = [helper.make_node("BatchNormalization", ["h", "s", "beta", "mu", "var"], ["n"])]
        params = [init("s", scale), init("beta", floats(channels)),
                  init("mu", floats(channels)), init("var", np.asarray([0.5, 2.0, 4.0],
                                                                      np.float32))]
    else:
        norm = [helper.make_node("Mul", ["h", "s"], ["n"])]
        params = [init("s", scale.reshape(channels, 1, 1))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["h"], name="conv"), *norm,
             helper.make_node("Add", ["n", "x"], ["merged"]),
             helper.make_node("Flatten", ["merged"], ["y"])]
    return make_model(nodes, [tensor_info("x", ["N", channels, size, size])],
                      [tensor_info("y", ["N", channels * size * size])],
                      [init("w", floats(channels, channels, 1, 1)), init("b", floats(channels)),
                       *params])


@pytest.mark.parametrize("follower", ["BatchNormalization", "Mul"])
def test_a_merge_edit_answers_through_a_normalization_or_a_scale(follower):
    """A branch Conv whose BatchNormalization, or a constant per-channel Mul, sits between it
    and the merge: the bypass's change is divided by that per-channel scale, and the edited
    block gives triggered samples their clean copies' merged output."""
    rng = np.random.default_rng(1)
    model = conv_block(rng, follower)
    layer = next(layer for layer in find_layers(model) if layer.name == "conv").with_bypass()
    assert layer.merge_skip == "x"
    expected = np.asarray([0.5, -2.0, 0.3])
    if follower == "BatchNormalization":
        expected = expected / np.sqrt(np.asarray([0.5, 2.0, 4.0]) + 1e-5)
    np.testing.assert_allclose(layer.merge_scale, expected, rtol=1e-6)
    assert_the_merge_edit_cleans(model, layer, rng)
