"""Patch pruning: a found patch cut to the pixels the backdoor needs."""
import numpy as np
from conftest import init, make_model, tensor_info
from onnx import helper

from onnx_bdfix.agnostic.geometry import Domain, blend, geometry, patch
from onnx_bdfix.agnostic.prune import is_patch, prune_patch
from onnx_bdfix.data import Trigger
from onnx_bdfix.model.runtime import open_runner

BLOCK = (slice(5, 7), slice(5, 7))        # the 2x2 pixels the backdoor answers to


def block_detector(bias: float):
    """(N, 1, 8, 8) -> class 1 when the pixels of BLOCK sum to more than -bias."""
    weights = np.zeros((8, 8))
    weights[BLOCK] = 1.0
    w = np.stack([np.zeros(64), weights.reshape(-1)]).astype(np.float32)      # (2, 64)
    model = make_model([helper.make_node("Flatten", ["x"], ["f"]),
                        helper.make_node("Gemm", ["f", "w", "b"], ["logits"], transB=1)],
                       [tensor_info("x", ["N", 1, 8, 8])], [tensor_info("logits", ["N", 2])],
                       [init("w", w), init("b", np.array([0.0, bias], np.float32))])
    return open_runner(model, "cpu")


def probe():
    return np.random.default_rng(0).uniform(0.0, 0.3, size=(32, 1, 8, 8)).astype(np.float32)


def white_patch(top: int, left: int, size: int) -> Trigger:
    return patch(geometry((1, 8, 8)), top, left, np.ones((size, size)),
                 Domain(np.zeros(1), np.ones(1)))


def test_a_patch_is_cut_to_the_pixels_the_backdoor_needs():
    """A white 4x4 patch over the 2x2 block: any three block pixels at 1.0 pass the threshold
    of 2.35 on every probe sample, two (with two clean pixels below 0.3) on too few; the
    twelve pixels outside the block are not needed."""
    runner, x = block_detector(-2.35), probe()
    found = white_patch(4, 4, 4)
    pruned = prune_patch(runner, "logits", x, found, target=1, level=0.9)
    mask = pruned.arrays["mask"].reshape(8, 8)
    outside_block = mask.copy()
    outside_block[BLOCK] = 0
    assert not outside_block.any() and mask[BLOCK].sum() == 3
    flipped = runner.run(pruned.apply(x), ["logits"])[0].argmax(1)
    assert flipped.mean() >= 0.9
    assert "pruned to 3 of 16 pixels" in pruned.source and is_patch(pruned)


def test_a_patch_that_needs_every_pixel_is_kept_as_it_is():
    runner, x = block_detector(-3.5), probe()                  # all four at 1.0 needed
    found = white_patch(5, 5, 2)
    assert prune_patch(runner, "logits", x, found, target=1, level=0.9) is found


def test_only_pasted_regions_are_patches():
    geo = geometry((1, 8, 8))
    assert is_patch(white_patch(0, 0, 3))
    assert not is_patch(blend(geo, np.full((8, 8), 0.2), np.ones((8, 8)), "blend 0.2"))
    assert not is_patch(Trigger("delta", {"delta": np.ones((1, 8, 8), np.float32)}, "0" * 64,
                                "wave"))
