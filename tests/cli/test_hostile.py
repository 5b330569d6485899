"""Hostile and broken inputs: each one is exit 3 with one line on stderr, no traceback,
nothing written anywhere under the work folder, and every input file left as it was."""
import hashlib
import os
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import FIXTURES, init, make_model, mlp, tensor_info
from onnx import helper
from onnx_bdfix_cli.main import main

BADNETS = FIXTURES / "cnn_badnets"


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) with the hash of its bytes."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file() and not path.is_symlink()}


def refused(args: list[str], work: Path, message: str, watch: Path | None = None) -> None:
    before = snapshot(work)
    watched = snapshot(watch) if watch else None
    result = CliRunner().invoke(main, [str(arg) for arg in args])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 3, (result.exit_code, result.stderr, result.stdout)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(message, lines[0], re.IGNORECASE), lines[0]
    assert snapshot(work) == before, "something was written or an input changed"
    if watch:
        assert snapshot(watch) == watched


@pytest.fixture
def work(tmp_path):
    """tmp/in holds a valid model, clean data and trigger; tmp/out is the output folder."""
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    shutil.copyfile(BADNETS / "model.onnx", tmp_path / "in" / "model.onnx")
    shutil.copyfile(BADNETS / "trigger.npz", tmp_path / "in" / "trigger.npz")
    with np.load(BADNETS / "clean.npz") as pool:
        np.savez(tmp_path / "in" / "clean.npz", x=pool["x"][:60], scale=pool["scale"])
    return tmp_path


def repair_args(work: Path, model=None, clean=None, trigger=None, out=None) -> list:
    return ["repair", model or work / "in" / "model.onnx", "--clean",
            clean or work / "in" / "clean.npz", "--trigger", trigger or work / "in" / "trigger.npz",
            "-o", out or work / "out" / "fixed.onnx", "--device", "cpu"]


def badnets_proto() -> onnx.ModelProto:
    return onnx.load(BADNETS / "model.onnx")


def write_model(work: Path, proto: onnx.ModelProto, name="hostile.onnx") -> Path:
    path = work / "in" / name
    path.write_bytes(proto.SerializeToString())
    return path


# ------------------------------------------------------------------------ model files
@pytest.mark.parametrize("content, message", [
    (b"this is not onnx at all", "not a readable ONNX model|not an ONNX model"),
    (b"", "empty"),
])
def test_not_onnx_or_empty(work, content, message):
    model = work / "in" / "bad.onnx"
    model.write_bytes(content)
    refused(repair_args(work, model=model), work, message)


def test_truncated_protobuf(work):
    model = work / "in" / "cut.onnx"
    model.write_bytes((BADNETS / "model.onnx").read_bytes()[:5000])
    refused(repair_args(work, model=model), work, "ONNX")


def test_corrupted_protobuf(work):
    payload = bytearray((BADNETS / "model.onnx").read_bytes())
    rng = np.random.default_rng(0)
    for position in rng.integers(0, 400, size=40):      # the graph's structure lies up front
        payload[position] ^= 0xFF
    model = work / "in" / "corrupt.onnx"
    model.write_bytes(bytes(payload))
    refused(repair_args(work, model=model), work, "ONNX|model")


def test_directory_as_model(work):
    refused(repair_args(work, model=work / "in"), work, "not a file")


def test_opset_too_new(work):
    proto = badnets_proto()
    proto.opset_import[0].version = 99
    refused(repair_args(work, model=write_model(work, proto)), work, "opset 99")


def test_ir_version_too_new(work):
    proto = badnets_proto()
    proto.ir_version = 99
    refused(repair_args(work, model=write_model(work, proto)), work, "IR version 99")


def test_custom_domain_operator(work):
    proto = badnets_proto()
    relu = next(node for node in proto.graph.node if node.op_type == "Relu")
    relu.op_type, relu.domain = "Backdoor", "com.attacker"
    proto.opset_import.append(helper.make_opsetid("com.attacker", 1))
    refused(repair_args(work, model=write_model(work, proto)), work,
            "com.attacker.*Backdoor|Backdoor.*com.attacker")


def test_no_editable_layer(work):
    model = make_model([helper.make_node("Relu", ["x"], ["logits"])],
                       [tensor_info("x", ["N", 1, 28, 28])],
                       [tensor_info("logits", ["N", 1, 28, 28])], [])
    model.graph.output[0].CopyFrom(tensor_info("logits", ["N", 784]))
    flat = make_model([helper.make_node("Flatten", ["x"], ["logits"])],
                      [tensor_info("x", ["N", 1, 28, 28])], [tensor_info("logits", ["N", 784])],
                      [])
    refused(repair_args(work, model=write_model(work, flat)), work, "no editable layer")


