"""Which layers an automatic repair may edit (repair/candidates.py)."""
from dataclasses import replace

import numpy as np
import pytest
from conftest import init, make_model, mlp, tensor_info
from onnx import helper

from onnx_bdfix.model.index import GraphIndex
from onnx_bdfix.repair.candidates import patchify, unbypassed
from onnx_bdfix.repair.layers import find_layers
from onnx_bdfix.repair.plan import Plan


def stem_model(kernel, strides):
    """A Conv on the raw input (the stem), then a Gemm classifier."""
    rng = np.random.default_rng(0)
    side = 8
    out_side = (side - kernel) // strides + 1
    return make_model(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="stem",
                          kernel_shape=[kernel, kernel], strides=[strides, strides]),
         helper.make_node("Flatten", ["c"], ["f"]),
         helper.make_node("Gemm", ["f", "w2", "b2"], ["y"], name="head", transB=1)],
        [tensor_info("x", ["N", 3, side, side])], [tensor_info("y", ["N", 4])],
        [init("w", rng.normal(size=(5, 3, kernel, kernel)).astype(np.float32)),
         init("b", np.zeros(5, np.float32)),
         init("w2", rng.normal(size=(4, 5 * out_side * out_side)).astype(np.float32)),
         init("b2", np.zeros(4, np.float32))])


@pytest.mark.parametrize("kernel, strides, stem_kept", [(4, 4, True), (2, 2, True),
                                                         (3, 1, False), (4, 2, False)])
def test_a_stem_conv_is_a_candidate_only_when_it_patchifies(kernel, strides, stem_kept):
    model = stem_model(kernel, strides)
    layers = find_layers(model)
    kept = [layer.name for layer in unbypassed(GraphIndex(model), layers, "y")]
    assert ("stem" in kept) == stem_kept and "head" in kept
    assert patchify(layers[0]) == stem_kept


def test_a_pointwise_conv_is_no_patchify():
    model = stem_model(1, 1)
    assert not patchify(find_layers(model)[0])


def test_merge_edits_are_collected_only_in_the_second_pass():
    """The collect pass gathers the plain candidates; the merge edits' statistics (large on
    a ResNet: 1.70x the inference floor where 1.36x without them) only when asked for."""
    first, second = find_layers(mlp())
    plan = Plan(None, "logits", [first, second], [(second.name,)], np.arange(4), [0, 2, 4],
                [(first.name,)])
    assert [layer.name for layer in plan.involved] == [second.name]
    both = replace(plan, with_stronger=True).involved
    assert [layer.name for layer in both] == [first.name, second.name]
