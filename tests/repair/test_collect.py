"""One streamed pass gives the same sums whatever the batch size, and marks samples exactly."""
import numpy as np
import pytest
from conftest import mlp, run

from onnx_bdfix.errors import DeviceError
from onnx_bdfix.model.runtime import open_runner, providers_for
from onnx_bdfix.repair.collect import collect_statistics
from onnx_bdfix.repair.layers import find_layers
from onnx_bdfix.repair.stats import total


def data(n=30, d=12, seed=0):
    rng = np.random.default_rng(seed)
    clean = rng.normal(size=(n, d)).astype(np.float32)
    return clean, clean + 0.5


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_sums_do_not_depend_on_batch_size(batch_size):
    model, (clean, triggered) = mlp(), data()
    layers = find_layers(model)
    whole = collect_statistics(model, layers, clean, triggered, [0, 30], "logits", "cpu", 64)
    streamed = collect_statistics(model, layers, clean, triggered, [0, 10, 30], "logits",
                                  "cpu", batch_size)
    for layer in layers:
        a, b = total(whole.stats[layer.name]), total(streamed.stats[layer.name])
        np.testing.assert_allclose(a.trig_clean, b.trig_clean, rtol=1e-4, atol=1e-3)
        assert a.n_keys == b.n_keys == 30
    np.testing.assert_allclose(whole.clean_scores, run(model, clean)[0], rtol=1e-5)
    np.testing.assert_allclose(streamed.triggered_scores, run(model, triggered)[0], rtol=1e-5)


def test_marked_samples_match_a_pass_over_them_alone():
    model, (clean, triggered) = mlp(), data()
    layers = find_layers(model)
    picked = lambda clean_scores, _: clean_scores.argmax(1) == 1  # noqa: E731
    marked = collect_statistics(model, layers, clean, triggered, [0, 30], "logits", "cpu", 8,
                                mark=picked).marked
    rows = run(model, clean)[0].argmax(1) == 1
    alone = collect_statistics(model, layers, clean[rows], None, [0, int(rows.sum())],
                               "logits", "cpu", 8)
    for layer in layers:
        np.testing.assert_allclose(marked[layer.name][0].clean_clean,
                                   alone.stats[layer.name][0].clean_clean, rtol=1e-4, atol=1e-4)


def test_cpu_runner_says_which_provider_ran():
    assert open_runner(mlp(), "cpu").provider == "CPUExecutionProvider"
    with pytest.raises(DeviceError, match="unknown device"):
        providers_for("tpu")
