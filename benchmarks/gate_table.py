"""The release gate on every fixture, before and after a known-trigger repair, run as a user
runs it (the installed `onnx-bdfix` command). Writes docs/gate-table.md.

    python benchmarks/gate_table.py [CLEAN_SAMPLES]

For each fixture: gate the original; repair it with CLEAN_SAMPLES clean samples (default 100)
and the trigger file; gate the repaired file with the defaults, then with the original as
--reference; and once more with the trigger's target class removed from the trigger file, to
show what the gate infers when nobody says which class the trigger targets.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ["cnn_badnets", "cnn_blended", "resnet_sig", "sklearn_mlp_badnets",
            "keras_cnn_blended", "cnn_clean"]


def gate(model: Path, folder: Path, trigger: Path, *extra) -> dict:
    done = subprocess.run(["onnx-bdfix", "gate", str(model), "--data", str(folder / "eval.npz"),
                           "--trigger", str(trigger), "--json", *map(str, extra)],
                          capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"gate failed with exit {done.returncode}: {done.stderr}")
    result = json.loads(done.stdout)
    assert result["passed"] == (done.returncode == 0)
    return result


def cell(result: dict) -> str:
    figures = result["model"]
    verdict = "PASSED" if result["passed"] else "FAILED"
    return (f"{verdict} (ASR {100 * figures['attack_success_rate']:.1f} into "
            f"{figures['target_class']})")


def untargeted(trigger: Path, work: Path) -> Path:
    with np.load(trigger) as stored:
        arrays = {key: stored[key] for key in stored.files if key != "target_class"}
    path = work / "untargeted.npz"
    np.savez(path, **arrays)
    return path


def row(name: str, samples: int, work: Path) -> str:
    folder = ROOT / "fixtures" / name
    model, trigger = folder / "model.onnx", folder / "trigger.npz"
    with np.load(folder / "clean.npz") as pool:
        np.savez(work / "clean.npz", x=pool["x"][:samples], scale=pool["scale"])
    fixed = work / "fixed.onnx"
    subprocess.run(["onnx-bdfix", "repair", str(model), "--clean", str(work / "clean.npz"),
                    "--trigger", str(trigger), "-o", str(fixed)], check=True,
                   capture_output=True)
    bare = untargeted(trigger, work)
    cells = [gate(model, folder, trigger), gate(fixed, folder, trigger),
             gate(fixed, folder, trigger, "--reference", model),
             gate(model, folder, bare), gate(fixed, folder, bare),
             gate(fixed, folder, bare, "--reference", model)]
    return f"| {name} | " + " | ".join(cell(c) for c in cells) + " |"


def main() -> None:
    samples = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    lines = ["# The release gate on the fixtures", "",
             f"Command: `python benchmarks/gate_table.py {samples}` (repair with {samples} "
             "clean samples; the gate scores the 3,000 held-out images of eval.npz with the "
             "default limits: ASR <= 5 %). ASR cells: the figure the check held, and the class "
             "it was measured at.", "",
             "| fixture | original | repaired | repaired, --reference original | "
             "original, target unknown | repaired, target unknown | "
             "repaired, target unknown, --reference |",
             "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in FIXTURES:
            lines.append(row(name, samples, Path(tmp)))
            print(lines[-1], flush=True)
    (ROOT / "docs" / "gate-table.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
