"""Patching writes new values for the edited initializers and changes nothing else."""
import numpy as np
import onnx
import pytest
from conftest import init, make_model, mlp, run, tensor_info
from onnx import TensorProto, helper, numpy_helper

from onnx_bdfix.model import load_model, save_model
from onnx_bdfix.repair.layers import find_layers
from onnx_bdfix.repair.patch import PROVENANCE_KEY, patched, provenance, set_provenance


def test_only_the_edited_initializer_changes():
    model = mlp()
    layers = {layer.name: layer for layer in find_layers(model)}
    new_w2 = np.zeros((4, 16), np.float32)
    result = patched(model, layers, {"fc2": new_w2})
    before = {i.name: i for i in model.graph.initializer}
    after = {i.name: i for i in result.graph.initializer}
    assert set(before) == set(after)
    for name in before:
        if name != "w2":
            assert before[name] == after[name]
    np.testing.assert_array_equal(numpy_helper.to_array(after["w2"]), new_w2)
    assert list(result.graph.node) == list(model.graph.node)
    assert result.graph.input == model.graph.input and result.graph.output == model.graph.output
    assert numpy_helper.to_array(before["w2"]).any()          # the original is untouched


def test_shared_initializer_is_copied_before_it_is_edited():
    rng = np.random.default_rng(0)
    shared = rng.normal(size=(5, 5)).astype(np.float32)
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["h"], name="first"),
                        helper.make_node("MatMul", ["h", "w"], ["y"], name="second")],
                       [tensor_info("x", ["N", 5])], [tensor_info("y", ["N", 5])],
                       [init("w", shared)])
    layers = {layer.name: layer for layer in find_layers(model)}
    assert layers["second"].shared_weight
    result = patched(model, layers, {"second": np.eye(5, dtype=np.float32)})
    x = rng.normal(size=(3, 5)).astype(np.float32)
    np.testing.assert_allclose(run(result, x)[0], x @ shared, rtol=1e-5)
    assert result.graph.node[0].input[1] == "w"
    assert result.graph.node[1].input[1] != "w"
    onnx.checker.check_model(result, full_check=True)


def test_fp16_weights_stay_fp16():
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(4, 3)).astype(np.float16)
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                       [tensor_info("x", ["N", 4], TensorProto.FLOAT16)],
                       [tensor_info("y", ["N", 3], TensorProto.FLOAT16)], [init("w", weight)])
    (layer,) = find_layers(model)
    assert layer.weight_dtype == "float16"
    result = patched(model, {"mm": layer}, {"mm": weight.astype(np.float32) * 2})
    new = numpy_helper.to_array(result.graph.initializer[0])
    assert new.dtype == np.float16
    np.testing.assert_allclose(new, weight * 2)


def test_provenance_round_trips_and_replaces(tmp_path):
    model = mlp()
    set_provenance(model, {"a": 1})
    set_provenance(model, {"a": 2})
    assert [p.key for p in model.metadata_props] == [PROVENANCE_KEY]
    save_model(model, tmp_path / "m.onnx")
    assert provenance(load_model(tmp_path / "m.onnx").proto) == {"a": 2}


def test_external_data_layout_is_kept(tmp_path):
    model = mlp(d=64, hidden=64)
    x = np.ones((2, 64), np.float32)
    expected = run(model, x)[0]
    onnx.save_model(model, tmp_path / "in.onnx", save_as_external_data=True,
                    location="in.weights", size_threshold=2048)
    loaded = load_model(tmp_path / "in.onnx")
    assert sorted(loaded.external_tensors) == ["w1"]
    written = save_model(loaded.proto, tmp_path / "out.onnx", loaded.external_tensors)
    assert sorted(p.name for p in written) == ["out.onnx", "out.onnx.data"]
    again = load_model(tmp_path / "out.onnx")
    assert again.external_tensors == ["w1"]
    np.testing.assert_allclose(run(again.proto, x)[0], expected)
    assert not list(tmp_path.glob(".bdfix-*"))


def test_a_failing_check_leaves_nothing_behind(tmp_path):
    model = mlp(d=64, hidden=64)
    onnx.save_model(model, tmp_path / "in.onnx", save_as_external_data=True,
                    location="in.weights", size_threshold=2048)
    loaded = load_model(tmp_path / "in.onnx")

    def refuse(path):
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        save_model(loaded.proto, tmp_path / "out.onnx", loaded.external_tensors, check=refuse)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx", "in.weights"]


def test_a_shared_weight_behind_a_transpose_is_copied_where_the_transpose_reads_it():
    rng = np.random.default_rng(2)
    shared = rng.normal(size=(4, 6)).astype(np.float32)                  # stored (m, d)
    model = make_model([helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
                        helper.make_node("MatMul", ["x", "wt"], ["y"], name="fc"),
                        helper.make_node("Identity", ["w"], ["w_seen"])],
                       [tensor_info("x", ["N", 6])],
                       [tensor_info("y", ["N", 4]), tensor_info("w_seen", [4, 6])],
                       [init("w", shared)])
    (layer,) = find_layers(model)
    assert layer.transposed and layer.shared_weight
    result = patched(model, {"fc": layer}, {"fc": 2 * shared})
    x = rng.normal(size=(3, 6)).astype(np.float32)
    y, seen = run(result, x)
    np.testing.assert_allclose(y, x @ (2 * shared).T, rtol=1e-5)
    np.testing.assert_array_equal(seen, shared)
