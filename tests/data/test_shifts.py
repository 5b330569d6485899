import numpy as np
import pytest

from onnx_bdfix.data.dataset import Dataset
from onnx_bdfix.data.layout import spatial_axes
from onnx_bdfix.data.shifts import SHIFTS, copy_count, shifted, with_copies


@pytest.mark.parametrize("count, shape, wanted, copies", [
    (100, (3, 32, 32), None, 4),       # 500 rows within MAX_ROWS (512)
    (128, (1, 28, 28), None, 3),
    (200, (32, 32, 3), None, 1),
    (300, (3, 32, 32), None, 0),       # more than half of MAX_ROWS: none
    (100, (784,), None, 0),            # a flat vector may hold features, not pixels
    (100, (3, 4, 4), None, 0),         # too small to move
    (100, (3, 32, 32), 2, 2),
    (100, (3, 32, 32), 9, len(SHIFTS)),
    (100, (3, 32, 32), 0, 0),
])
def test_copy_count(count, shape, wanted, copies):
    assert copy_count(count, shape, wanted) == copies


@pytest.mark.parametrize("shape", [(1, 6, 5), (6, 5, 3)])
def test_shifted_moves_every_pixel_and_repeats_the_edge(shape):
    images = np.arange(2 * np.prod(shape), dtype=np.float32).reshape(2, *shape)
    axes = spatial_axes(shape)
    image = np.moveaxis(images, [axes[0] + 1, axes[1] + 1], [1, 2])      # (2, H, W, ...)
    for down, right in SHIFTS:
        moved = np.moveaxis(shifted(images, axes, down, right), [axes[0] + 1, axes[1] + 1],
                            [1, 2])
        assert moved.shape == image.shape
        height, width = image.shape[1:3]
        for row in range(height):
            for column in range(width):
                source = (min(max(row - down, 0), height - 1),
                          min(max(column - right, 0), width - 1))
                np.testing.assert_array_equal(moved[:, row, column], image[:, source[0],
                                                                            source[1]])


def test_with_copies_lays_copies_out_copy_by_copy():
    raw = np.random.default_rng(0).integers(0, 255, (5, 1, 8, 8)).astype(np.uint8)
    data = Dataset(raw, np.arange(5), "digest", "clean.npz", scale=1 / 255)
    more = with_copies(data, 2)
    assert len(more) == 15 and more.raw.dtype == np.uint8
    assert more.sha256 == "digest" and more.scale == data.scale
    np.testing.assert_array_equal(more.y, np.tile(np.arange(5), 3))
    np.testing.assert_array_equal(more.raw[:5], raw)
    for copy in (1, 2):
        np.testing.assert_array_equal(more.raw[5 * copy:5 * copy + 5],
                                      shifted(raw, (1, 2), *SHIFTS[copy - 1]))
    assert with_copies(data, 0) is data