def test_input_with_no_shape(work):
    model = mlp()
    model.graph.input[0].type.tensor_type.ClearField("shape")
    refused(repair_args(work, model=write_model(work, model)), work, "shape")


def test_dynamic_image_size_with_an_image_folder(work):
    from PIL import Image
    model = make_model([helper.make_node("GlobalAveragePool", ["x"], ["p"]),
                        helper.make_node("Flatten", ["p"], ["f"]),
                        helper.make_node("Gemm", ["f", "w", "b"], ["logits"], transB=1)],
                       [tensor_info("x", ["N", 1, "H", "W"])], [tensor_info("logits", ["N", 3])],
                       [init("w", np.ones((3, 1), np.float32)), init("b", np.zeros(3, np.float32))])
    images = work / "in" / "images"
    images.mkdir()
    for index in range(10):
        Image.fromarray(np.full((8, 8), index * 20, np.uint8)).save(images / f"{index}.png")
    refused(repair_args(work, model=write_model(work, model), clean=images), work, "--size")


def test_several_inputs(work):
    model = make_model([helper.make_node("Add", ["a", "b"], ["s"]),
                        helper.make_node("Gemm", ["s", "w", "bias"], ["logits"], transB=1)],
                       [tensor_info("a", ["N", 4]), tensor_info("b", ["N", 4])],
                       [tensor_info("logits", ["N", 3])],
                       [init("w", np.ones((3, 4), np.float32)),
                        init("bias", np.zeros(3, np.float32))])
    refused(repair_args(work, model=write_model(work, model)), work, "2 data inputs")


