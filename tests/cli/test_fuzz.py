"""Property-based fuzzing: mutated models, data and triggers end in success or exit 3.

Never a traceback, an internal error (exit 4) or a partial output; inputs never change.
Derandomized, so CI runs the same examples each time; set FUZZ_EXAMPLES for a longer run
and FUZZ_RANDOM=1 for fresh examples.
"""
import os
from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner
from conftest import FIXTURES, mlp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx_bdfix_cli.main import main

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "30"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                derandomize="FUZZ_RANDOM" not in os.environ,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def run(args: list, inputs: list[Path], output: Path | None = None,
        allowed: tuple = (0, 3)) -> int:
    """``allowed``: success codes (the gate adds 1, a failed check; repair 1, no edit within
    its bounds) and 3. Exits 1 and 3 write nothing."""
    before = {path: path.read_bytes() for path in inputs}
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code in allowed, (result.exit_code, result.stderr, result.exception)
    assert "Traceback" not in result.stderr
    if result.exit_code in (1, 3) and output is not None:
        assert not output.exists()
    if result.exit_code == 3:
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert {path: path.read_bytes() for path in inputs} == before
    return result.exit_code


def tiny_inputs(folder: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    np.savez(folder / "clean.npz", x=rng.normal(size=(40, 12)).astype(np.float32),
             y=rng.integers(0, 4, size=40))
    delta = np.zeros(12, np.float32)
    delta[0] = 4
    np.savez(folder / "trigger.npz", delta=delta)
    return folder / "clean.npz", folder / "trigger.npz"


# ---------------------------------------------------------------- structured mutations
def mutate(model: onnx.ModelProto, kind: str, number: int, text: str) -> bytes:
    graph = model.graph
    node = graph.node[number % len(graph.node)]
    tensor = graph.initializer[number % len(graph.initializer)]
    if kind == "opset":
        model.opset_import[0].version = number - 5
    elif kind == "ir_version":
        model.ir_version = number - 3
    elif kind == "op_type":
        node.op_type = text or "Relu"
    elif kind == "domain":
        node.domain = text
    elif kind == "drop_node":
        graph.node.remove(node)
    elif kind == "rename_input":
        node.input[number % len(node.input)] = text
    elif kind == "dims":
        tensor.dims.append(number % 4)
    elif kind == "data_type":
        tensor.data_type = number % 17
    elif kind == "raw_data":
        tensor.raw_data = tensor.raw_data[: number % (len(tensor.raw_data) + 1)]
    elif kind == "attribute":
        node.attribute.append(onnx.helper.make_attribute(text or "transB", number - 3))
    elif kind == "input_dim":
        graph.input[0].type.tensor_type.shape.dim[1].dim_value = number - 2
    elif kind == "input_type":
        graph.input[0].type.tensor_type.elem_type = number % 17
    elif kind == "external":
        onnx.external_data_helper.set_external_data(tensor, text or "w.bin", number, 16)
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
    elif kind == "outputs":
        del graph.output[number % len(graph.output):]
    elif kind == "output_name":
        graph.output[0].name = text
    return model.SerializeToString()


KINDS = ["opset", "ir_version", "op_type", "domain", "drop_node", "rename_input", "dims",
         "data_type", "raw_data", "attribute", "input_dim", "input_type", "external",
         "outputs", "output_name"]
NAMES = st.sampled_from(["", "x", "h", "Foo", "com.evil", "../../etc/passwd", "/etc/passwd",
                         "w1", "logits", "Gemm", "MatMul", "Conv", "group", "transA",
                         "ai.onnx.ml", "\u00e9\u00e8"])


@FUZZ
@given(kind=st.sampled_from(KINDS), number=st.integers(0, 40), text=NAMES)
def test_mutated_models(tmp_path_factory, kind, number, text):
    folder = tmp_path_factory.mktemp("model")
    clean, trigger = tiny_inputs(folder)
    model_path = folder / "model.onnx"
    model_path.write_bytes(mutate(mlp(), kind, number, text))
    inputs = [model_path, clean, trigger]
    run(["inspect", model_path], inputs)
    run(["evaluate", model_path, "--data", clean, "--trigger", trigger, "--device", "cpu"],
        inputs)
    out = folder / "out.onnx"
    run(["repair", model_path, "--clean", clean, "--trigger", trigger, "-o", out,
         "--device", "cpu"], inputs, out, allowed=(0, 1, 3))


@FUZZ
@given(data=st.data())
def test_corrupted_model_bytes(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("bytes")
    payload = bytearray((FIXTURES / "cnn_badnets" / "model.onnx").read_bytes())
    cut = data.draw(st.integers(0, len(payload)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(payload) - 1),
                                         st.integers(1, 255)), max_size=20))
    for position, value in flips:
        payload[position] ^= value
    model_path = folder / "model.onnx"
    model_path.write_bytes(bytes(payload[:cut] if data.draw(st.booleans()) else payload))
    run(["inspect", model_path], [model_path])
    run(["gate", model_path, "--data", FIXTURES / "cnn_badnets" / "clean.npz", "--trigger",
         FIXTURES / "cnn_badnets" / "trigger.npz", "--device", "cpu"], [model_path],
        allowed=(0, 1, 3))


