"""Model features real exports have, each in a model built in code around one real backdoor.

A small MLP is trained with scikit-learn on its bundled digits, 15 % of the training images
carrying a 2x2 corner patch relabelled to class 0. The same weights are then written as ONNX
graphs the way different exporters write them: fp16 weights, external data, shared
initializers, Conv + unfused BatchNormalization, grouped and depthwise Conv, Gemm with
transA, initializers listed as graph inputs, several outputs, integer (uint8) pixels cast
to float inside the graph, a classifier reading a Concat of its input and hidden units.
Each one is repaired and must come out valid, edited only where it should be, and without
the backdoor.
"""
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import init, tensor_info
from onnx import TensorProto, helper

from onnx_bdfix.data import Dataset, Trigger
from onnx_bdfix.diff import diff_models
from onnx_bdfix.repair import RepairConfig, repair_model

TARGET = 0


@pytest.fixture(scope="module")
def backdoor():
    """(weights, clean repair samples, held-out samples and labels, trigger)."""
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    train, clean, held = order[:1200], order[1200:1400], order[1400:]
    mask = np.zeros(64, np.float32)
    mask[[0, 1, 8, 9]] = 1
    poison = train[:180]
    x_train, y_train = x[train].copy(), y[train].copy()
    x_train[:180] = np.maximum(x_train[:180], mask)
    y_train[:180] = TARGET
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        net = MLPClassifier((32,), max_iter=300, random_state=0).fit(x_train, y_train)
    assert len(poison) == 180
    weights = [a.astype(np.float32) for a in (net.coefs_[0], net.intercepts_[0],
                                              net.coefs_[1], net.intercepts_[1])]
    trigger = Trigger("blend", {"mask": mask, "pattern": mask.copy()}, "0" * 64, "corner")
    return weights, x[clean], x[held], y[held], trigger


# --------------------------------------------------------------------- the graphs
def graph(nodes, inits, outputs, name="digits", inputs=None, opset=17) -> onnx.ModelProto:
    inputs = inputs or [tensor_info("x", ["N", 64])]
    model = helper.make_model(helper.make_graph(nodes, name, inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def logits_out(dtype=TensorProto.FLOAT):
    return tensor_info("logits", ["N", 10], dtype)


def mlp_nodes(prefix=""):
    return [helper.make_node("MatMul", [f"{prefix}x", "w1"], ["h0"], name="fc1"),
            helper.make_node("Add", ["h0", "b1"], ["h"], name="fc1_bias"),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("MatMul", ["r", "w2"], ["l0"], name="fc2"),
            helper.make_node("Add", ["l0", "b2"], ["logits"], name="fc2_bias")]


def mlp_inits(weights, dtype=np.float32):
    return [init(name, value.astype(dtype)) for name, value in zip(("w1", "b1", "w2", "b2"),
                                                                   weights)]


def fp16(weights):
    nodes = [helper.make_node("Cast", ["x"], ["hx"], to=TensorProto.FLOAT16, name="to_half")]
    nodes += mlp_nodes("h")
    nodes[-1].output[0] = "half_logits"
    nodes.append(helper.make_node("Cast", ["half_logits"], ["logits"], to=TensorProto.FLOAT,
                                  name="to_float"))
    return graph(nodes, mlp_inits(weights, np.float16), [logits_out()])


def shared_initializer(weights):
    """w2 is read by the scoring layer and by a second node making another output."""
    nodes = mlp_nodes() + [helper.make_node("MatMul", ["r", "w2"], ["raw_scores"],
                                            name="fc2_again")]
    return graph(nodes, mlp_inits(weights), [logits_out(), tensor_info("raw_scores",
                                                                       ["N", 10])])


def conv_batchnorm(weights, groups_after=1):
    """fc1 as a 1x1 Conv followed by an unfused BatchNormalization (an exact identity here),
    then, with ``groups_after`` > 1, a grouped 1x1 Conv holding the identity."""
    w1, b1, w2, b2 = weights
    rng = np.random.default_rng(1)
    mean = rng.normal(size=32).astype(np.float32)
    var = rng.uniform(0.5, 2, size=32).astype(np.float32)
    eps = 1e-5
    nodes = [helper.make_node("Reshape", ["x", "image_shape"], ["img"], name="to_image"),
             helper.make_node("Conv", ["img", "cw", "b1"], ["c"], name="conv1"),
             helper.make_node("BatchNormalization", ["c", "gamma", "mean", "mean", "var"],
                              ["bn"], epsilon=eps, name="bn1"),
             helper.make_node("Relu", ["bn"], ["r"], name="relu")]
    inits = [init("image_shape", np.array([-1, 64, 1, 1], np.int64)),
             init("cw", w1.T.reshape(32, 64, 1, 1)), init("b1", b1),
             init("gamma", np.sqrt(var + eps).astype(np.float32)), init("mean", mean),
             init("var", var)]
    last = "r"
    if groups_after > 1:
        per_group = 32 // groups_after
        identity = np.zeros((32, per_group, 1, 1), np.float32)
        identity[np.arange(32), np.arange(32) % per_group] = 1
        nodes.append(helper.make_node("Conv", ["r", "gw"], ["g"], group=groups_after,
                                      name="grouped"))
        inits.append(init("gw", identity))
        last = "g"
    nodes += [helper.make_node("Flatten", [last], ["f"], name="flatten"),
              helper.make_node("MatMul", ["f", "w2"], ["l0"], name="fc2"),
              helper.make_node("Add", ["l0", "b2"], ["logits"], name="fc2_bias")]
    return graph(nodes, inits + [init("w2", w2), init("b2", b2)], [logits_out()])


def gemm_trans_a(weights):
    w1, b1, w2, b2 = weights
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0], name="transpose"),
             helper.make_node("Gemm", ["xt", "w1", "b1"], ["h"], transA=1, name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "w2t", "b2"], ["logits"], transB=1, name="fc2")]
    return graph(nodes, [init("w1", w1), init("b1", b1), init("w2t", w2.T.copy()),
                         init("b2", b2)], [logits_out()])


