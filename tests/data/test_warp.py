"""Smooth warps: identity, whole-pixel shifts, and every sample layout giving one answer."""
import numpy as np
import pytest

from onnx_bdfix.data import Trigger
from onnx_bdfix.data.warp import warp_images, warp_samples


def images(n=3, c=2, h=6, w=5):
    return np.random.default_rng(0).uniform(size=(n, c, h, w)).astype(np.float32)


def test_no_flow_is_the_identity():
    x = images()
    assert np.allclose(warp_images(x, np.zeros((2, 6, 5))), x)


def test_a_whole_pixel_flow_shifts_and_repeats_the_border():
    x = images()
    flow = np.zeros((2, 6, 5))
    flow[1] = 1.0                                     # read one pixel to the right
    shifted = warp_images(x, flow)
    assert np.allclose(shifted[..., :-1], x[..., 1:])
    assert np.allclose(shifted[..., -1], x[..., -1])


def test_half_a_pixel_is_the_mean_of_two():
    x = images()
    flow = np.zeros((2, 6, 5))
    flow[0] = 0.5
    assert np.allclose(warp_images(x, flow)[..., 0, :], (x[..., 0, :] + x[..., 1, :]) / 2)


def test_layouts_agree():
    x = images(c=1, h=6, w=6)
    flow = np.random.default_rng(1).uniform(-1, 1, (2, 6, 6))
    chw = warp_samples(x, flow)
    hwc = warp_samples(x.transpose(0, 2, 3, 1), flow).transpose(0, 3, 1, 2)
    flat = warp_samples(x.reshape(3, 36), flow).reshape(x.shape)
    assert np.allclose(chw, hwc) and np.allclose(chw, flat)
    with pytest.raises(ValueError):
        warp_samples(np.zeros((2, 7), np.float32), flow)


def test_a_warp_trigger_applies_its_flow():
    x = images()
    flow = np.zeros((2, 6, 5), np.float32)
    flow[1] = 1.0
    trigger = Trigger("warp", {"flow": flow}, "0" * 64, "shift")
    assert np.allclose(trigger.apply(x), warp_images(x, flow))
