"""The one rule for each figure (onnx_bdfix.metrics)."""
import numpy as np
import pytest

from onnx_bdfix.errors import DataError, InputError
from onnx_bdfix.metrics import (
    TAKEOVER,
    attack_success,
    check_labels,
    check_target,
    confusion_into,
    declared_target,
    infer_target,
    parity,
    quality,
    takeover,
)


def test_target_range_is_checked_once_for_every_source():
    check_target(9, 10)
    for bad in (10, -1):
        with pytest.raises(InputError, match="out of range"):
            check_target(bad, 10, "given in the trigger file")


def test_labels_outside_the_classes_are_a_data_error():
    check_labels(np.array([0, 9]), 10, "labels")
    with pytest.raises(DataError, match="label 99"):
        check_labels(np.array([0, 99]), 10, "labels")


def test_declared_target_prefers_the_option_then_the_trigger_file():
    class FromFile:
        target_class = 4
    assert declared_target(2, FromFile()) == (2, "given")
    assert declared_target(None, FromFile()) == (4, "given in the trigger file")
    assert declared_target(None, object()) == (None, "")


def test_inferred_target_ignores_samples_already_wrong():
    labels = np.array([0, 0, 1, 1, 2, 2, 2])
    predicted = np.array([0, 1, 1, 1, 2, 2, 1])       # samples 1 and 6 are already wrong
    landed = np.array([2, 1, 2, 2, 2, 2, 1])          # class 1 gets only the wrong ones
    target, rate = infer_target(labels, predicted, landed, 3)
    # class 2 takes every correctly classified sample of the other classes (rows 0, 2, 3)
    assert target == 2 and rate == pytest.approx(1.0)


def test_takeover_only_above_its_level_and_the_given_rate():
    assert takeover([0.0, 0.01, TAKEOVER + 0.1], 1, 0.01) == (2, TAKEOVER + 0.1)
    assert takeover([0.0, 0.01, TAKEOVER - 0.1], 1, 0.01) is None
    assert takeover([0.0, 0.9, 0.5], 1, 0.9) is None


def test_quality_and_parity():
    clean = np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    triggered = np.array([[0.0, 2.0], [0.0, 2.0], [2.0, 0.0]])
    figures = quality(clean, triggered, np.array([0, 1, 0]), 1)
    assert figures.clean_accuracy == 1.0
    assert figures.attack_success_rate == 0.5
    assert figures.target_class_accuracy == 1.0
    same = parity(clean, clean + 0.5)
    assert same.agreement == 1.0 and same.max_score_change == pytest.approx(0.5)


def test_target_confusion_is_the_floor_under_attack_success():
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    predicted = np.array([0, 2, 1, 1, 2, 2, 0, 2])       # one 0 and no 1 put in class 2
    assert confusion_into(labels, predicted, 2) == 0.25
    assert confusion_into(None, predicted, 2) is None
    assert confusion_into(labels, predicted, None) is None
    # a trigger that changes nothing still "succeeds" on the confused sample
    assert attack_success(labels, predicted, 2) == 0.25
