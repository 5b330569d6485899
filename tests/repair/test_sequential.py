"""Sequential edits: the second step's keys are what the graph computes after the first,
its candidates are held out by fold against the original model, and a chosen sequential
edit is the file written."""
import numpy as np
import onnx
from conftest import MLP_TARGET, run

from onnx_bdfix.repair import RepairConfig, pipeline, repair_model
from onnx_bdfix.repair.collect import collect_statistics
from onnx_bdfix.repair.crossval import Step, cross_validate_all
from onnx_bdfix.repair.fit import collect_fit, order_samples
from onnx_bdfix.repair.plan import make_plan
from onnx_bdfix.repair.sequential import collect_after, cross_validate_sequential
from onnx_bdfix.repair.stats import total

TARGET = MLP_TARGET


def fitted(model, clean, trigger, tmp_path):
    """A random MLP is no trained model: any edit costs it, so the bound is lifted."""
    config = RepairConfig(device="cpu", target_class=TARGET, max_clean_drop=1.0)
    plan = make_plan(model, clean, tmp_path / "out.onnx", config)
    samples = order_samples(plan, clean, trigger)
    return config, plan, samples, collect_fit(plan, samples, config, (TARGET, "given"))


def test_the_second_step_reads_the_keys_the_edited_model_computes(mlp_backdoor, tmp_path):
    model, clean, trigger = mlp_backdoor
    config, plan, samples, fit = fitted(model, clean, trigger, tmp_path)
    first = Step(("fc1",), (1.0, 0.01, config.overshoot, fit.target_weight))
    edited_plan, after = collect_after(plan, fit, first, None, samples, config, None)
    edited = edited_plan.loaded.proto
    weights = lambda proto: {i.name: onnx.numpy_helper.to_array(i)  # noqa: E731
                             for i in proto.graph.initializer}
    assert not np.allclose(weights(edited)["w1"], weights(model.proto)["w1"])
    np.testing.assert_array_equal(weights(edited)["w2"], weights(model.proto)["w2"])
    fc2 = [layer for layer in edited_plan.layers if layer.name == "fc2"]
    fresh = collect_statistics(edited, fc2, samples.clean[:], samples.triggered[:],
                               plan.bounds, plan.output, "cpu", 64)
    again, before = total(after.collected.stats["fc2"]), total(fit.collected.stats["fc2"])
    np.testing.assert_allclose(again.trig_clean, total(fresh.stats["fc2"]).trig_clean,
                               rtol=1e-5, atol=1e-4)
    assert not np.allclose(again.trig_clean, before.trig_clean, rtol=1e-3)
    # the edited model's answers, and the original's kept as the reference
    np.testing.assert_allclose(after.collected.clean_scores, run(edited, samples.clean[:])[0],
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(after.held_out.rows[0], fit.held_out.rows[0])


def test_sequential_candidates_name_both_steps_and_are_scored_against_the_original(
        mlp_backdoor, tmp_path):
    model, clean, trigger = mlp_backdoor
    config, plan, samples, fit = fitted(model, clean, trigger, tmp_path)
    results = cross_validate_all(plan, fit, config)
    found = cross_validate_sequential(plan, fit, results, samples, config)
    best = min(results, key=lambda r: r.attack_success)      # the first step
    assert found and all(r.first.layers == best.layers != r.layers for r in found)
    assert {r.all_layers for r in found} == {best.layers + r.layers for r in found}
    assert all(0.0 <= r.agreement <= 1.0 and r.expected_drop >= 0.0 for r in found)


def test_a_chosen_sequential_edit_is_the_file_written(mlp_backdoor, tmp_path, monkeypatch):
    """With the choice forced onto a sequential candidate, the file holds the first step
    fitted on every fold and the second fitted after it, and the report names both."""
    model, clean, trigger = mlp_backdoor
    picked = []

    def sequential_first(results, config):
        picked.append(next(r for r in results if r.first is not None))
        return picked[-1]
    monkeypatch.setattr(pipeline, "choose", sequential_first)
    config = RepairConfig(device="cpu", target_class=TARGET, max_asr=0.0,  # never met
                          max_clean_drop=1.0)
    report = repair_model(model, clean, trigger, tmp_path / "out.onnx", config)
    chosen = picked[-1]
    assert report.chosen == list(chosen.all_layers) and len(report.chosen) == 2
    _, plan, samples, fit = fitted(model, clean, trigger, tmp_path)
    edited_plan, after = collect_after(plan, fit, chosen.first, None, samples, config, None)
    expected = pipeline.apply_choice(edited_plan, after, chosen, config)
    written = onnx.load(tmp_path / "out.onnx")
    x = samples.clean[:]
    np.testing.assert_allclose(run(written, x)[0], run(expected, x)[0], rtol=1e-5, atol=1e-5)
    provenance = {p.key: p.value for p in written.metadata_props}
    assert '"first_step"' in next(v for k, v in provenance.items() if "bdfix" in k)