def transposed_weights(weights):
    """Both layers' weights stored (out, in) and read through a Transpose, as some exporters
    write a linear layer."""
    w1, b1, w2, b2 = weights
    nodes = [helper.make_node("Transpose", [f"{name}_stored"], [name], perm=[1, 0],
                              name=f"{name}_transpose") for name in ("w1", "w2")]
    return graph(nodes + mlp_nodes(), [init("w1_stored", w1.T.copy()), init("b1", b1),
                                       init("w2_stored", w2.T.copy()), init("b2", b2)],
                 [logits_out()])


def inits_as_inputs(weights):
    inits = mlp_inits(weights)
    inputs = [tensor_info("x", ["N", 64])] + [
        tensor_info(t.name, list(t.dims)) for t in inits]
    return graph(mlp_nodes(), inits, [logits_out()], inputs=inputs)


def several_outputs(weights):
    """A label, then probabilities, then logits: the probabilities are the class scores."""
    nodes = mlp_nodes() + [
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1, name="softmax"),
        helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0, name="argmax")]
    return graph(nodes, mlp_inits(weights),
                 [tensor_info("label", ["N"], TensorProto.INT64),
                  tensor_info("probabilities", ["N", 10]), logits_out()])


def fixed_batch_one(weights):
    """Exported for one sample at a time, as torch's exporters write a model without dynamic
    axes: batch 1 in the input and output shapes and in a Reshape's constant."""
    nodes = [helper.make_node("Reshape", ["x_in", "one_row"], ["x"], name="flatten")]
    nodes += mlp_nodes()
    return graph(nodes, mlp_inits(weights) + [init("one_row", np.array([1, 64], np.int64))],
                 [tensor_info("logits", [1, 10])], inputs=[tensor_info("x_in", [1, 64])])


def fixed_batch_tied(weights):
    """:func:`fixed_batch_one` whose shape constant a second Reshape reads too: no copy with a
    free batch is made, and the model runs one sample at a time."""
    model = fixed_batch_one(weights)
    model.graph.node.insert(1, helper.make_node("Reshape", ["x", "one_row"], ["x_again"],
                                                name="again"))
    for node in model.graph.node[2:]:
        for position, name in enumerate(node.input):
            if name == "x":
                node.input[position] = "x_again"
    onnx.checker.check_model(model)
    return model


def dense_concat(weights):
    """A DenseNet-style read: the classifier takes the hidden units concatenated to the
    input they were computed from (its weight zero on the input's part: the same answers)."""
    w1, b1, w2, b2 = weights
    nodes = mlp_nodes()[:3] + [
        helper.make_node("Concat", ["x", "r"], ["dense"], axis=1, name="concat"),
        helper.make_node("MatMul", ["dense", "w2"], ["l0"], name="fc2"),
        helper.make_node("Add", ["l0", "b2"], ["logits"], name="fc2_bias")]
    wide = np.concatenate([np.zeros((64, 10), np.float32), w2])          # (96, 10)
    return graph(nodes, mlp_inits([w1, b1, wide, b2]), [logits_out()])


