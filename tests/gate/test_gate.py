"""The release gate: verdicts on real backdoored and repaired fixtures, exit codes, and the
JUnit, JSON (against docs/gate.schema.json) and HTML outputs."""
import json
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import BACKDOORED, FIXTURES, ROOT, card, init, make_model, tensor_info
from onnx import helper
from onnx_bdfix_cli.main import main

from onnx_bdfix.gate import (
    FAILED,
    PASSED,
    TAKEOVER,
    GateOptions,
    ModelFigures,
    settle_target,
)
from onnx_bdfix.gate.checks import structure_check
from onnx_bdfix.metrics import attack_success, moved_into

SCHEMA = json.loads((ROOT / "docs" / "gate.schema.json").read_text())


def gate(*args) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["gate", *map(str, args), "--device", "cpu"])
    return result.exit_code, result.stdout, result.stderr


def fixture_args(name: str, model=None) -> list:
    folder = FIXTURES / name
    return [model or folder / "model.onnx", "--data", folder / "eval.npz", "--trigger",
            folder / "trigger.npz"]


# the label-free cost estimate puts cnn_blended's repair at 2.9 % (it gives back target-class
# samples the backdoor had taken: measured CA +0.4); its gate test allows that bound
BOUNDS = {"cnn_blended": ["--max-clean-drop", "0.03"]}


def repaired(name: str, tmp_path, samples: int = 100):
    folder = FIXTURES / name
    with np.load(folder / "clean.npz") as pool:
        np.savez(tmp_path / "clean.npz", x=pool["x"][:samples], scale=pool["scale"])
    out = tmp_path / "fixed.onnx"
    result = CliRunner().invoke(main, ["repair", str(folder / "model.onnx"), "--clean",
                                       str(tmp_path / "clean.npz"), "--trigger",
                                       str(folder / "trigger.npz"), "-o", str(out),
                                       "--device", "cpu", *BOUNDS.get(name, [])])
    assert result.exit_code == 0, result.stderr
    return out


@pytest.mark.parametrize("name", BACKDOORED)
def test_gate_fails_the_backdoor_and_passes_the_repair(name, tmp_path):
    code, stdout, _ = gate(*fixture_args(name))
    assert code == 1
    assert stdout.strip().splitlines()[-1] == "FAILED: attack_success_rate"
    fixed = repaired(name, tmp_path)
    code, stdout, stderr = gate(*fixture_args(name, fixed), "--reference",
                                FIXTURES / name / "model.onnx", "--json")
    assert code == 0, stdout
    result = json.loads(stdout)
    assert stderr.strip() == "PASSED"
    assert result["model"]["target_class"] == card(name)["target_class"]
    assert result["model"]["attack_success_rate"] <= 0.04     # measured 0.1 .. 3.4 %
    assert [c["status"] for c in result["checks"]] == ["skipped", PASSED, PASSED, PASSED]
    assert result["reference"]["attack_success_rate"] > 0.95
    assert 1 <= len(result["edited_layers"]) <= 3


