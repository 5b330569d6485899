"""One zoo model through the installed command line, as a user would run it; each run is a
dict of figures (a failure keeps its exit code and error line: it is a row, never dropped)."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np


def cli(*args, timeout: int = 3600) -> tuple[int, str, str, float]:
    start = time.perf_counter()
    done = subprocess.run(["onnx-bdfix", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    return done.returncode, done.stdout, done.stderr, time.perf_counter() - start


def command_tree() -> Path:
    """The source tree whose ``onnx_bdfix`` and ``onnx_bdfix_cli`` the ``onnx-bdfix`` command
    imports, in this environment (``PYTHONPATH`` included)."""
    command = shutil.which("onnx-bdfix")
    if command is None:
        raise SystemExit("no onnx-bdfix command on PATH")
    interpreter = Path(command).read_text().splitlines()[0].removeprefix("#!").strip()
    found = subprocess.run(
        [interpreter, "-c", "import onnx_bdfix, onnx_bdfix_cli; "
         "print(onnx_bdfix.__file__); print(onnx_bdfix_cli.__file__)"],
        capture_output=True, text=True, check=True).stdout.split()
    trees = {Path(found[0]).resolve().parents[1], Path(found[1]).resolve().parents[1]}
    if len(trees) != 1:
        raise SystemExit(f"onnx-bdfix imports its library and its CLI from two trees: {trees}")
    return trees.pop()


def check_command_tree(tree: Path) -> None:
    """Stop unless the command runs the code of ``tree``, the one the runs' digest is
    computed on (a ``PYTHONPATH`` pointing at another worktree would label one code's rows
    with another's digest)."""
    used = command_tree()
    if used != tree.resolve():
        raise SystemExit(f"onnx-bdfix runs the code in {used}, not {tree}: the rows would "
                         "carry the wrong digest (set PYTHONPATH or the install to this tree)")


def clean_slice(folder: Path, work: Path, start: int, count: int) -> dict:
    """clean.npz rows [start, start + count) (and their triggered copies) as files."""
    paths = {}
    for name in ("clean", "clean_triggered"):
        source = folder / f"{name}.npz"
        if source.is_file():
            with np.load(source) as stored:
                arrays = {k: stored[k] for k in stored.files}
            arrays["x"] = arrays["x"][start:start + count]
            arrays.pop("y", None)                        # the repair gets no labels
            paths[name] = work / f"{name}_{start}_{count}.npz"
            np.savez(paths[name], **arrays)
    return paths


def trigger_args(folder: Path, eval_set: bool, paired_clean: Path | None = None) -> list:
    if (folder / "trigger.npz").is_file():
        return ["--trigger", folder / "trigger.npz"]
    if eval_set:
        return ["--triggered-data", folder / "eval_triggered.npz"]
    return ["--triggered", paired_clean]


def evaluate(model: Path, folder: Path, target: int) -> dict:
    code, out, err, _ = cli("evaluate", model, "--data", folder / "eval.npz",
                            *trigger_args(folder, True), "--target-class", target, "--json")
    if code:
        return {"error": err.strip().splitlines()[-1] if err.strip() else f"exit {code}"}
    figures = json.loads(out)
    kept = {key: figures.get(key) for key in ("clean_accuracy", "attack_success_rate",
                                              "target_class_accuracy", "target_confusion")}
    if figures.get("target_class") not in (None, target):
        # the trigger now takes samples into a third class: the ASR is that class's share,
        # and the backdoor's own target class is what its accuracy is judged on
        kept["takeover_class"] = figures["target_class"]
        kept["target_class_accuracy"] = figures["per_class_accuracy"][target]
    return kept


def repair(model: Path, folder: Path, card: dict, work: Path, start: int, count: int,
           known: bool) -> dict:
    """A known-trigger or trigger-agnostic repair on pool rows [start, start + count)."""
    files = clean_slice(folder, work, start, count)
    out, report = work / f"r_{known}_{start}_{count}.onnx", work / "report.json"
    args = ["repair", model, "--clean", files["clean"], "-o", out, "--report", report]
    if known:
        args += trigger_args(folder, False, files.get("clean_triggered"))
    code, _, err, seconds = cli(*args)
    run = {"mode": "known" if known else "agnostic", "samples": count, "start": start,
           "exit": code, "seconds": round(seconds, 2)}
    if code:
        run["error"] = err.strip().splitlines()[-1] if err.strip() else f"exit {code}"
        return run
    detail = json.loads(report.read_text())
    run.update(layers=detail["chosen"], target_found=detail["target_class"],
               target_samples=detail["repair_step"]["target_samples"],
               after=evaluate(out, folder, card["target"]))
    return run


def scan(model: Path, folder: Path) -> dict:
    code, out, err, seconds = cli("scan", model, "--clean", folder / "clean.npz", "--json")
    if code not in (0, 1):
        return {"exit": code, "error": err.strip().splitlines()[-1], "seconds": seconds}
    found = json.loads(out)
    top = max(found["classes"], key=lambda row: row["suspicion"])
    return {"exit": code, "verdict": found["verdict"], "named": found["suspected_class"],
            "score": top["suspicion"], "top_class": top["class"],
            "anomaly": max(row.get("anomaly_index", 0.0) for row in found["classes"]),
            "suspicions": [row["suspicion"] for row in found["classes"]],
            "evaluations": found.get("evaluations", {}).get("total"),
            "seconds": round(seconds, 2)}


def forward_seconds(model: Path, folder: Path, count: int, repeats: int = 3) -> float:
    """One ONNX Runtime forward pass over ``count`` pool samples, session included
    (median of ``repeats``): the unit the runs' wall times are given in."""
    import onnx
    from onnx_bdfix.model.runtime import open_runner     # runs a fixed batch in pieces
    with np.load(folder / "clean.npz") as stored:
        x = (stored["x"][:count] * stored["scale"] + stored["offset"]).astype(np.float32)
    proto = onnx.load(str(model))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner = open_runner(proto, "cpu")
        for first in range(0, len(x), 64):
            runner.run(x[first:first + 64])
        times.append(time.perf_counter() - start)
    return float(np.median(times))