def external_model(work: Path, location: str) -> Path:
    """The badnets model with its weights in external data, then pointed at ``location``."""
    folder = work / "in" / "external"
    folder.mkdir(exist_ok=True)
    onnx.save_model(badnets_proto(), folder / "model.onnx", save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    proto = onnx.load(folder / "model.onnx", load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    (folder / "model.onnx").write_bytes(proto.SerializeToString())
    return folder / "model.onnx"


def test_external_data_outside_the_folder(work):
    model = external_model(work, "../../../etc/passwd")
    refused(repair_args(work, model=model), work, "outside the model's folder")


def test_external_data_absolute_path(work):
    model = external_model(work, "/etc/passwd")
    refused(repair_args(work, model=model), work, "outside the model's folder")


def test_external_data_through_a_symlink(work):
    model = external_model(work, "link.bin")
    os.symlink(model.parent / "weights.bin", model.parent / "link.bin")
    refused(repair_args(work, model=model), work, "symbolic link")


def test_external_data_missing(work):
    model = external_model(work, "gone.bin")
    refused(repair_args(work, model=model), work, "missing")


def test_model_too_large_for_memory(work, monkeypatch):
    import onnx_bdfix.model.load as load
    monkeypatch.setattr(load, "available_memory", lambda: 10_000)
    refused(repair_args(work), work, r"needs about .* memory")


# ------------------------------------------------------------------------ data files
def write_clean(work: Path, **arrays) -> Path:
    path = work / "in" / "hostile.npz"
    np.savez(path, **arrays)
    return path


def clean_x(count=60) -> np.ndarray:
    with np.load(BADNETS / "clean.npz") as pool:
        return (pool["x"][:count] * pool["scale"]).astype(np.float32)


@pytest.mark.parametrize("make, message", [
    (lambda: {"x": clean_x()[:, 0]}, "samples are 28x28"),
    (lambda: {"x": clean_x().astype(np.complex64)}, "dtype complex64"),
    (lambda: {"x": clean_x().astype(bool)}, "dtype bool"),
    (lambda: {"x": clean_x().transpose(0, 2, 3, 1)}, "28x28x1"),
    (lambda: {"x": np.where(np.arange(784).reshape(1, 1, 28, 28) == 5, np.nan, clean_x())},
     "NaN or Inf"),
    (lambda: {"x": np.where(np.arange(784).reshape(1, 1, 28, 28) == 5, np.inf, clean_x())},
     "NaN or Inf"),
    (lambda: {"x": (clean_x() * 255).astype(np.uint8)}, "scale"),
    (lambda: {"x": clean_x()[:0]}, "N >= 1"),
    (lambda: {"x": clean_x()[:3]}, "at least"),
    (lambda: {"images": clean_x()}, "no array named 'x'"),
    (lambda: {"x": clean_x(), "y": np.zeros(7, np.int64)}, "labels"),
    (lambda: {"x": clean_x(), "scale": np.float32(np.nan)}, "scale"),
], ids=["shape", "complex", "bool", "layout", "nan", "inf", "integer-scale", "no-rows",
        "too-few", "no-x", "labels", "nan-scale"])
def test_bad_clean_data(work, make, message):
    refused(repair_args(work, clean=write_clean(work, **make())), work, message)


def test_empty_data_file(work):
    empty = work / "in" / "empty.npz"
    empty.write_bytes(b"")
    refused(repair_args(work, clean=empty), work, "empty|not a readable")


def test_pickled_data_is_not_loaded(work):
    path = work / "in" / "pickled.npz"
    np.savez(path, x=np.array([{"evil": 1}], dtype=object))
    refused(repair_args(work, clean=path), work, "not a readable|pickle")


# -------------------------------------------------------------------------- triggers
@pytest.mark.parametrize("arrays, message", [
    ({"mask": np.ones((3, 5)), "pattern": np.ones((3, 5))}, "does not broadcast"),
    ({"mask": np.full((1, 28, 28), 1.5), "pattern": np.ones((1, 28, 28))}, r"\[0, 1\]"),
    ({"delta": np.full((1, 28, 28), np.nan)}, "NaN or Inf"),
    ({"nothing": np.ones(3)}, "mask.*pattern|delta"),
], ids=["broadcast", "mask-range", "nan", "no-arrays"])
def test_bad_trigger(work, arrays, message):
    path = work / "in" / "hostile_trigger.npz"
    np.savez(path, **arrays)
    refused(repair_args(work, trigger=path), work, message)


@pytest.mark.parametrize("target", ["10", "-1"])
def test_target_class_out_of_range(work, target):
    refused(repair_args(work) + ["--target-class", target], work, "out of range")


# ---------------------------------------------------------------------------- outputs
def test_output_equal_to_input(work):
    refused(repair_args(work, out=work / "in" / "model.onnx"), work, "overwrite the input")


def test_output_in_a_missing_folder(work):
    refused(repair_args(work, out=work / "out" / "nope" / "fixed.onnx"), work, "does not exist")


def test_output_is_a_folder(work):
    refused(repair_args(work, out=work / "out"), work, "is a folder")


def test_output_folder_not_writable(work):
    if os.geteuid() != 0:
        locked = work / "out"
        locked.chmod(0o555)
        try:
            refused(repair_args(work, out=locked / "fixed.onnx"), work, "not writable")
        finally:
            locked.chmod(0o755)
        return
    if not Path("/sys").is_dir():
        pytest.skip("running as root with no read-only folder to write into")
    refused(repair_args(work, out=Path("/sys") / "fixed.onnx"), work, "not writable|cannot write")


# ------------------------------------------------------------------ every command
@pytest.mark.parametrize("command", ["inspect", "evaluate", "scan", "gate", "diff"])
def test_every_command_refuses_a_hostile_model(work, command):
    model = external_model(work, "../../../etc/passwd")
    data = ["--data", work / "in" / "clean.npz"]
    trigger = ["--trigger", work / "in" / "trigger.npz"]
    args = {"inspect": [model], "evaluate": [model, *data, *trigger],
            "scan": [model, "--clean", work / "in" / "clean.npz"],
            "gate": [model, *data, *trigger, "--junit", work / "out" / "gate.xml"],
            "diff": [work / "in" / "model.onnx", model]}[command]
    refused([command, *args], work, "outside the model's folder")


def test_compressed_data_that_would_not_fit_in_memory(work):
    """A deflated member whose header claims 3 PB: refused from the header, nothing read."""
    import io
    import zipfile
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (10**12, 1, 28, 28)})
    bomb = work / "in" / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", b"\x93NUMPY\x01\x00" + header.getvalue()[8:] + bytes(4096))
    refused(repair_args(work, clean=bomb), work, "unpack to .* GiB")


def test_a_single_score_output_is_refused(work):
    model = make_model([helper.make_node("Gemm", ["x", "w", "b"], ["z"], transB=1),
                        helper.make_node("Sigmoid", ["z"], ["p"])],
                       [tensor_info("x", ["N", 12])], [tensor_info("p", ["N", 1])],
                       [init("w", np.ones((1, 12), np.float32)),
                        init("b", np.zeros(1, np.float32))])
    rng = np.random.default_rng(0)
    np.savez(work / "in" / "flat.npz", x=rng.normal(size=(40, 12)).astype(np.float32))
    np.savez(work / "in" / "flat_trigger.npz", delta=np.ones(12, np.float32))
    refused(repair_args(work, model=write_model(work, model), clean=work / "in" / "flat.npz",
                        trigger=work / "in" / "flat_trigger.npz") + ["--output", "p"], work,
            "one score per sample")


# ------------------------------------------- every file the tool writes, the same rule
def test_report_over_the_input_model_is_refused(work):
    refused(repair_args(work) + ["--report", work / "in" / "model.onnx"], work,
            "must not overwrite")


def test_report_over_the_clean_data_is_refused(work):
    refused(repair_args(work) + ["--report", work / "in" / "clean.npz"], work,
            "must not overwrite")