def test_outputs_validate_and_parse(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    pytest.importorskip("matplotlib")
    junit, page = tmp_path / "gate.xml", tmp_path / "gate.html"
    name = "cnn_badnets"
    code, stdout, stderr = gate(*fixture_args(name), "--min-accuracy", "0.95", "--reference",
                                FIXTURES / "cnn_clean" / "model.onnx", "--junit", junit,
                                "--html", page, "--json")
    assert code == 1
    result = json.loads(stdout)
    jsonschema.validate(result, SCHEMA)
    assert stderr.strip() == "FAILED: accuracy, attack_success_rate"
    assert result["failed_checks"] == ["accuracy", "attack_success_rate"]
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("tests") == "4" and suite.get("failures") == "2"
    failed = [case.get("name") for case in suite.iter("testcase")
              if case.find("failure") is not None]
    assert failed == ["accuracy", "attack_success_rate"]
    html = page.read_text()
    assert html.count("data:image/png;base64,") == 3
    assert "FAILED: accuracy, attack_success_rate" in html


def test_scan_check_and_no_labels(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    folder = FIXTURES / "sklearn_mlp_badnets"
    with np.load(folder / "eval.npz") as pool:
        np.savez(tmp_path / "unlabelled.npz", x=pool["x"][:300], scale=pool["scale"])
    code, stdout, _ = gate(folder / "model.onnx", "--data", tmp_path / "unlabelled.npz",
                           "--scan", "--json")
    assert code == 1
    result = json.loads(stdout)
    jsonschema.validate(result, SCHEMA)
    checks = {c["name"]: c for c in result["checks"]}
    assert checks["accuracy"]["status"] == "skipped"            # no labels
    assert checks["attack_success_rate"]["status"] == "skipped"  # no trigger
    assert checks["scan"]["status"] == FAILED
    assert result["scan"]["suspected_class"] == card("sklearn_mlp_badnets")["target_class"]


def test_clean_model_passes_with_its_trigger_target():
    code, stdout, _ = gate(*fixture_args("cnn_clean"), "--min-accuracy", "0.85")
    assert code == 0, stdout
    assert stdout.strip().splitlines()[-1] == "PASSED"


@pytest.mark.parametrize("extra, message", [
    (["--max-accuracy-drop", "0.1"], "--reference"),
    (["--clean", "x.npz"], "--scan"),
    (["--triggered-data", "x.npz"], "at most one"),
    (["--junit", "r.out", "--html", "r.out"], "different files"),
])
def test_usage_errors_are_exit_2(extra, message):
    code, _, stderr = gate(*fixture_args("cnn_badnets"), *extra)
    assert code == 2 and message in stderr


def test_min_accuracy_without_labels_is_exit_3(tmp_path):
    with np.load(FIXTURES / "cnn_badnets" / "eval.npz") as pool:
        np.savez(tmp_path / "u.npz", x=pool["x"][:50], scale=pool["scale"])
    code, _, stderr = gate(FIXTURES / "cnn_badnets" / "model.onnx", "--data", tmp_path / "u.npz",
                           "--min-accuracy", "0.5")
    assert code == 3 and "needs labels" in stderr


def test_report_over_an_input_is_refused(tmp_path):
    data = tmp_path / "eval.npz"
    shutil.copyfile(FIXTURES / "cnn_badnets" / "eval.npz", data)
    before = data.read_bytes()
    code, _, stderr = gate(FIXTURES / "cnn_badnets" / "model.onnx", "--data", data,
                           "--trigger", FIXTURES / "cnn_badnets" / "trigger.npz",
                           "--junit", data)
    assert code == 3 and "must not overwrite an input" in stderr
    assert data.read_bytes() == before


# --------------------------------------------------------------------- units
def figures(moved: list[float]) -> ModelFigures:
    return ModelFigures("m", "0" * 64, None, None, None, "", None, [0.9] * len(moved),
                        moved_into=moved)


def test_attack_success_and_moved_into():
    labels = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 2, 2])          # sample 1 is already wrong
    landed = np.array([2, 2, 2, 1, 2, 2])
    assert attack_success(labels, landed, 2) == 0.75
    # correctly classified samples of classes 0 and 1: rows 0, 2, 3; two of three move to 2
    assert moved_into(labels, predicted, landed, 3)[2] == pytest.approx(2 / 3)


def test_reference_names_the_target_unless_the_model_is_taken_over():
    reference = figures([0.0, 0.99, 0.0])
    reference.set_target(1, 0.99, "inferred")
    model = figures([0.0, 0.01, 0.1])                  # drift under the trigger: 10 %
    settle_target(model, reference)
    assert (model.target_class, model.attack_success_rate) == (1, 0.01)
    moved = figures([0.0, 0.01, TAKEOVER + 0.1])       # the backdoor moved to class 2
    settle_target(moved, reference)
    assert moved.target_class == 2


def test_structure_check_fails_on_a_changed_graph(tmp_path):
    from onnx_bdfix.diff import diff_models

    def model(op):
        return make_model([helper.make_node(op, ["x"], ["h"]),
                           helper.make_node("Gemm", ["h", "w", "b"], ["y"], transB=1)],
                          [tensor_info("x", ["N", 3])], [tensor_info("y", ["N", 2])],
                          [init("w", np.ones((2, 3), np.float32)),
                           init("b", np.zeros(2, np.float32))])
    (tmp_path / "a.onnx").write_bytes(model("Relu").SerializeToString())
    (tmp_path / "b.onnx").write_bytes(model("Sigmoid").SerializeToString())
    check = structure_check(diff_models(tmp_path / "a.onnx", tmp_path / "b.onnx"))
    assert check.status == FAILED and "Relu" in check.message


