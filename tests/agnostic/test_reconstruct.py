"""Pieces of the trigger reconstruction: the blend refinement, the weakest ratio, the
dealing of reconstructions over folds, the reconstructions a class offers its folds and
their stronger copies, the exact clean bound."""
import numpy as np
import pytest
from conftest import init, make_model, tensor_info
from onnx import helper

from onnx_bdfix.agnostic.geometry import blend, made, patch, stronger, Domain
from onnx_bdfix.agnostic.repair import _with_stronger
from onnx_bdfix.data.layout import geometry
from onnx_bdfix.agnostic.refine import refine_blend, weakest_ratio
from onnx_bdfix.agnostic.search import _keep_best, _keep_best_found, Found
from onnx_bdfix.data import TriggerSet
from onnx_bdfix.model.runtime import open_runner


def pattern_detector(weights: np.ndarray):
    """(N, 1, 8, 8) -> class 1 fires on inputs that correlate with ``weights``."""
    w = np.stack([np.zeros(64), weights.reshape(-1)]).astype(np.float32)      # (2, 64)
    model = make_model([helper.make_node("Flatten", ["x"], ["f"]),
                        helper.make_node("Gemm", ["f", "w", "b"], ["logits"], transB=1)],
                       [tensor_info("x", ["N", 1, 8, 8])], [tensor_info("logits", ["N", 2])],
                       [init("w", w), init("b", np.array([0.0, -2.0], np.float32))])
    return open_runner(model, "cpu")


def test_refinement_moves_a_noise_pattern_toward_what_the_model_answers_to():
    rng = np.random.default_rng(0)
    weights = np.sign(rng.normal(size=(8, 8)))
    runner = pattern_detector(weights)
    probe = rng.uniform(0.4, 0.6, size=(32, 1, 8, 8)).astype(np.float32)
    probe[0, 0, 0, 0], probe[1, 0, 0, 0] = 0.0, 1.0                       # the value range
    geo = geometry((1, 8, 8))
    start = rng.uniform(0, 1, size=(8, 8))
    found = blend(geo, np.full((8, 8), 0.5), start, "noise blend 0.5")
    refined = refine_blend(runner, "logits", probe, found, target=1, level=0.9)
    pattern = refined.arrays["pattern"].reshape(8, 8)

    def agreement(p):
        return float(np.corrcoef(p.reshape(-1), weights.reshape(-1))[0, 1])
    assert agreement(pattern) > agreement(start) + 0.3
    assert float(refined.arrays["mask"].max()) <= 0.5


def test_weakest_ratio_bisects_to_the_threshold():
    assert weakest_ratio(lambda r: float(r >= 0.1), 0.4, 0.9, steps=12) == pytest.approx(0.1,
                                                                                     abs=1e-3)
    assert weakest_ratio(lambda r: 0.0, 0.4, 0.9) == 0.4          # never reaches: unchanged


def test_reconstructions_are_dealt_one_set_per_fold():
    order = np.random.default_rng(0).permutation(20)
    bounds = [0, 5, 10, 15, 20]
    dealt = TriggerSet(list("abcdefgh")).by_fold(order, bounds)
    for fold in range(4):
        turns = set(dealt.turns[order[bounds[fold]:bounds[fold + 1]]].tolist())
        assert turns == {fold, fold + 4}                       # no fold shares a trigger
    fewer = TriggerSet(list("ab")).by_fold(order, bounds)
    assert set(fewer.turns.tolist()) == {0, 1}


def test_each_fold_holds_its_reconstruction_as_found_and_stronger_but_a_patch_once():
    """A found trigger is the smallest that flips the probe; the planted one is usually
    stronger. A wave, a blend and a warp get a copy 1.5 times as strong, which the fold's
    samples take in turn; a patch is the same at any strength and stays alone."""
    geo = geometry((1, 8, 8))
    x = np.full((4, 1, 8, 8), 0.5, np.float32)
    wave = made("delta", {"delta": np.full((1, 8, 8), 0.1, np.float32),
                          "clip_min": np.float32(0), "clip_max": np.float32(1)}, "wave")
    faint = blend(geo, np.full((8, 8), 0.2), np.ones((8, 8)), "blend 0.2")
    warp = made("warp", {"flow": np.full((2, 8, 8), 0.5, np.float32)}, "warp")
    square = patch(geo, 0, 0, np.ones((3, 3)), Domain(np.zeros(1), np.ones(1)))
    assert np.allclose(stronger(wave, 1.5).apply(x), 0.65)
    assert np.allclose(stronger(faint, 1.5).arrays["mask"], 0.3)
    assert np.allclose(stronger(faint, 10).arrays["mask"], 1.0)          # a mask stops at 1
    assert np.allclose(stronger(warp, 1.5).arrays["flow"], 0.75)
    assert _with_stronger(square) is square
    pair = _with_stronger(wave)
    assert isinstance(pair, TriggerSet) and pair.source == "wave + wave x1.5"
    assert np.allclose(pair.apply(x)[:, 0, 0, 0], [0.6, 0.65, 0.6, 0.65])   # in turn


def test_a_class_offers_its_folds_other_kinds_of_reconstruction_first():
    """Three patches and a colour field all flip the class; the field, offered last and no
    stronger, still comes second: each fold is to hold a kind the others were not fitted
    on. A kind below the level is not offered."""
    geo = geometry((1, 8, 8))
    candidates = [blend(geo, np.full((8, 8), 0.1 * k), np.ones((8, 8)), f"t{k}") for k in range(6)]
    best = {}
    for k in range(3):
        _keep_best(best, np.array([0.2, 1.0]), {"family": "patch"}, candidates[k])
    _keep_best(best, np.array([0.2, 0.5]), {"family": "wave"}, candidates[3])
    _keep_best_found(best, Found(1, 1.0, {"family": "low frequency"}, candidates[4]))
    _keep_best_found(best, Found(1, 0.95, {"family": "warp"}, candidates[5]))
    offered = best[1].strong(0.9, most=4)
    assert [t.source for t in offered] == ["t0", "t4", "t5", "t1"]
    assert best[1].families["wave"][0] == 0.5 and best[1].trigger is candidates[0]