@pytest.mark.parametrize("option", ["--report", "-o"])
def test_an_over_long_output_name_is_refused(work, option):
    long_name = work / "out" / ("r" * 300 + ".json")
    args = repair_args(work) if option == "--report" else repair_args(work, out=long_name)
    if option == "--report":
        args += ["--report", long_name]
    refused(args, work, "longer than")


def test_an_over_long_input_name_is_refused(work):
    refused(repair_args(work, clean=work / "in" / ("c" * 300 + ".npz")), work,
            "cannot be read|no such file")


def test_gate_report_over_long_name(work):
    refused(["gate", work / "in" / "model.onnx", "--data", work / "in" / "clean.npz",
             "--trigger", work / "in" / "trigger.npz", "--junit",
             work / "out" / ("j" * 300 + ".xml")], work, "longer than")


def test_a_symlink_at_the_output_name_is_replaced_not_written_through(work, tmp_path_factory):
    """A link planted at the output name, pointing at a file elsewhere, is replaced by the
    new file; the file it pointed at keeps its bytes."""
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "precious.txt"
    elsewhere.write_text("keep me")
    for name in ("fixed.onnx", "report.json"):
        (work / "out" / name).symlink_to(elsewhere)
    result = CliRunner().invoke(main, [str(a) for a in repair_args(work)]
                                + ["--report", str(work / "out" / "report.json")])
    assert result.exit_code == 0, result.stderr
    assert elsewhere.read_text() == "keep me"
    for name in ("fixed.onnx", "report.json"):
        assert not (work / "out" / name).is_symlink()
    onnx.checker.check_model(str(work / "out" / "fixed.onnx"))


def test_an_output_linked_to_an_input_does_not_change_the_input(work):
    model = work / "in" / "model.onnx"
    before = model.read_bytes()
    (work / "out" / "fixed.onnx").symlink_to(model)
    result = CliRunner().invoke(main, [str(a) for a in repair_args(work)])
    assert result.exit_code == 0, result.stderr
    assert model.read_bytes() == before
    assert not (work / "out" / "fixed.onnx").is_symlink()


# ----------------------------------------------------------- data a careless user gives
def test_a_decompression_bomb_image_is_refused(work):
    from PIL import Image
    folder = work / "in" / "images"
    folder.mkdir()
    Image.new("L", (28, 28)).save(folder / "a.png")
    Image.new("1", (20000, 20000)).save(folder / "bomb.png")      # 400 Mpixel, a few kB
    refused(repair_args(work, clean=folder), work, "decompression bomb")


def test_labels_outside_the_models_classes_are_refused(work):
    with np.load(BADNETS / "eval.npz") as pool:
        np.savez(work / "in" / "labelled.npz", x=pool["x"][:50], scale=pool["scale"],
                 y=np.full(50, 99, np.int64))
    refused(["evaluate", work / "in" / "model.onnx", "--data", work / "in" / "labelled.npz",
             "--trigger", work / "in" / "trigger.npz", "--device", "cpu"], work,
            "label 99 is out of range")


def test_scan_on_too_few_samples_says_how_many_it_needs(work):
    with np.load(BADNETS / "clean.npz") as pool:
        np.savez(work / "in" / "one.npz", x=pool["x"][:1], scale=pool["scale"])
    refused(["scan", work / "in" / "model.onnx", "--clean", work / "in" / "one.npz",
             "--device", "cpu"], work, "at least 16 clean samples")


@pytest.mark.parametrize("special", ["/dev/zero", "/dev/null"])
def test_a_device_file_as_input_is_refused(work, special):
    refused(repair_args(work, clean=special), work, "not a file|empty|cannot be read")
    refused(repair_args(work, model=special), work, "not a file|empty")


def test_mean_with_the_wrong_number_of_channels_is_refused(work):
    from PIL import Image
    folder = work / "in" / "grey"
    folder.mkdir()
    for index in range(10):
        Image.new("L", (28, 28), color=index * 20).save(folder / f"{index}.png")
    refused(repair_args(work, clean=folder) + ["--mean", "0.5,0.5"], work, "--mean gives 2")


@pytest.mark.parametrize("special", ["/dev/null", "/dev/stdout", "/proc/self/fd/1"])
def test_a_device_or_a_link_to_one_is_never_an_output(special):
    """Checked on the path alone: an output in /dev, /proc or /sys is refused before any
    file is made (a rename there, as root, would replace the device or the link)."""
    from onnx_bdfix.errors import OutputPathError
    from onnx_bdfix.output import check_output_path
    for what in ("output", "report"):
        with pytest.raises(OutputPathError, match="devices and kernel files"):
            check_output_path(special, [], what)


def test_a_link_to_a_device_planted_at_the_output_name_is_refused(work):
    (work / "out" / "fixed.onnx").symlink_to("/dev/null")
    refused(repair_args(work), work, "not a regular file")
    assert Path("/dev/null").exists() and not Path("/dev/null").is_file()