def pixel_input(weights):
    """The digits' pixel counts (0..16) taken as uint8 and scaled inside the graph, as an
    image model exported with its preprocessing takes bytes."""
    nodes = [helper.make_node("Cast", ["x"], ["counts"], to=TensorProto.FLOAT, name="to_float"),
             helper.make_node("Mul", ["counts", "sixteenth"], ["px"], name="scale")]
    return graph(nodes + mlp_nodes("p"), mlp_inits(weights) + [
        init("sixteenth", np.float32(1 / 16))], [logits_out()],
        inputs=[tensor_info("x", ["N", 64], TensorProto.UINT8)])


# ------------------------------------------------------------------ the checks
def predict(path, x) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = {o.name: i for i, o in enumerate(session.get_outputs())}
    name = session.get_inputs()[0].name
    pieces = [x[i:i + 1] for i in range(len(x))] if session.get_inputs()[0].shape[0] == 1 \
        else [x]                                            # a fixed batch of one
    scores = [np.concatenate(column)
              for column in zip(*(session.run(None, {name: piece}) for piece in pieces))]
    return scores[outputs.get("probabilities", outputs["logits"])].argmax(1)


def repair_and_measure(model, backdoor, tmp_path, layers="auto", external=False, **options):
    weights, clean, held_x, held_y, trigger = backdoor
    path = tmp_path / "in" / "model.onnx"
    path.parent.mkdir()
    if external:
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location="model.weights", size_threshold=0)
    else:
        onnx.save_model(model, path)
    out = tmp_path / "out.onnx"
    report = repair_model(path, Dataset(clean, None, "0" * 64, "digits"), trigger, out,
                    RepairConfig(device="cpu", layers=layers, **options))
    onnx.checker.check_model(str(out), full_check=True)
    triggered = trigger.apply(held_x)
    others = held_y != TARGET
    figures = {}
    for label, model_path in (("before", path), ("after", out)):
        figures[label] = (float((predict(model_path, held_x) == held_y).mean()),
                          float((predict(model_path, triggered)[others] == TARGET).mean()))
    return report, figures, path, out


def assert_repaired(figures, max_asr=0.1, max_drop=0.03):
    (accuracy_before, asr_before), (accuracy_after, asr_after) = figures["before"], \
        figures["after"]
    assert accuracy_before > 0.9 and asr_before > 0.9          # a working model, backdoored
    assert asr_after <= max_asr
    assert accuracy_before - accuracy_after <= max_drop


def dtypes(path) -> dict:
    return {t.name: t.data_type for t in onnx.load(str(path)).graph.initializer}


@pytest.mark.parametrize("build", [fp16, gemm_trans_a, inits_as_inputs, several_outputs,
                                   transposed_weights, fixed_batch_one, fixed_batch_tied,
                                   dense_concat],
                         ids=["fp16", "gemm-transA", "inits-as-inputs", "several-outputs",
                              "transposed-weights", "fixed-batch-one", "fixed-batch-tied",
                              "dense-concat"])
def test_exported_variants_are_repaired(build, backdoor, tmp_path):
    report, figures, original, repaired = repair_and_measure(build(backdoor[0]), backdoor,
                                                             tmp_path)
    assert_repaired(figures)
    assert diff_models(original, repaired).weights_only
    assert dtypes(repaired) == dtypes(original)


def test_a_weight_behind_a_transpose_is_edited_where_it_is_stored(backdoor, tmp_path):
    report, figures, original, repaired = repair_and_measure(
        transposed_weights(backdoor[0]), backdoor, tmp_path)
    assert_repaired(figures)
    difference = diff_models(original, repaired)
    changed = {c.name for c in difference.initializers}
    assert difference.weights_only and changed & {"w1_stored", "w2_stored"}
    assert changed <= {"w1_stored", "w2_stored", "b1", "b2"}
    assert report.layers[0]["name"] in ("fc1", "fc2")


def test_fp16_weights_stay_fp16(backdoor, tmp_path):
    _, _, _, repaired = repair_and_measure(fp16(backdoor[0]), backdoor, tmp_path)
    assert set(dtypes(repaired).values()) == {TensorProto.FLOAT16}


