"""Is a trigger-agnostic miss a matter of choice, or of reconstruction? (run by hand, never by
CI; minutes per zoo model on one core.)

    python benchmarks/agnostic_candidates.py convnext_badnets vit_sig --eval 1000

For each zoo model: the trigger-agnostic repair on its 500-sample pool (no labels), as the
command runs it; then every candidate edit its choice picks from (the single-step edits within
the clean-cost bound that reach the goal held out, or, when none does, those within the bound)
is written in memory and measured with the real trigger on the first ``--eval`` test images.
A model where no candidate leaves ≤ 5 % attack success at ≤ 2 points of clean accuracy is out
of the choice's reach: its reconstructions, not the ranking, are what fail. One JSON line per
candidate (held-out figures and real ones) goes to ``--out``; one summary line per model to
stdout.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "zoo"))

from build import cache_dir  # noqa: E402

from onnx_bdfix.agnostic.repair import agnostic_repair  # noqa: E402
from onnx_bdfix.data.dataset import load_npz  # noqa: E402
from onnx_bdfix.data.triggers import load_trigger  # noqa: E402
from onnx_bdfix.evaluation import evaluate  # noqa: E402
from onnx_bdfix.model import load_model  # noqa: E402
from onnx_bdfix.repair import RepairConfig, crossval, pipeline  # noqa: E402


def candidates_of(loaded, clean, out_path) -> tuple[list, object]:
    """The repair's candidates the choice picks from, with what applying one needs; the
    pipeline's own choice goes on unchanged (it is wrapped, not replaced)."""
    seen = {}
    choose = pipeline.choose_or_refuse

    def kept(plan, fit, results, config, truth, timings):
        seen.update(plan=plan, fit=fit, results=results, config=config)
        return choose(plan, fit, results, config, truth, timings)
    pipeline.choose_or_refuse = kept
    try:
        report, _ = agnostic_repair(loaded, clean, out_path, RepairConfig())
    finally:
        pipeline.choose_or_refuse = choose
    pool = crossval.meeting(seen["results"], seen["config"]) or \
        crossval.within(seen["results"], seen["config"])
    return [c for c in pool if c.first is None], (seen, report)


def measure(name: str, folder: Path, count: int, out) -> str:
    card = json.loads((folder / "card.json").read_text())
    loaded = load_model(folder / "model.onnx")
    pool = load_npz(folder / "clean.npz", "clean")
    clean = replace(pool, y=None)                          # the repair gets no labels
    test = load_npz(folder / "eval.npz", "eval").head(count)
    trigger = load_trigger(folder / "trigger.npz", test.raw.shape[1:])
    before = evaluate(loaded, test, trigger, card["target"], device="cpu").quality
    with tempfile.TemporaryDirectory() as work:
        pool_edits, (seen, report) = candidates_of(loaded, clean, Path(work) / "repaired.onnx")
    rows = []
    for number, candidate in enumerate(pool_edits):
        edited = pipeline.apply_choice(seen["plan"], seen["fit"], candidate, seen["config"])
        after = evaluate(replace(loaded, proto=edited), test, trigger, card["target"],
                         device="cpu")
        row = {key: value for key, value in candidate.as_dict().items() if key != "first"}
        row.update(model=name, number=number, real_asr=after.quality.attack_success_rate,
                   real_ca_change=after.quality.clean_accuracy - before.clean_accuracy,
                   into_class=after.target_class)
        rows.append(row)
        out.write(json.dumps(row, default=str) + "\n")
    good = [r for r in rows if r["real_asr"] <= 0.05 and r["real_ca_change"] >= -0.02]
    least = min(rows, key=lambda r: r["real_asr"], default=None)
    return (f"{name}: {len(rows)} candidates, {len(good)} within ASR <= 5 % and CA drop <= 2; "
            f"written {report.chosen}" + (
                "" if least is None else
                f"; least ASR {100 * least['real_asr']:.1f} % "
                f"(CA {100 * least['real_ca_change']:+.1f})"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--eval", type=int, default=1000, help="test images measured")
    parser.add_argument("--out", default="agnostic_candidates.jsonl")
    parser.add_argument("--cache", default=None)
    args = parser.parse_args()
    zoo = cache_dir(args.cache)
    with open(args.out, "a") as out:
        for name in args.models:
            print(measure(name, zoo / name, args.eval, out), flush=True)


if __name__ == "__main__":
    main()
