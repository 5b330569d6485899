"""The repair's fit stage: the warning when the clean samples hold too few of the target
class for the held-out checks to see it."""
import logging

import numpy as np

from onnx_bdfix.repair.fit import FEW_TARGET, warn_if_few


def test_too_few_target_samples_are_warned_of_with_the_count_to_give(caplog):
    answers = np.r_[np.full(FEW_TARGET - 1, 7), np.arange(98) % 7]      # 100 classes' model
    with caplog.at_level(logging.WARNING, logger="onnx_bdfix.repair.fit"):
        warn_if_few(answers, 7, 100)
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert f"hold {FEW_TARGET - 1} of the target class 7" in message
    assert "about 600 clean samples" in message


def test_enough_target_samples_raise_no_warning(caplog):
    answers = np.r_[np.full(FEW_TARGET, 7), np.arange(97) % 7]
    with caplog.at_level(logging.WARNING, logger="onnx_bdfix.repair.fit"):
        warn_if_few(answers, 7, 10)
    assert not caplog.records