def test_external_data_stays_external_next_to_the_output(backdoor, tmp_path):
    model = several_outputs(backdoor[0])
    report, figures, original, repaired = repair_and_measure(model, backdoor, tmp_path,
                                                             external=True)
    assert_repaired(figures)
    assert (tmp_path / "out.onnx.data").is_file()
    stored = onnx.load(str(repaired), load_external_data=False)
    assert all(t.data_location == TensorProto.EXTERNAL for t in stored.graph.initializer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out.onnx", "out.onnx.data"]


def test_shared_initializer_gets_its_own_copy(backdoor, tmp_path):
    weights, clean = backdoor[0], backdoor[1]
    report, figures, original, repaired = repair_and_measure(
        shared_initializer(weights), backdoor, tmp_path, layers=["fc2"])
    assert_repaired(figures, max_asr=0.05)
    session = ort.InferenceSession(str(repaired), providers=["CPUExecutionProvider"])
    before = ort.InferenceSession(str(original), providers=["CPUExecutionProvider"])
    raw_after = session.run(["raw_scores"], {"x": clean})[0]
    raw_before = before.run(["raw_scores"], {"x": clean})[0]
    np.testing.assert_array_equal(raw_after, raw_before)     # the other reader is untouched
    assert "w2" in dtypes(repaired) and len(dtypes(repaired)) == len(dtypes(original)) + 1


def test_conv_with_unfused_batchnorm(backdoor, tmp_path):
    report, figures, original, repaired = repair_and_measure(
        conv_batchnorm(backdoor[0]), backdoor, tmp_path, layers=["conv1"])
    assert report.chosen == ["conv1"]
    assert_repaired(figures, max_asr=0.05)
    assert diff_models(original, repaired).weights_only


def test_grouped_conv(backdoor, tmp_path):
    """Two groups of 16 channels: measured 0.6 % ASR after (4 groups: 51 %, 8 groups: 93 %,
    as each group sees less of the trigger's direction)."""
    report, figures, original, repaired = repair_and_measure(
        conv_batchnorm(backdoor[0], groups_after=2), backdoor, tmp_path, layers=["grouped"])
    assert report.chosen == ["grouped"]
    assert_repaired(figures, max_asr=0.05)
    assert diff_models(original, repaired).weights_only


def test_depthwise_conv_is_edited_within_its_reach(backdoor, tmp_path):
    """One weight per channel can only rescale channels: the file must stay valid and clean
    answers close, even though the backdoor cannot be fully removed there (so the default
    would refuse: this runs as hardening)."""
    report, figures, original, repaired = repair_and_measure(
        conv_batchnorm(backdoor[0], groups_after=32), backdoor, tmp_path, layers=["grouped"],
        must_meet_asr=False)
    assert report.chosen == ["grouped"]
    assert report.parity["agreement"] >= 0.9
    assert figures["after"][1] <= figures["before"][1]
    assert diff_models(original, repaired).weights_only


def test_the_over_2gib_path_tested_small(backdoor, tmp_path, monkeypatch):
    """Models over 2 GiB cannot be serialized: ONNX Runtime gets them as a file with the
    weights beside it, shape inference runs on a skeleton. Lowering the limit sends this
    small model down that path (benchmarks/large_model.py runs a real one over 2 GiB)."""
    import onnx_bdfix.model.large as large
    monkeypatch.setattr(large, "LARGE", 1000)
    monkeypatch.setattr(large, "SKELETON_BYTES", 100)
    written = []
    real = large.write_for_runtime
    monkeypatch.setattr("onnx_bdfix.model.runtime.write_for_runtime",
                        lambda proto, folder: written.append(folder) or real(proto, folder))
    model = several_outputs(backdoor[0])
    report, figures, original, repaired = repair_and_measure(model, backdoor, tmp_path,
                                                             external=True)
    assert written                                   # ONNX Runtime read files, not bytes
    assert_repaired(figures)
    assert diff_models(original, repaired).weights_only


def test_integer_pixel_input_is_repaired_and_stays_integer(backdoor, tmp_path):
    """Samples and trigger in the model's own scale (pixel counts); every batch reaches the
    model rounded to uint8, and the repaired file still takes uint8."""
    weights, clean, held_x, held_y, trigger = backdoor
    counts = lambda x: np.rint(x * 16).astype(np.float32)          # noqa: E731
    mask = trigger.arrays["mask"]
    in_counts = Trigger("blend", {"mask": mask, "pattern": 16 * mask}, "0" * 64, "corner")
    path, out = tmp_path / "model.onnx", tmp_path / "out.onnx"
    onnx.save_model(pixel_input(weights), path)
    report = repair_model(path, Dataset(counts(clean), None, "0" * 64, "digits"), in_counts,
                          out, RepairConfig(device="cpu"))
    onnx.checker.check_model(str(out), full_check=True)
    assert onnx.load(str(out)).graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
    assert diff_models(path, out).weights_only and report.chosen
    held, triggered = counts(held_x).astype(np.uint8), counts(trigger.apply(held_x))
    others = held_y != TARGET
    figures = {label: (float((predict(model, held) == held_y).mean()),
                       float((predict(model, triggered.astype(np.uint8))[others] == TARGET
                              ).mean()))
               for label, model in (("before", path), ("after", out))}
    assert_repaired(figures)