# ------------------------------------------------------------------- data and triggers
ARRAYS = st.one_of(
    st.builds(lambda n, d, value: np.full((n, d), value, np.float32),
              st.integers(0, 12), st.integers(1, 14),
              st.sampled_from([0.0, 1.0, -1e30, 1e30, np.nan, np.inf])),
    st.builds(lambda n: np.arange(n * 12).reshape(n, 12).astype(np.int64), st.integers(0, 50)),
    st.builds(lambda shape: np.zeros(shape, np.float32),
              st.lists(st.integers(0, 13), min_size=0, max_size=4).map(tuple)),
    st.sampled_from([np.array(["a", "b"]), np.array([True, False]), np.zeros(3, np.complex64),
                     np.float32(3.0)]))


@FUZZ
@given(x=ARRAYS, y=st.one_of(st.none(), ARRAYS), scale=st.one_of(st.none(), ARRAYS))
def test_mutated_data(tmp_path_factory, x, y, scale):
    folder = tmp_path_factory.mktemp("data")
    _, trigger = tiny_inputs(folder)
    (folder / "model.onnx").write_bytes(mlp().SerializeToString())
    arrays = {"x": x}
    if y is not None:
        arrays["y"] = y
    if scale is not None:
        arrays["scale"] = scale
    np.savez(folder / "data.npz", **arrays)
    inputs = [folder / "model.onnx", folder / "data.npz", trigger]
    run(["evaluate", folder / "model.onnx", "--data", folder / "data.npz", "--trigger",
         trigger], inputs)
    out = folder / "out.onnx"
    run(["repair", folder / "model.onnx", "--clean", folder / "data.npz", "--trigger",
         trigger, "-o", out, "--device", "cpu"], inputs, out)


@FUZZ
@given(arrays=st.dictionaries(st.sampled_from(["mask", "pattern", "delta", "clip_min",
                                               "clip_max", "target_class", "other"]),
                              ARRAYS, max_size=4))
def test_mutated_triggers(tmp_path_factory, arrays):
    folder = tmp_path_factory.mktemp("trigger")
    clean, _ = tiny_inputs(folder)
    (folder / "model.onnx").write_bytes(mlp().SerializeToString())
    np.savez(folder / "t.npz", **arrays)
    inputs = [folder / "model.onnx", clean, folder / "t.npz"]
    run(["gate", folder / "model.onnx", "--data", clean, "--trigger", folder / "t.npz"],
        inputs, allowed=(0, 1, 3))
    run(["evaluate", folder / "model.onnx", "--data", clean, "--trigger", folder / "t.npz"],
        inputs)
