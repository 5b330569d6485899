"""The repair step's target-logit anchor: where it goes and how large it is."""
import numpy as np
from conftest import mlp, run
from onnx import helper, numpy_helper

from onnx_bdfix.repair.anchor import (
    held_out_figures,
    logit_layer,
    offset_bias,
    target_mass,
    target_offset,
)
from onnx_bdfix.repair.edit import Anchor, edited_model
from onnx_bdfix.repair.layers import find_layers
from onnx_bdfix.repair.stats import KeyStats


def test_logit_layer_is_the_biased_classifier():
    model = mlp()
    layer = logit_layer(model, find_layers(model), "logits", 4)
    assert layer.name == "fc2" and layer.bias == "b2"


def test_logit_layer_is_found_through_softmax():
    model = mlp()
    model.graph.output[0].name = "probabilities"
    model.graph.node.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
    assert logit_layer(model, find_layers(model), "probabilities", 4).name == "fc2"


def test_offset_restores_the_target_mass():
    rng = np.random.default_rng(0)
    before = rng.normal(size=(200, 5))
    before[:40, 2] += 3.0                                  # 40 samples of class 2
    after = before.copy()
    after[:, 2] -= 0.8                                     # the edit weakened class 2
    offset = target_offset(before, after, 2)
    own = before.argmax(1) == 2
    assert abs(target_mass(after[own], 2, offset) - target_mass(before[own], 2)) < 1e-6
    assert 0.5 < offset < 1.0


def test_no_offset_when_nothing_was_lost():
    before = np.random.default_rng(1).normal(size=(50, 3))
    assert target_offset(before, before + np.array([0, 0, 0.5]), 2) == 0.0


def test_held_out_figures_counts_and_smooth():
    before = np.array([[3.0, 0.0], [0.0, 3.0], [3.0, 0.0]])
    triggered = np.array([[0.0, 3.0], [0.0, 3.0], [3.0, 0.0]])
    figures = held_out_figures(before, before, triggered, target=1)
    assert figures["agreement"] == 1.0 and figures["clean_shift"] == 0.0
    assert figures["attack_success"] == 0.5                # one of the two class-0 samples
    assert abs(figures["trigger_pull"] - 0.5) < 1e-6        # (0.953 + 0.047) / 2


def test_anchor_changes_only_the_target_bias():
    model = mlp()
    layers = find_layers(model)
    fc2 = layers[1]
    stats = KeyStats(1, fc2.key_dim)
    keys = np.random.default_rng(2).normal(size=(1, 30, fc2.key_dim)).astype(np.float32)
    stats.add(keys, keys, np.ones(30, np.float32))         # no trigger: Δ = 0
    edited = edited_model(model, [fc2], {"fc2": stats}, (1.0, 1e-2, 0.0),
                          Anchor(fc2, target=3, offset=0.5))
    x = np.random.default_rng(3).normal(size=(4, 12)).astype(np.float32)
    change = run(edited, x)[0] - run(model, x)[0]
    np.testing.assert_allclose(change, np.tile([0, 0, 0, 0.5], (4, 1)), atol=1e-4)
    bias = numpy_helper.to_array([i for i in model.graph.initializer if i.name == "b2"][0])
    assert offset_bias(fc2, bias, 3, 0.5)[3] == np.float32(bias[3] + 0.5)
