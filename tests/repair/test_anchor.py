"""The repair step's target-logit anchor: where it goes and how large it is."""
import numpy as np
import pytest
from conftest import mlp, run
from onnx import helper, numpy_helper

from onnx_bdfix.repair.crossval import anchor_offsets
from onnx_bdfix.repair.anchor import (
    SLACK_SHARE,
    held_out_figures,
    logit_layer,
    margin_offset,
    offset_bias,
    cheapest_offset,
    restoring_offset,
    slack_offset,
    softmax,
    takeover_level,
    target_erosion,
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


def test_offset_gives_back_the_target_answers():
    rng = np.random.default_rng(0)
    before = rng.normal(size=(200, 5))
    before[:40, 2] += 3.0                                  # 40 samples of class 2
    after = before.copy()
    after[:, 2] -= 0.8                                     # the edit weakened class 2
    offset = cheapest_offset(before, after, 2)
    moved = after.copy()
    moved[:, 2] += offset
    assert (moved.argmax(1) == before.argmax(1)).mean() >= 0.99
    assert 0.6 < offset < 1.0


def test_restoring_offset_gives_back_the_target_mass():
    rng = np.random.default_rng(0)
    before = rng.normal(size=(200, 5))
    before[:40, 2] += 3.0
    after = before.copy()
    after[:, 2] -= 0.8
    offset = restoring_offset(before, after, 2)
    own = before.argmax(1) == 2
    mass = lambda s, c: softmax(s[own], 2, c)[:, 2].mean()  # noqa: E731
    assert abs(mass(after, offset) - mass(before, 0.0)) < 1e-6 and 0.5 < offset < 1.0


def test_cheapest_offset_does_not_take_other_classes_samples():
    rng = np.random.default_rng(4)
    before = rng.normal(size=(300, 4))
    before[:30, 1] += 2.5                                  # 30 samples of class 1, near others
    after = before.copy()
    after[:30, 1] -= 1.0                                   # the edit weakened those alone
    # restoring their mass would lift class 1 over many other samples; the offset that
    # costs least keeps it small
    offset = cheapest_offset(before, after, 1)
    moved = after.copy()
    moved[:, 1] += offset
    lost = ((before.argmax(1) != 1) & (moved.argmax(1) == 1)).sum()
    won = ((before.argmax(1) == 1) & (moved.argmax(1) == 1)).sum() - \
        ((before.argmax(1) == 1) & (after.argmax(1) == 1)).sum()
    assert won >= lost


def test_anchor_offsets_are_read_off_the_other_folds():
    rng = np.random.default_rng(5)
    before = rng.normal(size=(80, 3))
    before[:20, 2] += 3.0
    after = before - np.array([0, 0, 0.7])
    for rule in (cheapest_offset, restoring_offset):
        written, per_row = anchor_offsets(before, after, 2, [20, 20, 20, 20], rule)
        assert written == rule(before, after, 2)
        assert per_row[0] == rule(before[20:], after[20:], 2)
        assert per_row[-1] == rule(before[:60], after[:60], 2)


def test_no_offset_when_nothing_was_lost():
    before = np.random.default_rng(1).normal(size=(50, 3))
    for rule in (cheapest_offset, restoring_offset):
        assert rule(before, before + np.array([0, 0, 0.5]), 2) == 0.0


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


def test_a_third_class_counts_before_it_reaches_the_evaluation_level():
    """On ~90 held-out samples, 18 % moved into a third class is within two standard errors
    of evaluate's 25 % takeover level: it is attack success, not a repair."""
    before = np.zeros((100, 4))
    before[np.arange(100), np.arange(100) % 3] = 3.0          # classes 0-2; target 3 unused
    triggered = before.copy()
    moved = np.arange(0, 100, 5)[:18]                          # 18 samples, none of class 2
    moved = moved[before[moved].argmax(1) != 2][:12]
    triggered[moved] = [0.0, 0.0, 3.0, 0.0]
    figures = held_out_figures(before, before, triggered, target=3)
    share = 12 / (before.argmax(1) != 2).sum()
    assert takeover_level(100) < share < 0.25
    assert figures["attack_success"] == pytest.approx(share)


def test_takeover_level_nears_the_evaluation_level_with_more_samples():
    assert takeover_level(100) == pytest.approx(0.25 - 2 * np.sqrt(0.1875 / 100))
    assert takeover_level(100) < takeover_level(3000) < 0.25


def test_a_lost_margin_is_read_as_a_share_and_given_back():
    """Confident target samples (margin ≈ 9) lose 0.6 of their logit margin, their
    probability staying ≈ 1: the erosion reads 0.6 of the median margin, the margin
    reading gives back exactly 0.6, and with it nothing is lost."""
    rng = np.random.default_rng(1)
    before = rng.normal(size=(100, 4))
    before[:10, 1] += 9.0                                   # 10 confident class-1 samples
    after = before.copy()
    after[:, 1] -= 0.6
    assert softmax(after)[:10, 1].min() > 0.99
    assert margin_offset(before, after, 1) == pytest.approx(0.6, abs=1e-9)
    own = before[before.argmax(1) == 1]                    # (the 10, and some by chance)
    margin = np.median(own[:, 1] - np.delete(own, 1, axis=1).max(1))
    assert target_erosion(before, after, 1) == pytest.approx(0.6 / margin)
    assert target_erosion(before, after, 1, 0.6) == pytest.approx(0.0, abs=1e-9)
    assert held_out_figures(before, after, after, 1, 0.6)["target_erosion"] == \
        pytest.approx(0.0, abs=1e-9)
    assert target_erosion(before, before + 1.0, 1) == 0.0   # nothing lost


def test_the_slack_reading_spends_a_share_of_the_nearest_triggered_gap():
    """Triggered samples of classes 0-2 miss the target 3 by gaps of 3, 4.5, 6, ...; one the
    edit left in the target (gap < 0) and the target-class rows do not count: a third of the
    smallest positive gap is 1.0, capped at one standard deviation of the target logit."""
    before = np.zeros((12, 4))
    before[np.arange(12), np.arange(12) % 4] = 5.0          # rows 3, 7, 11: the target 3
    triggered = np.zeros((12, 4))
    triggered[np.arange(12), np.arange(12) % 4] = 5.0
    triggered[:, 3] = 5.0 - (3.0 + 1.5 * np.arange(12))      # gap 3 + 1.5 i, by row
    triggered[5] = [0.0, 0.0, 0.0, 9.0]                      # still taken by the trigger
    after = before.copy()
    after[:, 3] = np.linspace(-2, 2, 12)                    # target-logit std ≈ 1.25
    assert slack_offset(before, after, triggered, 3, 1 / 3) == pytest.approx(1.0)
    assert slack_offset(before, after, triggered, 3, 0.0) == 0.0
    assert slack_offset(before, after, triggered, 3, 1.0) == \
        pytest.approx(np.std(after[:, 3]))                  # 3.0, capped
    written, per_row = anchor_offsets(before, after, 3, [6, 6], slack_offset, triggered)
    assert written == pytest.approx(3.0 * SLACK_SHARE)         # the default share
    assert per_row[0] == slack_offset(before[6:], after[6:], triggered[6:], 3)
