"""Is a repair's miss a matter of choice, or of what it picks from? (run by hand, never by CI;
minutes per zoo model on one core.)

    python benchmarks/candidates.py convnext_badnets vit_sig --eval 1000
    python benchmarks/candidates.py --known --slice 2 vit_badnets_norm

For each zoo model, the repair as the command runs it: trigger-agnostic on the 500-sample
pool (default), or with the trigger known on the 100-sample slice ``--slice`` of the pool
(``--known``, as ``zoo_table.py``'s ``known_K`` runs); no labels either way. Then every
candidate edit its choice picks from is written in memory and measured with the real trigger
on the first ``--eval`` test images:

- trigger-agnostic: the single-step edits within the clean-cost bound that reach the goal
  held out (or, when none does, those within the bound). A model where none leaves ≤ 5 %
  attack success at ≤ 2 points of clean accuracy is out of the choice's reach.
- known trigger: every single-step edit within the bound, each reading of its target-logit
  offset a row (``meeting``: it reaches ``max_asr`` held out, so the choice may pick it;
  ``chosen``: the one it picks). The goal: ≤ 2 % attack success, ≤ 1 point of clean
  accuracy and ≤ 2 points of target-class accuracy lost.

Sequential edits (a second step collected through a first) are not written here; the summary
says how many there were. One JSON line per candidate (held-out figures and real ones) goes
to ``--out``; one summary line per model to stdout.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "zoo"))

from build import cache_dir  # noqa: E402

from onnx_bdfix.agnostic.repair import agnostic_repair  # noqa: E402
from onnx_bdfix.data.dataset import load_npz  # noqa: E402
from onnx_bdfix.data.triggers import load_trigger  # noqa: E402
from onnx_bdfix.errors import RepairShortfall  # noqa: E402
from onnx_bdfix.evaluation import evaluate  # noqa: E402
from onnx_bdfix.model import load_model  # noqa: E402
from onnx_bdfix.repair import RepairConfig, crossval, pipeline  # noqa: E402

GOALS = {"agnostic": (0.05, 0.02, None), "known": (0.02, 0.01, 0.02)}  # ASR, CA and TA drop


@dataclass
class Case:
    """One zoo model's repair inputs and the test set it is measured on."""
    name: str
    target: int
    loaded: object
    clean: object          # the repair's samples (no labels)
    triggered: object      # the known trigger, or the triggered copies of ``clean``
    test: object
    test_triggered: object  # the trigger, or the test images' triggered copies


def load_case(folder: Path, count: int, known: bool, slice_number: int) -> Case:
    card = json.loads((folder / "card.json").read_text())
    pool = load_npz(folder / "clean.npz", "clean")
    rows = slice(100 * slice_number, 100 * slice_number + 100) if known else slice(0, 500)
    clean = replace(pool, raw=pool.raw[rows], y=None)
    test = load_npz(folder / "eval.npz", "eval").head(count)
    if (folder / "trigger.npz").is_file():
        trigger = load_trigger(folder / "trigger.npz", test.raw.shape[1:])
        triggered, test_triggered = trigger, trigger
    else:                                            # paired copies (warps, input-aware)
        paired = load_npz(folder / "clean_triggered.npz", "triggered")
        triggered = replace(paired, raw=paired.raw[rows], y=None)
        test_triggered = load_npz(folder / "eval_triggered.npz", "triggered").head(count)
    return Case(folder.name, card["target"], load_model(folder / "model.onnx"), clean,
                triggered, test, test_triggered)


