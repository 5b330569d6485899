"""Data files and image folders become model input; bad data is a DataError."""
import numpy as np
import pytest
from PIL import Image

from onnx_bdfix.data import ImageOptions, load_data, load_trigger, load_triggered
from onnx_bdfix.errors import DataError, TriggerError
from onnx_bdfix.model import InputInfo

GRAY = InputInfo("x", [None, 1, 6, 5], np.dtype(np.float32))
RGB_NHWC = InputInfo("x", [None, 6, 5, 3], np.dtype(np.float32))


def write_images(folder, mode, values):
    folder.mkdir(parents=True, exist_ok=True)
    for index, value in enumerate(values):
        size = (10, 12)                                   # width, height: resized to 5x6
        Image.new(mode, size, value).save(folder / f"img{index}.png")


def test_class_subfolders_give_labels_and_layout(tmp_path):
    write_images(tmp_path / "0", "L", [0, 51])
    write_images(tmp_path / "1", "L", [255])
    data = load_data(tmp_path, GRAY)
    assert data.x.shape == (3, 1, 6, 5)
    np.testing.assert_array_equal(data.y, [0, 0, 1])
    np.testing.assert_allclose(data.x[:, 0, 0, 0], [0.0, 0.2, 1.0], atol=1e-6)


def test_flat_folder_nhwc_with_mean_and_std(tmp_path):
    write_images(tmp_path, "RGB", [(255, 0, 51)])
    options = ImageOptions(layout="NHWC", mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    data = load_data(tmp_path, RGB_NHWC, options)
    assert data.y is None and data.x.shape == (1, 6, 5, 3)
    np.testing.assert_allclose(data.x[0, 0, 0], [1.0, -1.0, -0.6], atol=1e-6)


def test_a_folder_for_a_model_taking_bytes_is_read_as_bytes(tmp_path):
    """A model that takes uint8 pixels scales them itself: its images stay 0..255 unless
    --scale says otherwise (1/255 would feed it 0 or 1 only)."""
    write_images(tmp_path, "L", [0, 51, 255])
    byte_model = InputInfo("x", [None, 1, 6, 5], np.dtype(np.uint8))
    data = load_data(tmp_path, byte_model)
    np.testing.assert_allclose(data.x[:, 0, 0, 0], [0.0, 51.0, 255.0])
    assert [float(end.squeeze()) for end in data.value_range] == [0.0, 255.0]
    stated = load_data(tmp_path, byte_model, ImageOptions(scale=0.5))
    np.testing.assert_allclose(stated.x[:, 0, 0, 0], [0.0, 25.5, 127.5])
    assert float(load_data(tmp_path, GRAY).x.max()) == 1.0


def test_npz_with_uint8_and_scale(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.full((4, 1, 6, 5), 255, np.uint8),
             y=np.arange(4), scale=np.float32(1 / 255))
    data = load_data(tmp_path / "d.npz", GRAY)
    np.testing.assert_allclose(data.x, 1.0)
    assert data.y.dtype == np.int64


def test_the_input_range_comes_from_how_the_data_was_made(tmp_path):
    """Image folders: pixels 0..255 through --scale/--mean/--std; 8-bit .npz: through its
    scale and offset; float .npz: unknown (the scan reads the samples' own range)."""
    write_images(tmp_path / "img", "RGB", [(10, 20, 30)])
    options = ImageOptions(layout="NHWC", mean=[0.5, 0.4, 0.3], std=[0.25, 0.5, 0.2])
    low, high = load_data(tmp_path / "img", RGB_NHWC, options).input_range()
    assert low.shape == high.shape == (1, 1, 3)
    np.testing.assert_allclose(low.ravel(), [-2.0, -0.8, -1.5], atol=1e-6)
    np.testing.assert_allclose(high.ravel(), [2.0, 1.2, 3.5], atol=1e-6)
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 1, 6, 5), np.uint8), scale=np.float32(2 / 255),
             offset=np.float32(-1))
    np.testing.assert_allclose(load_data(tmp_path / "d.npz", GRAY).input_range(), [-1, 1],
                               atol=1e-6)
    np.savez(tmp_path / "f.npz", x=np.zeros((2, 1, 6, 5), np.float32))
    assert load_data(tmp_path / "f.npz", GRAY).input_range() is None


