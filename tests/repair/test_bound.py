"""Clean cost is a bound, not a term: the choice rule, and a model built so that removing its
backdoor must cost clean accuracy (the trigger is more of the target class's own evidence)."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import init, make_model, tensor_info
from onnx import helper, save_model

from onnx_bdfix.data import Dataset, Trigger
from onnx_bdfix.errors import InternalError, RepairShortfall
from onnx_bdfix.repair import RepairConfig, repair_model
from onnx_bdfix.repair.crossval import CandidateResult, choose
from onnx_bdfix.repair.report import reason
from onnx_bdfix_cli.main import main

D = 8


def candidate(asr, cost, score, name="fc"):
    return CandidateResult((name,), 0.1, 0.01, asr, 1 - cost, None, asr, 0.0, 0.0,
                           expected_drop=cost, trigger_shift=score)


def test_choice_keeps_to_the_bound_and_prefers_the_lowest_score_that_meets_the_goal():
    results = [candidate(0.00, 0.030, 0.01, "costly"), candidate(0.01, 0.008, 0.20, "kept"),
               candidate(0.015, 0.009, 0.10, "best"), candidate(0.30, 0.0, 0.0, "weak")]
    chosen = choose(results, RepairConfig(max_clean_drop=0.01, max_asr=0.02))
    assert chosen.layers == ("best",)
    assert choose(results, RepairConfig(max_clean_drop=0.05)).layers == ("costly",)


def test_the_pull_choice_takes_the_least_trigger_pull_within_the_bound():
    """choose_by="pull" (trigger-agnostic, a class suspected): the edit leaving the least
    held-out trigger pull, to 0.001 (then the score), never one past the bound."""
    gentle, firm, firmer, costly = (candidate(0.0, 0.002, 0.05, "gentle"),
                                    candidate(0.0, 0.008, 0.30, "firm"),
                                    candidate(0.0, 0.009, 0.35, "firmer"),
                                    candidate(0.0, 0.030, 0.40, "costly"))
    gentle.trigger_pull, firm.trigger_pull, firmer.trigger_pull = 0.20, 0.0104, 0.0101
    costly.trigger_pull = 0.0
    results = [gentle, firm, firmer, costly]
    assert choose(results, RepairConfig()).layers == ("gentle",)
    assert choose(results, RepairConfig(choose_by="pull")).layers == ("firm",)
    with pytest.raises(InternalError):
        choose(results, RepairConfig(choose_by="most"))


def test_the_chosen_edit_is_written_with_the_offset_that_keeps_the_target_margin():
    eroding = candidate(0.0, 0.002, 0.10, "fc")
    eroding.target_erosion = 0.08
    restored = candidate(0.01, 0.004, 0.20, "fc")
    restored.target_offset, restored.target_erosion = 0.7, 0.0
    other = candidate(0.0, 0.001, 0.15, "other")            # another edit, margin kept
    chosen = choose([eroding, restored, other], RepairConfig())
    assert chosen.layers == ("fc",) and chosen.target_offset == 0.7
    restored.attack_success = 0.05                 # that reading no longer meets the goal
    assert choose([eroding, restored, other], RepairConfig()) is eroding


def test_the_chosen_edit_is_written_with_its_largest_reading_up_to_its_slack():
    """The target class is kept as far as the triggered samples' room allows: the reading
    of the same edit with the largest offset up to the slack reading, if it meets the goal
    within the bound; never one past the slack, never another edit's."""
    readings = []
    for offset, asr, score in ((0.0, 0.0, 0.10), (0.4, 0.0, 0.12), (0.9, 0.0, 0.13),
                               (1.5, 0.0, 0.14)):
        reading = candidate(asr, 0.002, score, "fc")
        reading.target_offset, reading.target_slack = offset, 0.9
        readings.append(reading)
    other = candidate(0.0, 0.002, 0.11, "other")
    other.target_offset, other.target_slack = 0.95, 0.95
    assert choose(readings + [other], RepairConfig()).target_offset == 0.9
    readings[2].attack_success = 0.03                  # the slack reading misses the goal
    assert choose(readings + [other], RepairConfig()).target_offset == 0.4
    for reading in readings:
        reading.target_slack = None                    # no slack read (agnostic mode)
    assert choose(readings + [other], RepairConfig()).target_offset == 0.0


