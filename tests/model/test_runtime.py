"""Sessions: models exported with a fixed batch run batched through a freed copy, or in pieces
of that batch where the copy does not answer alike; integer
inputs get rounded, clipped samples; an input onnx-bdfix cannot feed is a clear error."""
import numpy as np
import onnx
import pytest
from conftest import init, make_model, tensor_info
from onnx import TensorProto, helper, numpy_helper

from onnx_bdfix.errors import ModelError
from onnx_bdfix.model import model_input
from onnx_bdfix.model.batch import FREE_DIM, freed
from onnx_bdfix.model.runtime import open_runner, scores


def fixed_batch_model(batch: int):
    """x (batch, 3) -> Reshape to a constant (batch, 3), as exports with a fixed batch write
    it -> MatMul -> y (batch, 2); the Reshape fails on any other batch."""
    weights = np.arange(6, dtype=np.float32).reshape(3, 2)
    return make_model(
        [helper.make_node("Reshape", ["x", "shape"], ["flat"], name="flatten"),
         helper.make_node("MatMul", ["flat", "w"], ["y"], name="fc")],
        [tensor_info("x", [batch, 3])], [tensor_info("y", [batch, 2])],
        [init("shape", np.array([batch, 3], np.int64)), init("w", weights)]), weights


def tied_batch_model(batch: int):
    """x (batch, 3) joined to a constant column of ``batch`` rows (as a class token expanded
    to the exported batch is) -> MatMul -> y (batch, 2): no copy can free that batch."""
    weights = np.arange(6, dtype=np.float32).reshape(3, 2)
    return make_model(
        [helper.make_node("Concat", ["x", "column"], ["joined"], axis=1, name="join"),
         helper.make_node("MatMul", ["joined", "w"], ["y"], name="fc")],
        [tensor_info("x", [batch, 3])], [tensor_info("y", [batch, 2])],
        [init("column", np.zeros((batch, 1), np.float32)),
         init("w", np.concatenate([weights, np.ones((1, 2), np.float32)]))]), weights


@pytest.mark.parametrize("batch, rows", [(1, 5), (2, 5), (4, 4), (3, 1)])
def test_a_fixed_batch_runs_in_pieces_and_keeps_every_row(batch, rows):
    model, weights = tied_batch_model(batch)
    runner = open_runner(model, "cpu")
    assert runner.fixed_batch == batch
    x = np.random.default_rng(0).normal(size=(rows, 3)).astype(np.float32)
    np.testing.assert_allclose(scores(runner, x, "y", batch_size=64), x @ weights, rtol=1e-6)


@pytest.mark.parametrize("batch", [1, 2, 4])
def test_a_fixed_batch_a_reshape_flattens_runs_batched_on_a_freed_copy(batch):
    model, weights = fixed_batch_model(batch)
    before = model.SerializeToString()
    runner = open_runner(model, "cpu")
    assert runner.fixed_batch is None
    assert runner.session.get_inputs()[0].shape[0] == FREE_DIM
    x = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    np.testing.assert_allclose(runner.run(x, ["y"])[0], x @ weights, rtol=1e-6)
    assert model.SerializeToString() == before         # the model itself keeps its batch


def test_freed_writes_the_batch_as_the_inputs():
    model, _ = fixed_batch_model(1)
    before = model.SerializeToString()
    copy = onnx.load_from_string(freed(model, 1))
    assert numpy_helper.to_array(copy.graph.initializer[0]).tolist() == [-1, 3]
    assert copy.graph.input[0].type.tensor_type.shape.dim[0].dim_param == FREE_DIM
    assert model.SerializeToString() == before          # undone once serialized
    model.graph.initializer[0].CopyFrom(init("shape", np.array([1, -1], np.int64)))
    copy = onnx.load_from_string(freed(model, 1))
    assert numpy_helper.to_array(copy.graph.initializer[0]).tolist() == [0, -1]
    model.graph.node[0].attribute.append(helper.make_attribute("allowzero", 1))
    assert freed(model, 1) is None      # "0" would mean zero rows: nothing says "as the input"


def test_a_free_batch_is_not_split():
    model, weights = fixed_batch_model(2)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    model.graph.initializer[0].CopyFrom(init("shape", np.array([-1, 3], np.int64)))
    runner = open_runner(model, "cpu")
    assert runner.fixed_batch is None
    x = np.ones((7, 3), np.float32)
    np.testing.assert_allclose(runner.run(x, ["y"])[0], x @ weights)


def test_several_inputs_are_cut_by_their_rows_per_sample():
    """A graph's tail may take a tensor with several rows per sample (here 2): each piece
    holds that many rows of it per sample."""
    model = make_model([helper.make_node("Add", ["a", "b"], ["y"], name="add")],
                       [tensor_info("a", [1, 3]), tensor_info("b", [2, 3])],
                       [tensor_info("y", [2, 3])], [])
    runner = open_runner(model, "cpu")
    a = np.arange(9, dtype=np.float32).reshape(3, 3)
    b = np.arange(18, dtype=np.float32).reshape(6, 3)
    expected = np.repeat(a, 2, axis=0) + b
    np.testing.assert_allclose(runner.run_feed({"a": a, "b": b}, ["y"])[0], expected)


def cast_model(dtype):
    """x (N, 5) of ``dtype`` -> Cast to float -> y: what the model received."""
    return make_model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
                      [tensor_info("x", ["N", 5], dtype)], [tensor_info("y", ["N", 5])], [])


@pytest.mark.parametrize("dtype, received", [
    (TensorProto.UINT8, [0, 0, 1, 255, 255]), (TensorProto.INT8, [-3, 0, 1, 127, 127]),
    (TensorProto.DOUBLE, [-3.2, 0.4, 0.6, 254.7, 300])])
def test_each_input_type_gets_its_own_samples_an_integer_one_rounded_and_clipped(dtype,
                                                                                  received):
    model = cast_model(dtype)
    runner = open_runner(model, "cpu")
    assert runner.input_dtype == model_input(model).dtype
    x = np.array([[-3.2, 0.4, 0.6, 254.7, 300]], np.float32)
    np.testing.assert_allclose(runner.run(x, ["y"])[0], [received], rtol=1e-6)


def test_an_input_it_cannot_feed_is_named_in_the_error():
    with pytest.raises(ModelError, match="'x' is a bool tensor"):
        model_input(cast_model(TensorProto.BOOL))