def test_a_stated_input_range_overrides_and_is_checked(tmp_path):
    np.savez(tmp_path / "f.npz", x=np.zeros((2, 6, 5, 3), np.float32))
    stated = load_data(tmp_path / "f.npz", RGB_NHWC,
                       ImageOptions(input_range=[0, 1, -1, 1, -2, 2])).input_range()
    np.testing.assert_array_equal(stated[0].ravel(), [0, -1, -2])
    assert stated[1].shape == (1, 1, 3)
    for wrong, message in (([0, 1, 0, 1], "no axis"), ([1, 0], "above its low")):
        with pytest.raises(DataError, match=message):
            load_data(tmp_path / "f.npz", RGB_NHWC, ImageOptions(input_range=wrong))


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((4, 1, 5, 6), np.float32)}, "takes 1x6x5"),
    ({"x": np.zeros((4, 6, 5, 1), np.float32)}, "takes 1x6x5"),
    ({"x": np.full((4, 1, 6, 5), np.nan, np.float32)}, "NaN"),
    ({"x": np.zeros((0, 1, 6, 5), np.float32)}, "N >= 1"),
    ({"y": np.zeros(3)}, "no array named 'x'"),
    ({"x": np.zeros((4, 1, 6, 5)), "y": np.zeros(3, np.int64)}, "integer labels"),
])
def test_bad_npz_is_a_data_error(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_data(tmp_path / "d.npz", GRAY)


def test_not_an_npz_and_empty_folder(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"nope")
    with pytest.raises(DataError, match="not a readable"):
        load_data(tmp_path / "d.npz", GRAY)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        load_data(tmp_path / "empty", GRAY)


def test_blend_and_delta_triggers(tmp_path):
    x = np.full((2, 1, 6, 5), 0.5, np.float32)
    mask = np.zeros((6, 5), np.float32)
    mask[0, 0] = 1.0
    np.savez(tmp_path / "b.npz", mask=mask, pattern=np.ones((6, 5), np.float32))
    blended = load_trigger(tmp_path / "b.npz", (1, 6, 5)).apply(x)
    assert blended[0, 0, 0, 0] == 1.0 and blended[0, 0, 1, 1] == 0.5
    np.savez(tmp_path / "d.npz", delta=np.float32(0.7), clip_min=0.0, clip_max=1.0)
    np.testing.assert_allclose(load_trigger(tmp_path / "d.npz", (1, 6, 5)).apply(x), 1.0)


@pytest.mark.parametrize("arrays, message", [
    ({"mask": np.full((6, 5), 2.0), "pattern": np.ones((6, 5))}, r"\[0, 1\]"),
    ({"mask": np.ones((3, 3)), "pattern": np.ones((3, 3))}, "does not broadcast"),
    ({"pattern": np.ones((6, 5))}, "needs 'mask' and 'pattern'"),
    ({"delta": np.full((6, 5), np.inf)}, "NaN or Inf"),
])
def test_bad_triggers(tmp_path, arrays, message):
    np.savez(tmp_path / "t.npz", **arrays)
    with pytest.raises(TriggerError, match=message):
        load_trigger(tmp_path / "t.npz", (1, 6, 5))


def test_triggered_copies_must_match(tmp_path):
    np.savez(tmp_path / "c.npz", x=np.zeros((4, 1, 6, 5), np.float32))
    clean = load_data(tmp_path / "c.npz", GRAY)
    np.savez(tmp_path / "t.npz", x=np.zeros((3, 1, 6, 5), np.float32))
    with pytest.raises(TriggerError, match="same samples"):
        load_triggered(tmp_path / "t.npz", clean)


def test_uncompressed_npz_is_memory_mapped_and_read_in_batches(tmp_path):
    x = np.arange(4 * 30, dtype=np.uint8).reshape(4, 1, 6, 5)
    np.savez(tmp_path / "plain.npz", x=x, scale=np.float32(0.5))
    np.savez_compressed(tmp_path / "packed.npz", x=x, scale=np.float32(0.5))
    plain = load_data(tmp_path / "plain.npz", GRAY)
    packed = load_data(tmp_path / "packed.npz", GRAY)
    assert isinstance(plain.raw, np.memmap) and not isinstance(packed.raw, np.memmap)
    np.testing.assert_array_equal(plain.x, packed.x)
    order = np.array([3, 0, 2, 1])
    np.testing.assert_allclose(plain.rows(order)[1:3], x[[0, 2]] * 0.5)


def test_rows_apply_the_trigger_per_batch(tmp_path):
    np.savez(tmp_path / "c.npz", x=np.zeros((5, 1, 6, 5), np.float32))
    np.savez(tmp_path / "t.npz", delta=np.float32(0.25))
    data = load_data(tmp_path / "c.npz", GRAY)
    rows = data.rows(np.arange(5)[::-1], load_trigger(tmp_path / "t.npz", (1, 6, 5)))
    assert rows.shape == (5, 1, 6, 5) and len(rows) == 5
    np.testing.assert_allclose(rows[:2], 0.25)


def test_trigger_set_takes_its_triggers_in_turn(tmp_path):
    from onnx_bdfix.data import Trigger, TriggerSet
    up = Trigger("delta", {"delta": np.float32(1.0)}, "a", "up")
    down = Trigger("delta", {"delta": np.float32(-1.0)}, "b", "down")
    both = TriggerSet([up, down])
    x = np.zeros((4, 2), np.float32)
    np.testing.assert_allclose(both.apply(x)[:, 0], [1, -1, 1, -1])
    np.testing.assert_allclose(both.apply(x, np.array([1, 1, 0, 3]))[:, 0], [-1, -1, 1, -1])
    assert both.source == "up + down" and len(both.sha256) == 64


def test_per_channel_scale_and_offset_for_normalized_models(tmp_path):
    """uint8 pixels stored once, read in the model's mean/std-normalized scale."""
    mean, std = np.array([0.4, 0.5, 0.6]), np.array([0.2, 0.25, 0.3])
    pixels = np.arange(2 * 3 * 6 * 5, dtype=np.uint8).reshape(2, 3, 6, 5)
    np.savez(tmp_path / "n.npz", x=pixels, scale=(1 / 255 / std).reshape(3, 1, 1),
             offset=(-mean / std).reshape(3, 1, 1))
    spec = InputInfo("x", [None, 3, 6, 5], np.dtype(np.float32))
    loaded = load_data(tmp_path / "n.npz", spec)
    expected = (pixels / 255.0 - mean.reshape(3, 1, 1)) / std.reshape(3, 1, 1)
    np.testing.assert_allclose(loaded.x, expected, rtol=1e-5, atol=1e-5)
    np.savez(tmp_path / "bad.npz", x=pixels, scale=np.ones((4, 1, 1)))
    with pytest.raises(DataError, match="does not broadcast"):
        load_data(tmp_path / "bad.npz", spec)


def test_per_channel_clip_bounds(tmp_path):
    low, high = np.array([-1.0, -2.0, -3.0]), np.array([1.0, 2.0, 3.0])
    np.savez(tmp_path / "d.npz", delta=np.full((3, 1, 1), 10.0, np.float32),
             clip_min=low.reshape(3, 1, 1), clip_max=high.reshape(3, 1, 1))
    moved = load_trigger(tmp_path / "d.npz", (3, 6, 5)).apply(np.zeros((2, 3, 6, 5)))
    np.testing.assert_allclose(moved[:, :, 0, 0], np.tile(high, (2, 1)))
    np.savez(tmp_path / "e.npz", delta=np.zeros(1), clip_min=high.reshape(3, 1, 1),
             clip_max=low.reshape(3, 1, 1))
    with pytest.raises(TriggerError, match="above"):
        load_trigger(tmp_path / "e.npz", (3, 6, 5))
