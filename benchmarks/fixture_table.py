"""Repair every committed fixture with N clean samples and the defaults; print CA/ASR tables.

    python benchmarks/fixture_table.py [N] [--subsets K]

N defaults to 100. With --subsets K (K * N <= 500), each fixture is repaired K times, on K
disjoint slices of its clean pool, and a second table gives the mean and the worst change.
It calls the installed command line, exactly as a user would (a warp fixture gives its
triggered copies with --triggered / --triggered-data instead of --trigger):
    onnx-bdfix repair MODEL --clean CLEAN_N.npz --trigger T.npz -o OUT --report R.json
    onnx-bdfix evaluate MODEL --data eval.npz --trigger T.npz --target-class C --json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent / "zoo"))
from runs import trigger_args  # noqa: E402  (the zoo's rule: a trigger file, or copies)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
KEYS = ("clean_accuracy", "attack_success_rate", "target_class_accuracy")


def evaluate(model: Path, folder: Path, target: int) -> dict:
    out = subprocess.run(["onnx-bdfix", "evaluate", str(model), "--data",
                          str(folder / "eval.npz"), *map(str, trigger_args(folder, True)),
                          "--target-class", str(target), "--json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def repair(folder: Path, rows: slice, work: Path) -> tuple[dict, dict | None]:
    """The report and the repaired model's figures; a refusal (exit 1) is kept as a row:
    ({"refused": its line}, None)."""
    for name in ("clean", "clean_triggered"):
        if (folder / f"{name}.npz").is_file():
            with np.load(folder / f"{name}.npz") as pool:
                arrays = {k: pool[k] for k in pool.files if k != "y"}
            arrays["x"] = arrays["x"][rows]
            np.savez(work / f"{name}.npz", **arrays)
    done = subprocess.run(["onnx-bdfix", "repair", str(folder / "model.onnx"), "--clean",
                           str(work / "clean.npz"),
                           *map(str, trigger_args(folder, False, work / "clean_triggered.npz")),
                           "-o", str(work / "out.onnx"), "--report", str(work / "r.json")],
                          capture_output=True, text=True)
    if done.returncode == 1:
        return {"refused": done.stderr.strip().splitlines()[-1], "chosen": []}, None
    done.check_returncode()
    target = json.loads((folder / "card.json").read_text())["target_class"]
    return json.loads((work / "r.json").read_text()), evaluate(work / "out.onnx", folder, target)


def main(n: int, subsets: int) -> None:
    first = ["| fixture | layers edited | CA before → after | ASR before → after | "
             "target-class acc before → after |", "|---|---|---|---|---|"]
    spread = ["| fixture | CA change mean (worst) | ASR after mean (worst) | "
              "target-class change mean (worst) | refused (exit 1) |", "|---|---|---|---|---|"]
    for folder in sorted(p for p in FIXTURES.iterdir() if (p / "card.json").exists()):
        target = json.loads((folder / "card.json").read_text())["target_class"]
        before = evaluate(folder / "model.onnx", folder, target)
        runs = []
        for index in range(subsets):
            with tempfile.TemporaryDirectory() as work:
                runs.append(repair(folder, slice(index * n, (index + 1) * n), Path(work)))
        report, after = runs[0]
        pct = lambda key: f"{100 * before[key]:.1f} → " + \
            ("refused" if after is None else f"{100 * after[key]:.1f}")  # noqa: E731
        first.append(f"| {folder.name} | {', '.join(report['chosen']) or 'none (exit 1)'} | "
                     f"{pct(KEYS[0])} | {pct(KEYS[1])} | {pct(KEYS[2])} |")
        written = [a for _, a in runs if a is not None]
        refused = len(runs) - len(written)
        if not written:
            spread.append(f"| {folder.name} | – | – | – | {refused} |")
        else:
            change = {key: np.array([100 * (a[key] - before[key]) for a in written])
                      for key in KEYS}
            asr = np.array([100 * a[KEYS[1]] for a in written])
            spread.append(f"| {folder.name} | {change[KEYS[0]].mean():+.1f} "
                          f"({change[KEYS[0]].min():+.1f}) | {asr.mean():.1f} ({asr.max():.1f}) "
                          f"| {change[KEYS[2]].mean():+.1f} ({change[KEYS[2]].min():+.1f}) | "
                          f"{refused} |")
        print(first[-1], flush=True)
    print("\n".join(["", f"First {n} samples of each pool:"] + first))
    if subsets > 1:
        print("\n".join(["", f"{subsets} disjoint slices of {n} samples:"] + spread))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=100)
    parser.add_argument("--subsets", type=int, default=1)
    args = parser.parse_args()
    main(args.n, args.subsets)
