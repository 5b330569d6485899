"""Scan and trigger-agnostic repair of every fixture at 100, 300 and 500 clean samples.

    python benchmarks/agnostic_table.py [--sizes 100,300,500] [--start K] [--only A,B]

The repair never sees the trigger; the figures score it with the real one, on 3,000 held-out
test images. Prints a markdown table (docs/agnostic.md holds the last run).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from onnx_bdfix.agnostic import agnostic_repair  # noqa: E402
from onnx_bdfix.data import (
    load_data,  # noqa: E402
    load_trigger,  # noqa: E402
)
from onnx_bdfix.evaluation import evaluate  # noqa: E402
from onnx_bdfix.model import load_model, model_input  # noqa: E402
from onnx_bdfix.repair import RepairConfig  # noqa: E402

FIXTURES = HERE.parent / "fixtures"


def row(folder: Path, n: int, start: int = 0) -> str:
    card = json.loads((folder / "card.json").read_text())
    spec = model_input(load_model(folder / "model.onnx").proto)
    pool = load_data(folder / "clean.npz", spec)
    clean = replace(pool, raw=pool.raw[start:start + n], y=None)
    held_out = load_data(folder / "eval.npz", spec)
    trigger = load_trigger(folder / "trigger.npz", tuple(spec.sample_shape))
    target = card["target_class"]
    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        report, found = agnostic_repair(folder / "model.onnx", clean, Path(work) / "o.onnx",
                                        RepairConfig())
        seconds = time.perf_counter() - start
        after = evaluate(Path(work) / "o.onnx", held_out, held_out.rows(trigger=trigger),
                         target).quality
    before = evaluate(folder / "model.onnx", held_out, held_out.rows(trigger=trigger),
                      target).quality
    truth = f"{target}" if card["backdoored"] else "none"
    named = "none" if found.suspected_class is None else str(found.suspected_class)
    top = max(c["suspicion"] for c in found.classes)
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    tca = lambda q: "n/a" if q.target_class_accuracy is None else \
        pct(q.target_class_accuracy)  # noqa: E731
    return (f"| {folder.name} | {n} | {truth} | {found.verdict} ({named}, {pct(top)} %) | "
            f"{', '.join(report.chosen) or 'no edit'} | "
            f"{pct(before.clean_accuracy)} → {pct(after.clean_accuracy)} | "
            f"{pct(before.attack_success_rate)} → {pct(after.attack_success_rate)} | "
            f"{tca(before)} → {tca(after)} | {seconds:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,300,500")
    parser.add_argument("--start", type=int, default=0,
                        help="take the clean samples from this index of the pool on")
    parser.add_argument("--only", default="", help="comma-separated fixture names")
    args = parser.parse_args()
    wanted = set(filter(None, args.only.split(",")))
    print("| fixture | clean samples | true target | scan (named, top suspicion) | "
          "layers edited | CA before → after | ASR before → after | "
          "target-class acc. before → after | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for folder in sorted(p for p in FIXTURES.iterdir() if (p / "card.json").exists()):
        if wanted and folder.name not in wanted:
            continue
        for n in map(int, args.sizes.split(",")):
            print(row(folder, n, args.start), flush=True)


if __name__ == "__main__":
    main()
