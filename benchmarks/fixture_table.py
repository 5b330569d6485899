"""Repair every committed fixture with N clean samples and the defaults; print CA/ASR table.

    python benchmarks/fixture_table.py [N]        (N defaults to 100)

It calls the installed command line, exactly as a user would:
    onnx-bdfix repair MODEL --clean CLEAN_N.npz --trigger T.npz -o OUT
    onnx-bdfix evaluate MODEL --data eval.npz --trigger T.npz --target-class C --json
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def evaluate(model: Path, folder: Path, target: int) -> dict:
    out = subprocess.run(["onnx-bdfix", "evaluate", str(model), "--data",
                          str(folder / "eval.npz"), "--trigger", str(folder / "trigger.npz"),
                          "--target-class", str(target), "--json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main(n: int) -> None:
    print("| fixture | layers edited | CA before → after | ASR before → after | "
          "target-class acc before → after |")
    print("|---|---|---|---|---|")
    for folder in sorted(p for p in FIXTURES.iterdir() if (p / "card.json").exists()):
        card = json.loads((folder / "card.json").read_text())
        with tempfile.TemporaryDirectory() as work:
            work = Path(work)
            with np.load(folder / "clean.npz") as pool:
                np.savez(work / "clean.npz", x=pool["x"][:n], scale=pool["scale"])
            subprocess.run(["onnx-bdfix", "repair", str(folder / "model.onnx"), "--clean",
                            str(work / "clean.npz"), "--trigger", str(folder / "trigger.npz"),
                            "-o", str(work / "out.onnx"), "--report", str(work / "r.json")],
                           check=True, capture_output=True, text=True)
            report = json.loads((work / "r.json").read_text())
            target = card["target_class"]
            before = evaluate(folder / "model.onnx", folder, target)
            after = evaluate(work / "out.onnx", folder, target)
        pct = lambda key: f"{100 * before[key]:.1f} → {100 * after[key]:.1f}"  # noqa: E731
        print(f"| {folder.name} | {', '.join(report['chosen'])} | {pct('clean_accuracy')} | "
              f"{pct('attack_success_rate')} | {pct('target_class_accuracy')} |", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
