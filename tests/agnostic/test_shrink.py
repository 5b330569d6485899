"""Smaller patches inside a found patch: the sub-windows, and their refinement onto a planted
smaller trigger."""
import numpy as np
from conftest import init, make_model, tensor_info
from onnx import helper

from onnx_bdfix.agnostic.geometry import Domain, patch
from onnx_bdfix.data.layout import geometry
from onnx_bdfix.agnostic.search import Found
from onnx_bdfix.agnostic.shrink import shrunk_patches, windows
from onnx_bdfix.model.runtime import open_runner, scores

SIDE, TARGET, TOP = 16, 2, 12
SECRET = np.array([1, 0, 1])[:, None, None] * np.ones((3, 2, 2))   # (3, 2, 2) channel bits


def planted_patch_model():
    """(N, 3, 16, 16) in [0, 1] -> 4 classes; class 2 answers to a 2 x 2 patch at (12, 12),
    channels high, low, high (a planted backdoor); the others to their quadrant's mean."""
    w = np.zeros((4, 3, SIDE, SIDE), np.float32)
    b = np.zeros(4, np.float32)
    for cls, (top, left) in enumerate([(0, 0), (0, 8), (8, 0), (8, 8)]):
        if cls != TARGET:
            w[cls, :, top:top + 8, left:left + 8] = 10.0 / 192
            b[cls] = -5.0
    w[TARGET, :, TOP:TOP + 2, TOP:TOP + 2] = 2.0 * (2 * SECRET - 1)
    b[TARGET] = -4.0 - float(w[TARGET].sum()) * 0.5     # a random input sits near -4
    model = make_model([helper.make_node("Flatten", ["x"], ["f"]),
                        helper.make_node("Gemm", ["f", "w", "b"], ["logits"], transB=1)],
                       [tensor_info("x", ["N", 3, SIDE, SIDE])],
                       [tensor_info("logits", ["N", 4])],
                       [init("w", w.reshape(4, -1)), init("b", b)])
    probe = np.random.default_rng(0).uniform(0, 1, (64, 3, SIDE, SIDE)).astype(np.float32)
    return open_runner(model, "cpu"), probe


def found_patch(geo, span) -> Found:
    """A 4 x 4 patch at (10, 10) whose bottom-right 2 x 2 cells are the planted trigger."""
    cells = np.random.default_rng(1).integers(0, 2, (3, 4, 4))
    cells[:, 2:, 2:] = SECRET
    params = {"family": "patch", "top": TOP - 2, "left": TOP - 2, "size": 4,
              "cells": cells.tolist(), "pattern": "refined"}
    return Found(TARGET, 1.0, params, patch(geo, TOP - 2, TOP - 2, cells, span))


def flip_rate(runner, probe, trigger) -> float:
    base = scores(runner, probe, "logits", len(probe)).argmax(1)
    outside = probe[base != TARGET]
    return float((scores(runner, trigger.apply(outside), "logits",
                         len(outside)).argmax(1) == TARGET).mean())


def test_windows_run_from_half_the_side_smallest_first():
    assert windows(4) == [(2, r, c) for r in range(3) for c in range(3)] + \
        [(3, r, c) for r in range(2) for c in range(2)]
    assert windows(3) == [(2, r, c) for r in range(2) for c in range(2)]
    assert windows(2) == []


def test_the_planted_smaller_patch_is_found_inside_the_large_one():
    runner, probe = planted_patch_model()
    geo, span = geometry(probe.shape[1:]), Domain(np.zeros(3), np.ones(3))
    found = found_patch(geo, span)
    assert flip_rate(runner, probe, found.trigger) >= 0.9
    kept = shrunk_patches(runner, "logits", probe, found, 0.9, span, most=3)
    assert 1 <= len(kept) <= 3
    assert len({trigger.sha256 for trigger in kept}) == len(kept)        # distinct
    for trigger in kept:
        assert flip_rate(runner, probe, trigger) >= 0.9
        assert trigger.arrays["mask"].sum() == 4                          # 2 x 2
    rows, columns = np.nonzero(kept[0].arrays["mask"].reshape(SIDE, SIDE))
    assert (rows.min(), columns.min()) == (TOP, TOP)                    # the planted spot


def test_only_patches_are_shrunk_and_only_into_free_folds():
    runner, probe = planted_patch_model()
    geo, span = geometry(probe.shape[1:]), Domain(np.zeros(3), np.ones(3))
    found = found_patch(geo, span)
    assert shrunk_patches(runner, "logits", probe, found, 0.9, span, most=0) == []
    blend_found = Found(TARGET, 1.0, {"family": "blend"}, found.trigger)
    assert shrunk_patches(runner, "logits", probe, blend_found, 0.9, span, most=3) == []