def test_gate_options_defaults_match_the_documented_ones():
    options = GateOptions()
    assert (options.max_asr, options.max_accuracy_drop) == (0.05, 0.02)


def test_same_inputs_give_the_same_report_apart_from_timings():
    args = fixture_args("sklearn_mlp_badnets") + ["--json"]
    first, second = json.loads(gate(*args)[1]), json.loads(gate(*args)[1])
    assert first.pop("timings") and second.pop("timings")
    assert first == second


def test_a_gate_that_checks_nothing_does_not_pass():
    code, _, stderr = gate(FIXTURES / "cnn_badnets" / "model.onnx", "--data",
                           FIXTURES / "cnn_badnets" / "eval.npz")
    assert code == 2 and "nothing to check" in stderr
    from onnx_bdfix.gate import SKIPPED, Check, GateResult
    skipped = GateResult([Check("accuracy", SKIPPED, None, None, "no labels")], figures([0.0]),
                         None, {}, None, GateOptions(), "cpu")
    assert not skipped.passed
    assert skipped.summary() == "FAILED: no check ran (every one was skipped)"


def test_a_given_target_does_not_hide_a_backdoor_elsewhere():
    from onnx_bdfix.gate import guard_takeover
    moved = figures([0.0, 0.01, 0.6])
    moved.set_target(1, 0.01, "given")
    guard_takeover(moved)
    assert (moved.target_class, moved.attack_success_rate) == (2, 0.6)
    kept = figures([0.0, 0.01, 0.1])                  # 10 % drift elsewhere: not a takeover
    kept.set_target(1, 0.01, "given")
    guard_takeover(kept)
    assert kept.target_class == 1


def test_gate_with_the_wrong_target_still_fails_the_backdoor():
    code, stdout, _ = gate(*fixture_args("cnn_badnets"), "--target-class", "3")
    assert code == 1 and "not into the given class 3" in stdout


@pytest.mark.parametrize("name, extra", [
    ("cnn_badnets", []),                            # target named in the trigger file
    ("cnn_blended", ["--target-class", "0"]),       # given, and the wrong one
    ("resnet_sig", ["--target-class", str(card("resnet_sig")["target_class"])]),
])
def test_evaluate_and_gate_agree_on_target_and_attack_success(name, extra, tmp_path):
    """The same inputs give the same target class and attack success rate in both."""
    folder = FIXTURES / name
    args = [folder / "model.onnx", "--data", folder / "eval.npz", "--trigger",
            folder / "trigger.npz", *extra]
    evaluated = CliRunner().invoke(main, ["evaluate", *map(str, args), "--json",
                                          "--device", "cpu"])
    gated = json.loads(gate(*args, "--json")[1])
    figures = json.loads(evaluated.stdout)
    assert figures["target_class"] == gated["model"]["target_class"]
    assert figures["attack_success_rate"] == gated["model"]["attack_success_rate"]


def test_evaluate_and_gate_agree_when_the_target_is_inferred(tmp_path):
    """A trigger file without a target: both read the same class off the model."""
    folder = FIXTURES / "cnn_blended"
    with np.load(folder / "trigger.npz") as stored:
        arrays = {key: stored[key] for key in stored.files if key != "target_class"}
    np.savez(tmp_path / "t.npz", **arrays)
    args = [folder / "model.onnx", "--data", folder / "eval.npz", "--trigger",
            tmp_path / "t.npz"]
    evaluated = json.loads(CliRunner().invoke(
        main, ["evaluate", *map(str, args), "--json", "--device", "cpu"]).stdout)
    gated = json.loads(gate(*args, "--json")[1])
    assert evaluated["target_class"] == gated["model"]["target_class"] \
        == card("cnn_blended")["target_class"]
    assert evaluated["attack_success_rate"] == gated["model"]["attack_success_rate"]
