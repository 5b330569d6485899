"""The command line: help, exit codes, one-line errors, JSON, and the installed entry point."""
import json
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FIXTURES
from onnx_bdfix_cli.main import main

BADNETS = FIXTURES / "cnn_badnets"


@pytest.fixture
def cli():
    return CliRunner()


def small_clean(tmp_path, n=60):
    with np.load(BADNETS / "clean.npz") as pool:
        np.savez(tmp_path / "clean.npz", x=pool["x"][:n], scale=pool["scale"])
    return tmp_path / "clean.npz"


@pytest.mark.parametrize("command", ["inspect", "repair", "evaluate", "scan", "diff", "demo"])
def test_every_command_has_help(cli, command):
    result = cli.invoke(main, [command, "--help"])
    assert result.exit_code == 0
    assert len(main.commands[command].help) > 20


def test_inspect_json(cli):
    result = cli.invoke(main, ["inspect", str(BADNETS / "model.onnx"), "--json"])
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    assert [layer["op"] for layer in info["layers"]] == ["Conv", "Conv", "Gemm", "Gemm"]
    assert info["score_output"] == "logits"


def test_repair_then_evaluate(cli, tmp_path):
    out, report = tmp_path / "fixed.onnx", tmp_path / "report.json"
    result = cli.invoke(main, ["repair", str(BADNETS / "model.onnx"), "--clean",
                               str(small_clean(tmp_path)), "--trigger",
                               str(BADNETS / "trigger.npz"), "-o", str(out),
                               "--report", str(report), "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    assert "attack success" in result.stdout
    assert json.loads(report.read_text())["target_class"] == 0
    result = cli.invoke(main, ["evaluate", str(out), "--data", str(BADNETS / "eval.npz"),
                               "--trigger", str(BADNETS / "trigger.npz"), "--target-class", "0",
                               "--json"])
    assert result.exit_code == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["attack_success_rate"] < 0.05
    assert len(figures["per_class_accuracy"]) == 10
    assert figures["per_class_accuracy"][0] == figures["target_class_accuracy"]
    result = cli.invoke(main, ["diff", str(BADNETS / "model.onnx"), str(out), "--json"])
    assert result.exit_code == 0, result.stderr
    changes = json.loads(result.stdout)
    assert changes["weights_only"] and changes["structure"] == []
    assert 1 <= len(changes["initializers"]) <= 3
    assert changes["metadata"] == ["added: onnx_bdfix.provenance"]


def test_bad_model_is_exit_3_with_one_line_and_nothing_written(cli, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not onnx")
    out = tmp_path / "out.onnx"
    result = cli.invoke(main, ["repair", str(bad), "--clean", str(small_clean(tmp_path)),
                               "--trigger", str(BADNETS / "trigger.npz"), "-o", str(out)])
    assert result.exit_code == 3
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert not out.exists()
    assert bad.read_bytes() == b"this is not onnx"


def test_trigger_that_does_not_broadcast_is_exit_3(cli, tmp_path):
    np.savez(tmp_path / "t.npz", mask=np.ones((3, 5)), pattern=np.ones((3, 5)))
    result = cli.invoke(main, ["evaluate", str(BADNETS / "model.onnx"), "--data",
                               str(BADNETS / "eval.npz"), "--trigger", str(tmp_path / "t.npz")])
    assert result.exit_code == 3
    assert "does not broadcast" in result.stderr


def test_output_equal_to_input_is_refused(cli, tmp_path):
    model = tmp_path / "m.onnx"
    shutil.copyfile(BADNETS / "model.onnx", model)
    before = model.read_bytes()
    result = cli.invoke(main, ["repair", str(model), "--clean", str(small_clean(tmp_path)),
                               "--trigger", str(BADNETS / "trigger.npz"), "-o", str(model)])
    assert result.exit_code == 3 and "overwrite" in result.stderr
    assert model.read_bytes() == before


def test_trigger_and_triggered_together_is_usage_error(cli, tmp_path):
    result = cli.invoke(main, ["repair", str(BADNETS / "model.onnx"), "--clean",
                               str(small_clean(tmp_path)), "-o", str(tmp_path / "o.onnx"),
                               "--trigger", str(BADNETS / "trigger.npz"),
                               "--triggered", str(BADNETS / "trigger.npz")])
    assert result.exit_code == 2


def test_without_a_trigger_repair_says_it_is_trigger_agnostic(cli, tmp_path):
    sklearn = FIXTURES / "sklearn_mlp_badnets"
    result = cli.invoke(main, ["repair", str(sklearn / "model.onnx"), "--clean",
                               str(sklearn / "clean.npz"), "-o", str(tmp_path / "o.onnx"),
                               "--report", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.stderr
    assert "trigger-agnostic mode" in result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["config"]["mode"] == "agnostic" and report["target_class"] == 3


def test_target_class_out_of_range_is_exit_3(cli):
    result = cli.invoke(main, ["evaluate", str(BADNETS / "model.onnx"), "--data",
                               str(BADNETS / "eval.npz"), "--trigger",
                               str(BADNETS / "trigger.npz"), "--target-class", "10"])
    assert result.exit_code == 3 and "out of range" in result.stderr


def test_cuda_without_cuda_is_a_clear_error(cli):
    import onnxruntime
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has CUDA")
    result = cli.invoke(main, ["evaluate", str(BADNETS / "model.onnx"), "--data",
                               str(BADNETS / "eval.npz"), "--trigger",
                               str(BADNETS / "trigger.npz"), "--device", "cuda"])
    assert result.exit_code == 3 and "CUDA" in result.stderr


def test_demo_removes_the_backdoor(cli):
    result = cli.invoke(main, ["demo", "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["before"]["attack_success_rate"] > 0.95
    assert figures["after"]["attack_success_rate"] < 0.05


def test_installed_command_runs(tmp_path):
    command = shutil.which("onnx-bdfix")
    if command is None:
        pytest.skip("onnx-bdfix is not installed in this environment")
    done = subprocess.run([command, "inspect", str(BADNETS / "model.onnx")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "/head/head.3/Gemm" in done.stdout


def test_inspect_activations_exposes_every_tensor(cli):
    result = cli.invoke(main, ["inspect", str(BADNETS / "model.onnx"), "--json",
                               "--activations", str(BADNETS / "clean.npz"), "--trigger",
                               str(BADNETS / "trigger.npz"), "--probe", "16"])
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)["activations"]
    assert len(rows) >= 8
    keyed = [row for row in rows if row["key_of"]]
    assert len(keyed) == 3              # the keys of all editable layers but the first (input)
    assert all(row["divergence"] > 0 for row in keyed)


def test_diff_of_different_models_shows_the_structure(cli):
    result = cli.invoke(main, ["diff", str(BADNETS / "model.onnx"),
                               str(FIXTURES / "resnet_sig" / "model.onnx")])
    assert result.exit_code == 0, result.stderr
    assert "structure:" in result.stdout and "the structure differs" in result.stdout


def test_repairing_twice_gives_the_same_bytes_and_report(cli, tmp_path):
    sklearn = FIXTURES / "sklearn_mlp_badnets"
    reports = []
    for name in ("a", "b"):
        result = cli.invoke(main, ["repair", str(sklearn / "model.onnx"), "--clean",
                                   str(small_clean_of(sklearn, tmp_path)), "--trigger",
                                   str(sklearn / "trigger.npz"), "-o",
                                   str(tmp_path / f"{name}.onnx"), "--report",
                                   str(tmp_path / f"{name}.json"), "--device", "cpu"])
        assert result.exit_code == 0, result.stderr
        report = json.loads((tmp_path / f"{name}.json").read_text())
        report.pop("timings")
        report.pop("output_model")
        reports.append(report)
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert reports[0] == reports[1]


def small_clean_of(folder, tmp_path, n=100):
    with np.load(folder / "clean.npz") as pool:
        np.savez(tmp_path / "clean.npz", x=pool["x"][:n], scale=pool["scale"])
    return tmp_path / "clean.npz"


def test_inspect_lists_layers_without_a_class_score_output(cli, tmp_path):
    from conftest import init, make_model, tensor_info
    from onnx import helper
    model = make_model([helper.make_node("Gemm", ["x", "w", "b"], ["z"], transB=1),
                        helper.make_node("Sigmoid", ["z"], ["p"])],
                       [tensor_info("x", ["N", 12])], [tensor_info("p", ["N", 1])],
                       [init("w", np.ones((1, 12), np.float32)),
                        init("b", np.zeros(1, np.float32))])
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    result = cli.invoke(main, ["inspect", str(tmp_path / "m.onnx"), "--json"])
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["score_output"] is None and info["layers"][0]["bypassed"] is None


@pytest.mark.parametrize("command", ["inspect", "repair", "evaluate", "scan", "gate", "gate-ref"])
def test_each_model_is_read_once_per_command(cli, tmp_path, monkeypatch, command):
    """The CLI loads a model once and hands it to every step (the reference once more)."""
    import onnx

    import onnx_bdfix.model.load as load
    reads = []
    real = onnx.load_model
    monkeypatch.setattr(load.onnx, "load_model",
                        lambda path, **kw: reads.append(path) or real(path, **kw))
    model, clean = BADNETS / "model.onnx", small_clean(tmp_path)
    trigger = ["--trigger", BADNETS / "trigger.npz"]
    args = {"inspect": [model],
            "repair": [model, "--clean", clean, *trigger, "-o", tmp_path / "o.onnx"],
            "evaluate": [model, "--data", clean, *trigger],
            "scan": [model, "--clean", clean],
            "gate": [model, "--data", clean, *trigger, "--scan"],
            "gate-ref": [model, "--data", clean, *trigger, "--reference", model]}[command]
    result = cli.invoke(main, [command.split("-")[0], *map(str, args), "--device", "cpu"]
                        if command != "inspect" else ["inspect", str(model)])
    assert result.exit_code in (0, 1), result.stderr
    assert len(reads) == (2 if command == "gate-ref" else 1), reads


def byte_input_badnets(tmp_path):
    """The BadNets fixture as an export that takes its pixels as uint8 (a Cast and a scale
    by 1/255 in front), with its samples and trigger in bytes (scale 1)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    model = onnx.load(str(BADNETS / "model.onnx"))
    graph, name = model.graph, model.graph.input[0].name
    for node in graph.node:
        node.input[:] = [f"{name}_scaled" if tensor == name else tensor for tensor in node.input]
    graph.node.insert(0, helper.make_node("Mul", [f"{name}_float", "byte_scale"],
                                          [f"{name}_scaled"]))
    graph.node.insert(0, helper.make_node("Cast", [name], [f"{name}_float"],
                                          to=TensorProto.FLOAT))
    graph.initializer.append(numpy_helper.from_array(np.float32(1 / 255), "byte_scale"))
    graph.input[0].type.tensor_type.elem_type = TensorProto.UINT8
    onnx.save_model(model, tmp_path / "model.onnx")
    with np.load(BADNETS / "eval.npz") as pool:
        np.savez(tmp_path / "eval.npz", x=pool["x"], y=pool["y"], scale=np.float32(1))
    with np.load(BADNETS / "clean.npz") as pool:
        np.savez(tmp_path / "clean.npz", x=pool["x"][:100], scale=np.float32(1))
    with np.load(BADNETS / "trigger.npz") as trigger:
        np.savez(tmp_path / "trigger.npz", mask=trigger["mask"],
                 pattern=255 * trigger["pattern"], target_class=trigger["target_class"])
    return tmp_path


def test_a_model_taking_uint8_pixels_is_scanned_and_repaired(cli, tmp_path):
    folder = byte_input_badnets(tmp_path)
    result = cli.invoke(main, ["scan", str(folder / "model.onnx"), "--clean",
                               str(folder / "clean.npz"), "--json"])
    assert result.exit_code == 1, result.stderr                  # suspicious
    assert json.loads(result.stdout)["suspected_class"] == 0
    result = cli.invoke(main, ["repair", str(folder / "model.onnx"), "--clean",
                               str(folder / "clean.npz"), "--trigger",
                               str(folder / "trigger.npz"), "-o", str(folder / "fixed.onnx")])
    assert result.exit_code == 0, result.stderr
    result = cli.invoke(main, ["evaluate", str(folder / "fixed.onnx"), "--data",
                               str(folder / "eval.npz"), "--trigger",
                               str(folder / "trigger.npz"), "--json"])
    figures = json.loads(result.stdout)
    assert figures["attack_success_rate"] < 0.02 and figures["clean_accuracy"] > 0.89
