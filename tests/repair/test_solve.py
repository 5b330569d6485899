"""The closed-form edit maps triggered keys to clean outputs and leaves clean outputs alone."""
import numpy as np

from onnx_bdfix.repair.solve import bdk_correction, spd_solve
from onnx_bdfix.repair.stats import KeyStats, total


def synthetic(seed=0, n=400, d=20, m=6):
    rng = np.random.default_rng(seed)
    clean = rng.normal(size=(n, d)).astype(np.float32)
    clean[:, -1] = 0.0                                  # a direction clean data never uses
    triggered = clean.copy()
    triggered[:, -1] = 3.0                              # the trigger lights it up
    weights = rng.normal(size=(1, m, d))
    weights[0, 0, -1] = 5.0                             # and the layer listens to it
    return clean, triggered, weights


def stats_of(clean, triggered, batches=1):
    parts = []
    for c, t in zip(np.array_split(clean, batches), np.array_split(triggered, batches)):
        part = KeyStats(1, clean.shape[1])
        part.add(c[None], t[None], np.ones(len(c), np.float32))
        parts.append(part)
    return total(parts)


def test_triggered_keys_get_clean_outputs_and_clean_outputs_stay():
    clean, triggered, weights = synthetic()
    delta = bdk_correction(weights, stats_of(clean, triggered), alpha=1.0, eps=1e-3)
    new = weights + delta
    before_clean = clean @ weights[0].T
    gap_before = np.abs(triggered @ weights[0].T - before_clean).mean()
    gap_after = np.abs(triggered @ new[0].T - before_clean).mean()
    assert gap_after < 0.02 * gap_before
    clean_change = np.abs(clean @ new[0].T - before_clean).mean()
    assert clean_change < 0.01 * np.abs(before_clean).mean()


def test_no_trigger_means_no_edit():
    clean, _, weights = synthetic()
    delta = bdk_correction(weights, stats_of(clean, clean), eps=1e-2)
    np.testing.assert_allclose(delta, 0.0, atol=1e-10)


def test_statistics_add_up_over_batches():
    clean, triggered, _ = synthetic()
    whole, split = stats_of(clean, triggered), stats_of(clean, triggered, batches=7)
    for name in ("clean_clean", "trig_trig", "trig_clean", "key_sum"):
        np.testing.assert_allclose(getattr(whole, name), getattr(split, name), atol=1e-3)
    assert whole.weight_sum == split.weight_sum == len(clean)


def test_sample_weights_repeat_over_locations():
    keys = np.arange(12, dtype=np.float32).reshape(1, 6, 2)       # 3 samples x 2 locations
    stats = KeyStats(1, 2)
    stats.add(keys, None, np.array([1.0, 0.0, 2.0], np.float32))
    expected = keys[0, :2].T @ keys[0, :2] + 2 * keys[0, 4:].T @ keys[0, 4:]
    np.testing.assert_allclose(stats.clean_clean[0], expected)


def test_spd_solve_matches_numpy():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(8, 8))
    matrix = a @ a.T + np.eye(8)
    rhs = rng.normal(size=(8, 3))
    np.testing.assert_allclose(spd_solve(matrix, rhs), np.linalg.solve(matrix, rhs), rtol=1e-8)


def test_overshoot_pushes_triggered_outputs_past_the_clean_ones():
    clean, triggered, weights = synthetic()
    stats = stats_of(clean, triggered)
    exact = weights + bdk_correction(weights, stats, alpha=1.0, eps=1e-3)
    pushed = weights + bdk_correction(weights, stats, alpha=1.0, eps=1e-3, overshoot=0.5)
    shift = (triggered - clean).mean(0) @ weights[0].T            # the trigger's mean effect
    along = lambda w: ((triggered @ w[0].T - clean @ weights[0].T) @ shift).mean()  # noqa
    assert along(pushed) < along(exact) - 0.4 * shift @ shift
    clean_change = np.abs(clean @ pushed[0].T - clean @ weights[0].T).mean()
    assert clean_change < 0.02 * np.abs(clean @ weights[0].T).mean()


def test_a_merge_edit_makes_up_for_its_bypass():
    """A branch whose output meets a residual bypass: triggered keys must answer with the
    clean output plus what the trigger changed on the bypass (s − s̃), so the merge is clean."""
    clean, triggered, weights = synthetic(seed=3)
    bypass_change = np.zeros((len(clean), weights.shape[1]), np.float32)
    bypass_change[:, 2] = -4.0                      # the trigger moves output 2 on the bypass
    stats = KeyStats(1, clean.shape[1])
    stats.add(clean[None], triggered[None], np.ones(len(clean), np.float32),
              (-bypass_change)[None])                # s − s̃ = +4 on output 2
    delta = bdk_correction(weights, stats, alpha=1.0, eps=1e-3)
    merged_clean = clean @ weights[0].T                              # + s, cancels out
    merged_triggered = triggered @ (weights + delta)[0].T + bypass_change
    assert np.abs(merged_triggered - merged_clean).mean() < 0.05 * np.abs(
        triggered @ weights[0].T + bypass_change - merged_clean).mean()
    assert np.abs(clean @ (weights + delta)[0].T - merged_clean).mean() < \
        0.02 * np.abs(merged_clean).mean()