def test_an_edit_that_takes_the_target_class_margin_is_not_within_the_bound():
    """Cheap by the label-free estimate, but it takes 60 % of the target class's median
    margin: never written by default; the refusal names the limit that would allow it."""
    eroding = candidate(0.0, 0.004, 0.05, "eroding")
    eroding.target_erosion = 0.6
    weak = candidate(0.10, 0.001, 0.20, "weak")
    with pytest.raises(RepairShortfall) as raised:
        choose([eroding, weak], RepairConfig())
    line = str(raised.value)
    assert "would leave 10.0%" in line and "takes more of the target class's margin" in line
    assert "--max-target-erosion 0.60" in line
    assert choose([eroding, weak], RepairConfig(max_target_erosion=0.6)) is eroding
    assert choose([eroding, weak], RepairConfig(max_target_erosion=None)) is eroding
    hardening = RepairConfig(must_meet_asr=False)
    assert choose([eroding, weak], hardening) is weak


def test_shortfall_names_what_the_best_edit_leaves_and_the_bound_it_needs():
    results = [candidate(0.00, 0.034, 0.01, "costly"), candidate(0.12, 0.004, 0.2, "weak")]
    with pytest.raises(RepairShortfall) as raised:
        choose(results, RepairConfig(max_clean_drop=0.01, max_asr=0.02))
    line = str(raised.value)
    assert "would leave 12.0%" in line and "costs 3.4%" in line
    assert "--max-clean-drop 0.034" in line and "nothing was written" in line


def test_hardening_mode_writes_the_best_within_the_bound_or_nothing():
    config = RepairConfig(max_clean_drop=0.01, must_meet_asr=False)
    results = [candidate(0.00, 0.03, 0.01, "costly"), candidate(0.4, 0.005, 0.3, "weak")]
    assert choose(results, config).layers == ("weak",)
    assert choose(results[:1], config) is None


def test_the_fallback_bound_is_used_only_when_nothing_within_the_bound_meets_the_goal():
    """A suspected class (trigger-agnostic): an edit that meets the goal within the wider
    bound is written when none within the bound does; never one past the wider bound, and
    the first bound's own pick whenever one meets the goal there."""
    config = RepairConfig(max_clean_drop=0.01, must_meet_asr=False, fallback_clean_drop=0.02)
    weak, firm, past = (candidate(0.30, 0.005, 0.3, "weak"), candidate(0.0, 0.015, 0.2, "firm"),
                        candidate(0.0, 0.03, 0.0, "past"))
    assert choose([weak, firm, past], config).layers == ("firm",)
    assert choose([weak, past], config).layers == ("weak",)      # hardening, within 1 %
    within = candidate(0.01, 0.008, 0.25, "within")
    assert choose([weak, firm, within], config).layers == ("within",)
    narrower = RepairConfig(max_clean_drop=0.01, must_meet_asr=False, fallback_clean_drop=0.005)
    assert choose([weak, firm], narrower).layers == ("weak",)
    assert choose([weak, firm], RepairConfig(max_clean_drop=0.01,
                                             must_meet_asr=False)).layers == ("weak",)


def test_the_reason_names_the_fallback_bound_when_the_edit_needed_it():
    config = RepairConfig(max_clean_drop=0.01, must_meet_asr=False, fallback_clean_drop=0.02)
    firm, kept = candidate(0.0, 0.015, 0.2, "firm"), candidate(0.0, 0.004, 0.2, "kept")
    assert "the fallback bound, 2.0%: no edit within 1.0%" in reason(firm, [firm], config)
    assert "fallback" not in reason(kept, [kept], config)