def run_repair(case: Case, known: bool, out_path: Path) -> tuple[dict, str]:
    """The repair as the command runs it, its choice wrapped (not replaced) to keep what it
    picked from; and what it wrote, or why it refused."""
    seen = {}
    choose = pipeline.choose_or_refuse

    def kept(plan, fit, results, config, truth, timings):
        seen.update(plan=plan, fit=fit, results=results, config=config, chosen=None)
        seen["chosen"] = choose(plan, fit, results, config, truth, timings)
        return seen["chosen"]
    pipeline.choose_or_refuse = kept
    try:
        if known:
            written = pipeline.repair_model(case.loaded, case.clean, case.triggered, out_path,
                                            RepairConfig()).chosen
        else:
            written = agnostic_repair(case.loaded, case.clean, out_path, RepairConfig())[0].chosen
    except RepairShortfall as refused:
        written = f"nothing ({refused})"
    finally:
        pipeline.choose_or_refuse = choose
    return seen, str(written)


def pool_of(seen: dict, known: bool) -> list:
    results, config = seen["results"], seen["config"]
    if known:
        pool = crossval.within(results, config)
    else:
        pool = crossval.meeting(results, config) or crossval.within(results, config)
    return [candidate for candidate in pool if candidate.first is None]


def measure(case: Case, known: bool, out) -> str:
    before = evaluate(case.loaded, case.test, case.test_triggered, case.target, device="cpu")
    with tempfile.TemporaryDirectory() as work:
        seen, written = run_repair(case, known, Path(work) / "repaired.onnx")
    config, chosen = seen["config"], seen["chosen"]
    meeting = crossval.meeting(seen["results"], config)
    rows = []
    for number, candidate in enumerate(pool_of(seen, known)):
        edited = pipeline.apply_choice(seen["plan"], seen["fit"], candidate, config)
        after = evaluate(replace(case.loaded, proto=edited), case.test, case.test_triggered,
                         case.target, device="cpu")
        row = {key: value for key, value in candidate.as_dict().items() if key != "first"}
        row.update(model=case.name, number=number, meeting=candidate in meeting,
                   chosen=candidate is chosen,
                   real_asr=after.quality.attack_success_rate,
                   real_ca_change=after.quality.clean_accuracy - before.quality.clean_accuracy,
                   real_ta_change=after.per_class_accuracy[case.target]
                   - before.per_class_accuracy[case.target],
                   into_class=after.target_class)
        rows.append(row)
        out.write(json.dumps(row, default=str) + "\n")
    return summary(case.name, rows, known, written, seen["results"])


def good(row: dict, known: bool) -> bool:
    asr, ca, ta = GOALS["known" if known else "agnostic"]
    return row["real_asr"] <= asr and row["real_ca_change"] >= -ca \
        and (ta is None or row["real_ta_change"] >= -ta)


def summary(name: str, rows: list, known: bool, written: str, results: list) -> str:
    kept = [row for row in rows if good(row, known)]
    least = min(rows, key=lambda row: row["real_asr"], default=None)
    chosen = next((row for row in rows if row["chosen"]), None)
    sequential = sum(1 for result in results if result.first is not None)
    line = f"{name}: {len(rows)} candidates, {len(kept)} within the goal " \
           f"({sum(1 for row in kept if row['meeting'])} of them meeting it held out); " \
           f"written {written}"
    for what, row in (("chosen", chosen), ("least ASR", least)):
        if row is not None:
            line += f"; {what} {100 * row['real_asr']:.1f} % (CA " \
                    f"{100 * row['real_ca_change']:+.1f}, TA {100 * row['real_ta_change']:+.1f})"
    return line + (f"; {sequential} sequential edits not measured" if sequential else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--known", action="store_true",
                        help="the known-trigger repair on one 100-sample slice")
    parser.add_argument("--slice", type=int, default=0, help="which slice (with --known)")
    parser.add_argument("--eval", type=int, default=1000, help="test images measured")
    parser.add_argument("--out", default="candidates.jsonl")
    parser.add_argument("--cache", default=None)
    args = parser.parse_args()
    zoo = cache_dir(args.cache)
    with open(args.out, "a") as out:
        for name in args.models:
            case = load_case(zoo / name, args.eval, args.known, args.slice)
            print(measure(case, args.known, out), flush=True)


if __name__ == "__main__":
    main()
