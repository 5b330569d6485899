"""A model over 2 GiB, weights in external data, through inspect, repair and gate.

    python benchmarks/large_model.py [--keep DIR]

Protobuf cannot serialize a model over 2 GiB, so this is the path where ONNX Runtime gets
the model as a file with its weights beside it, and shape inference runs on a skeleton.
CI tests the same path on a small model with the limit lowered
(tests/test_model_features.py); this script runs a real one. It needs about 12 GB of memory
and 5 GB of disk, and writes docs/large-model.md.

The model is an MLP, x (N, 1024) -> 16384 -> 16384 -> 16384 -> 512 -> 10, with random
weights (about 2.1 GiB). It has no backdoor: the figures are time and memory, not quality.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parent.parent
WIDTHS = [1024, 16384, 16384, 16384, 512, 10]


def build(folder: Path) -> Path:
    """Write model.onnx and weights.bin without ever holding the whole model in protobuf."""
    rng = np.random.default_rng(0)
    nodes, inits, current = [], [], "x"
    with open(folder / "weights.bin", "wb") as weights:
        for index, (d, m) in enumerate(zip(WIDTHS[:-1], WIDTHS[1:])):
            w = (rng.standard_normal((d, m), dtype=np.float32) / np.sqrt(d)).astype(np.float32)
            inits.append(external(f"w{index}", w, weights))
            inits.append(helper.make_tensor(f"b{index}", TensorProto.FLOAT, [m],
                                            np.zeros(m, np.float32)))
            nodes.append(helper.make_node("MatMul", [current, f"w{index}"], [f"h{index}"],
                                          name=f"fc{index}"))
            last = index == len(WIDTHS) - 2
            out = "logits" if last else f"a{index}"
            nodes.append(helper.make_node("Add", [f"h{index}", f"b{index}"],
                                          [out if last else f"z{index}"], name=f"bias{index}"))
            if not last:
                nodes.append(helper.make_node("Relu", [f"z{index}"], [out], name=f"relu{index}"))
            current = out
    graph = helper.make_graph(nodes, "large", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", WIDTHS[0]])], [helper.make_tensor_value_info(
            "logits", TensorProto.FLOAT, ["N", WIDTHS[-1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def external(name: str, array: np.ndarray, weights) -> TensorProto:
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=array.shape)
    offset = weights.tell()
    weights.write(array.tobytes())
    for key, value in (("location", "weights.bin"), ("offset", str(offset)),
                       ("length", str(array.nbytes))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    tensor.data_location = TensorProto.EXTERNAL
    return tensor


def timed(args: list[str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall seconds, peak RSS in GB of the command (GNU time), and the finished process."""
    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", *args], capture_output=True,
                          text=True)
    seconds = time.perf_counter() - start
    lines = done.stderr.strip().splitlines()
    peak = int(lines[-1]) / 1e6 if lines and lines[-1].isdigit() else float("nan")  # kB
    done.stderr = "\n".join(lines[:-1])
    return seconds, peak, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="build (or reuse) the model here")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bdfix-large-"))
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model = folder / "model.onnx" if (folder / "model.onnx").exists() else build(folder)
    built = time.perf_counter() - start
    size = sum(p.stat().st_size for p in folder.glob("*") if p.is_file()) / 2**30
    rng = np.random.default_rng(1)
    np.savez(folder / "clean.npz", x=rng.standard_normal((200, WIDTHS[0])).astype(np.float32))
    delta = np.zeros(WIDTHS[0], np.float32)
    delta[:32] = 3.0
    np.savez(folder / "trigger.npz", delta=delta, target_class=np.int64(0))
    out = folder / "repaired.onnx"
    runs = {
        "inspect": ["onnx-bdfix", "inspect", str(model)],
        "repair": ["onnx-bdfix", "repair", str(model), "--clean", str(folder / "clean.npz"),
                   "--trigger", str(folder / "trigger.npz"), "--layers", "fc4", "-o",
                   str(out), "--device", "cpu"],
        "gate": ["onnx-bdfix", "gate", str(out), "--data", str(folder / "clean.npz"),
                 "--trigger", str(folder / "trigger.npz"), "--reference", str(model),
                 "--json", "--device", "cpu"],
    }
    rows = []
    for name, command in runs.items():
        seconds, peak, done = timed(command)
        if done.returncode not in (0, 1):
            sys.exit(f"{name} failed (exit {done.returncode}): {done.stderr.strip()}")
        detail = ""
        if name == "gate":
            result = json.loads(done.stdout)
            detail = (f"{'PASSED' if result['passed'] else 'FAILED'}; structure: "
                      f"{result['diff']['weights_only'] and 'only weights differ'}")
        rows.append(f"| {name} | {seconds:.0f} | {peak:.1f} | {detail} |")
        print(rows[-1], flush=True)
    written = sorted(p.name for p in folder.iterdir())
    lines = ["# A model over 2 GiB", "",
             f"Command: `python benchmarks/large_model.py` (model: {size:.2f} GiB on disk with "
             f"its weights in `weights.bin`, built in {built:.0f} s; 2-core CPU; peak RSS "
             "measured with GNU time).", "",
             "| command | seconds | peak RSS (GB) | result |", "|---|---|---|---|", *rows, "",
             f"Files in the folder afterwards: {', '.join(written)}. The repaired model "
             "keeps its weights external, in `repaired.onnx.data`."]
    (ROOT / "docs" / "large-model.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