def test_hardening_a_model_called_clean_bounds_the_changed_answers_not_the_estimate():
    """An edit that changes 6 % of clean answers which the label-free estimate counts at
    0.5 % is within the usual bound, but not within the bound on changed answers."""
    churn = CandidateResult(("churn",), 0.1, 0.01, 0.0, 0.94, None, 0.0, 0.0, 0.0,
                            expected_drop=0.005)
    quiet = CandidateResult(("quiet",), 0.1, 0.01, 0.3, 0.995, None, 0.3, 0.0, 0.0,
                            expected_drop=0.004, trigger_shift=0.5)
    loose = RepairConfig(max_clean_drop=0.01, must_meet_asr=False)
    strict = RepairConfig(max_clean_drop=0.01, must_meet_asr=False,
                          bound_changed_answers=True)
    assert choose([churn, quiet], loose).layers == ("churn",)
    assert choose([churn, quiet], strict).layers == ("quiet",)
    assert choose([churn], strict) is None


# ------------------------------------------------------------- a costly backdoor
@pytest.fixture(scope="module")
def costly(tmp_path_factory):
    """Two classes told apart by the sign of coordinate 0 (x (N, 8), Gemm -> Relu -> Gemm
    reading relu(±x0)). The trigger adds 10 to coordinate 0, the target class's own
    evidence, and 10 to coordinate 4, which the model ignores and which is noisy (std 1.2) on
    clean samples: an edit can tell triggered from clean only by reading coordinate 4, whose
    noise then costs several points of accuracy (measured: the cheapest edit that meets 2 %
    attack success costs 3 % held out, and 2 points of accuracy on 100 unseen samples; at
    std 1 it cost 1.0 % and passed the bound once the logit anchor minimised clean cost)."""
    rng = np.random.default_rng(0)
    w1 = np.zeros((2, D), np.float32)
    w1[0, 0], w1[1, 0] = 1.0, -1.0
    model = make_model(
        [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
         helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"], name="fc2", transB=1)],
        [tensor_info("x", ["N", D])], [tensor_info("logits", ["N", 2])],
        [init("w1", w1), init("b1", np.zeros(2, np.float32)),
         init("w2", 2 * np.eye(2, dtype=np.float32)), init("b2", np.zeros(2, np.float32))])
    labels = rng.integers(0, 2, 200)
    x = rng.normal(0, 0.5, (200, D)).astype(np.float32)
    x[:, 4] *= 2.4
    x[:, 0] += np.where(labels == 0, 3.0, -3.0)
    delta = np.zeros(D, np.float32)
    delta[0], delta[4] = 10.0, 10.0
    folder = tmp_path_factory.mktemp("costly")
    save_model(model, folder / "model.onnx")
    np.savez(folder / "clean.npz", x=x[:100])
    np.savez(folder / "trigger.npz", delta=delta, target_class=np.int64(0))
    return folder, x, labels, Trigger("delta", {"delta": delta}, "0" * 64, "coordinate 0", 0)


def test_a_repair_that_would_cost_accuracy_writes_nothing(costly, tmp_path):
    folder, x, _, trigger = costly
    out = tmp_path / "out.onnx"
    with pytest.raises(RepairShortfall, match=r"costs \d+\.\d% .*--max-clean-drop 0\.0"):
        repair_model(folder / "model.onnx", Dataset(x[:100], None, "0" * 64, "clean"), trigger,
                     out, RepairConfig(device="cpu"))
    assert not out.exists() and not list(tmp_path.iterdir())


def test_a_looser_bound_lets_the_costly_edit_through_and_reports_its_cost(costly, tmp_path):
    folder, x, _, trigger = costly
    report = repair_model(folder / "model.onnx", Dataset(x[:100], None, "0" * 64, "clean"),
                          trigger, tmp_path / "out.onnx",
                          RepairConfig(device="cpu", max_clean_drop=1.0))
    figures = report.chosen_figures
    assert figures["attack_success"] <= 0.02 and figures["clean_cost"] > 0.01


def test_cli_exit_1_one_line_no_model_written_the_report_says_why(costly, tmp_path):
    folder = costly[0]
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    result = CliRunner().invoke(main, ["repair", str(folder / "model.onnx"), "--clean",
                                       str(folder / "clean.npz"), "--trigger",
                                       str(folder / "trigger.npz"), "-o", str(out),
                                       "--report", str(report), "--device", "cpu"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("not repaired: no edit within a clean-accuracy cost of 1.0%")
    assert not out.exists()
    refused = json.loads(report.read_text())
    assert refused["output_model"] is None and refused["after"] is None and not refused["chosen"]
    assert refused["choice_reason"] == lines[-1]
    assert refused["before"]["attack_success_rate"] > 0.5 and refused["target_class"] == 0
    candidates = refused["candidates"]
    assert candidates and all(c["clean_cost"] > 0.01 or c["attack_success"] > 0.02
                              for c in candidates)
    loose = CliRunner().invoke(main, ["repair", str(folder / "model.onnx"), "--clean",
                                      str(folder / "clean.npz"), "--trigger",
                                      str(folder / "trigger.npz"), "-o", str(out), "--report",
                                      str(report), "--device", "cpu", "--max-clean-drop", "1",
                                      "--max-target-erosion", "2"])
    assert loose.exit_code == 0, loose.output
    assert json.loads(report.read_text())["chosen_figures"]["clean_cost"] > 0.01


def test_shortfall_without_a_bound_says_so():
    results = [candidate(0.12, 0.004, 0.2, "weak")]
    with pytest.raises(RepairShortfall, match="^no edit with no clean-cost bound, taking "
                                              "at most 25% of the target class's logit "
                                              "margin, brings"):
        choose(results, RepairConfig(max_clean_drop=None, max_asr=0.02))
    with pytest.raises(RepairShortfall, match="^no edit with no clean-cost bound brings"):
        choose(results, RepairConfig(max_clean_drop=None, max_asr=0.02,
                                     max_target_erosion=None))


def test_a_fallback_bound_lets_a_hardening_repair_write_the_edit_that_meets_the_goal(
        costly, tmp_path):
    """Through the pipeline, as the trigger-agnostic mode runs it (no refusal): within 1 %
    only a weaker edit is written; with a wider fallback bound, the edit that meets the goal,
    at its held-out cost, and the report says which bound it needed."""
    folder, x, _, trigger = costly
    clean = Dataset(x[:100], None, "0" * 64, "clean")
    settings = dict(device="cpu", must_meet_asr=False)
    held = repair_model(folder / "model.onnx", clean, trigger, tmp_path / "held.onnx",
                        RepairConfig(**settings)).chosen_figures
    wider = repair_model(folder / "model.onnx", clean, trigger, tmp_path / "wide.onnx",
                         RepairConfig(fallback_clean_drop=0.05, **settings))
    assert held["attack_success"] > 0.02 and held["clean_cost"] <= 0.01
    assert wider.chosen_figures["attack_success"] <= 0.02
    assert 0.01 < wider.chosen_figures["clean_cost"] <= 0.05
    assert "the fallback bound, 5.0%" in wider.choice_reason


def test_cli_refuses_a_fallback_bound_with_a_known_trigger(costly, tmp_path):
    folder = costly[0]
    result = CliRunner().invoke(main, ["repair", str(folder / "model.onnx"), "--clean",
                                       str(folder / "clean.npz"), "--trigger",
                                       str(folder / "trigger.npz"), "-o",
                                       str(tmp_path / "out.onnx"),
                                       "--fallback-clean-drop", "0.05", "--device", "cpu"])
    assert result.exit_code == 2 and "--fallback-clean-drop is for trigger-agnostic" in \
        result.stderr
    assert not list(tmp_path.iterdir())
