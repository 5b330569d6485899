"""Loading safely, exposing tensors, finding bypasses, picking the score output."""
import os

import numpy as np
import onnx
import pytest
from conftest import init, make_model, mlp, run, tensor_info
from onnx import helper

from onnx_bdfix.errors import ModelError
from onnx_bdfix.model import GraphIndex, load_model, model_input, score_output
from onnx_bdfix.model.expose import expose
from onnx_bdfix.repair.layers import find_layers


def residual():
    """x -> fc_in -> [branch: fc_branch] + skip -> fc_out."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w_in"], ["a"], name="fc_in"),
             helper.make_node("MatMul", ["a", "w_branch"], ["b"], name="fc_branch"),
             helper.make_node("Add", ["a", "b"], ["c"], name="merge"),
             helper.make_node("MatMul", ["c", "w_out"], ["y"], name="fc_out")]
    inits = [init(name, rng.normal(size=(4, 4)).astype(np.float32))
             for name in ("w_in", "w_branch", "w_out")]
    return make_model(nodes, [tensor_info("x", ["N", 4])], [tensor_info("y", ["N", 4])], inits)


def test_bypass_is_found_only_for_branch_layers():
    model = residual()
    index = {layer.name: layer.node_index for layer in find_layers(model)}
    assert not GraphIndex(model).has_bypass({index["fc_in"]}, "y")
    assert GraphIndex(model).has_bypass({index["fc_branch"]}, "y")
    assert not GraphIndex(model).has_bypass({index["fc_out"]}, "y")


def test_expose_keeps_outputs_first_and_values_equal():
    model = mlp()
    names = GraphIndex(model).intermediate_tensors()
    assert names == ["h", "r"]
    exposed = expose(model, names)
    assert [o.name for o in exposed.graph.output] == ["logits", "h", "r"]
    x = np.random.default_rng(0).normal(size=(3, 12)).astype(np.float32)
    logits, h, r = run(exposed, x)
    np.testing.assert_allclose(logits, run(model, x)[0], rtol=1e-6)
    np.testing.assert_allclose(r, np.maximum(h, 0))


def test_expose_unknown_tensor_is_an_error():
    with pytest.raises(ModelError, match="not in the graph"):
        expose(mlp(), ["nope"])


def test_score_output_skips_label_outputs():
    model = mlp()
    model.graph.node.append(helper.make_node("ArgMax", ["logits"], ["label"], axis=1))
    model.graph.output.insert(0, tensor_info("label", ["N"], onnx.TensorProto.INT64))
    assert score_output(model) == "logits"
    with pytest.raises(ModelError, match="--output"):
        score_output(model, "missing")


def test_input_listed_initializers_are_not_data_inputs():
    model = mlp()
    model.graph.input.append(tensor_info("w1", [16, 12]))
    assert model_input(model).name == "x"


def test_several_data_inputs_are_refused():
    model = make_model([helper.make_node("Add", ["a", "b"], ["y"])],
                       [tensor_info("a", ["N", 2]), tensor_info("b", ["N", 2])],
                       [tensor_info("y", ["N", 2])], [])
    with pytest.raises(ModelError, match="2 data inputs"):
        model_input(model)


@pytest.mark.parametrize("content", [b"", b"not a model at all", b"\x08\x07\x12"])
def test_unreadable_files_are_model_errors(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelError):
        load_model(path)


def test_directory_is_refused(tmp_path):
    with pytest.raises(ModelError, match="not a file"):
        load_model(tmp_path)


def external_model(tmp_path, location):
    model = mlp(d=64, hidden=64)
    onnx.save_model(model, tmp_path / "m.onnx", save_as_external_data=True,
                    location="w.bin", size_threshold=1024)
    proto = onnx.load(tmp_path / "m.onnx", load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(proto, tmp_path / "m.onnx")
    return tmp_path / "m.onnx"


def test_external_data_outside_the_folder_is_refused(tmp_path):
    (tmp_path / "inner").mkdir()
    path = external_model(tmp_path / "inner", "../w.bin")
    os.replace(tmp_path / "inner" / "w.bin", tmp_path / "w.bin")
    with pytest.raises(ModelError, match="outside the model's folder"):
        load_model(path)


def test_external_data_symlink_is_refused(tmp_path):
    path = external_model(tmp_path, "link.bin")
    os.symlink(tmp_path / "w.bin", tmp_path / "link.bin")
    with pytest.raises(ModelError, match="symbolic link"):
        load_model(path)


def test_missing_external_data_is_refused(tmp_path):
    path = external_model(tmp_path, "gone.bin")
    with pytest.raises(ModelError, match="missing"):
        load_model(path)


def test_saving_with_external_data_keeps_every_field(tmp_path):
    """The written model, its data read back, equals the one saved: only where the bytes
    live changes (weights and a Constant's value go to OUT.data)."""
    from onnx_bdfix.model import save_model
    model = mlp()
    model.doc_string, model.graph.doc_string = "model doc", "graph doc"
    onnx.helper.set_model_props(model, {"owner": "test"})
    constant = helper.make_node("Constant", [], ["c"], name="const",
                                value=onnx.numpy_helper.from_array(
                                    np.arange(4, dtype=np.float32), "c_value"))
    model.graph.node.insert(0, constant)
    model.graph.output.append(tensor_info("c", [4]))
    names = [t.name for t in model.graph.initializer] + ["c_value"]
    save_model(model, tmp_path / "out.onnx", names)
    stored = onnx.load(str(tmp_path / "out.onnx"), load_external_data=False)
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in stored.graph.initializer)
    assert stored.graph.node[0].attribute[0].t.data_location == onnx.TensorProto.EXTERNAL
    loaded = load_model(tmp_path / "out.onnx").proto
    for tensor in [*loaded.graph.initializer, loaded.graph.node[0].attribute[0].t]:
        tensor.ClearField("data_location")              # DEFAULT, set by the loader
    assert loaded.SerializeToString() == model.SerializeToString()
    for before, after in zip(model.graph.initializer, loaded.graph.initializer):
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(before),
                                      onnx.numpy_helper.to_array(after))
    assert (loaded.doc_string, loaded.graph.doc_string) == ("model doc", "graph doc")
    assert [(p.key, p.value) for p in loaded.metadata_props] == [("owner", "test")]
    np.testing.assert_array_equal(run(loaded, np.ones((2, 12), np.float32))[1],
                                  np.arange(4, dtype=np.float32))
