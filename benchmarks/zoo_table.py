"""Run onnx-bdfix on every model of the benchmark zoo, as a user would, and write
docs/benchmark.md (run by hand, never by CI; hours on two cores).

    python benchmarks/zoo/build.py                 # the zoo, once (see its docstring)
    python benchmarks/zoo_table.py                 # every model; resumes from its results
    python benchmarks/zoo_table.py --only vit_badnets_norm --slices 5

Per model, through the installed `onnx-bdfix` command:
- known-trigger repair on 100 clean samples (``--slices`` disjoint slices of the pool; the
  worst is reported), with the trigger file or the triggered copies;
- trigger-agnostic repair on 100 and on 500 clean samples;
- ``scan`` on the 500-sample pool: verdict, named class, top suspicion (its ROC AUC over clean
  against backdoored models);
- before/after clean accuracy, attack success and target-class accuracy on 3,000 other test
  images; wall time as a multiple of one ONNX Runtime forward pass over the same samples;
- the same trigger through the never-backdoored model of the same architecture and input
  (``clean_reference``): what part of an ASR after repair the architecture gives anyway.
Results are kept in RESULTS (JSON lines) beside the zoo, so a stopped run goes on where it
stopped; benchmarks/baselines.py adds the training-based defenses to the same file. Each
onnx-bdfix run records a digest of the code it ran (onnx_bdfix/ and cli/; for a known-trigger
repair, all but onnx_bdfix/agnostic/, which it never imports), taken over the syntax trees
without docstrings, so that an edit of comments, docstrings or layout keeps the results; runs
made by other code are measured again, so the table never mixes two versions of the method
unnoticed: ``--accept known=DIGEST`` (or scan=, agnostic=) also counts the runs of an older
digest, for code whose later changes do not touch what those runs do; every section then names
each digest it shows, with its count of runs.
"""
from __future__ import annotations

import argparse
import ast
import functools
import hashlib
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "zoo"))

import runs  # noqa: E402
from build import cache_dir  # noqa: E402
from render import render  # noqa: E402
from specs import ZOO  # noqa: E402

RESULTS = "results.jsonl"
OWN_RUNS = ("scan", "known_", "agnostic_")      # runs of onnx-bdfix itself


@functools.cache
def code_digest(skip: str = "") -> str:
    """sha256 over the library's and the command line's Python files (but ``skip``, a
    subpackage the runs never import); once per process (a run never edits the code)."""
    digest = hashlib.sha256()
    for path in sorted([*(HERE.parent / "onnx_bdfix").rglob("*.py"),
                        *(HERE.parent / "cli").rglob("*.py")]):
        if skip and path.is_relative_to(HERE.parent / "onnx_bdfix" / skip):
            continue
        digest.update(str(path.relative_to(HERE.parent)).encode())
        digest.update(code_only(path.read_text()).encode())
    return digest.hexdigest()[:16]


def code_only(source: str) -> str:
    """The module's syntax tree without docstrings (comments and layout are not in it)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) \
                and body and docstring(body[0]):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def docstring(statement: ast.stmt) -> bool:
    return isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant) \
        and isinstance(statement.value.value, str)


def run_code(run: str) -> str:
    """The code a run depends on: a known-trigger repair never runs the trigger search."""
    return code_digest("agnostic") if run.startswith("known_") else code_digest()


def run_kind(run: str) -> str:
    """scan, known or agnostic: the part of the page a run of onnx-bdfix belongs to."""
    return "scan" if run == "scan" else "known" if run.startswith("known_") else "agnostic"


def acceptable(entry: dict, accepted: dict) -> bool:
    """A run made by today's code, or by a digest ``accepted`` for its kind."""
    return entry.get("code") == run_code(entry["run"]) or \
        entry.get("code") in accepted.get(run_kind(entry["run"]), ())


def forget_stale(results: dict, accepted: dict | None = None) -> None:
    """Drop onnx-bdfix runs made by other code than today's (or than ``accepted``: kind ->
    digests)."""
    for key in [key for key, entry in results.items()
                if key[1].startswith(OWN_RUNS) and not acceptable(entry, accepted or {})]:
        del results[key]


def load_results(path: Path, accepted: dict | None = None) -> dict:
    """(model, run) -> its last entry; for a run of onnx-bdfix, its last by today's code or
    an ``accepted`` digest where one exists (a later run by other code does not hide it)."""
    results = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            key = (entry["model"], entry["run"])
            old = results.get(key)
            if old is None or not key[1].startswith(OWN_RUNS) or \
                    acceptable(entry, accepted or {}) or not acceptable(old, accepted or {}):
                results[key] = entry
    return results


def record(path: Path, results: dict, model: str, run: str, figures: dict) -> None:
    entry = {"model": model, "run": run, **figures}
    results[(model, run)] = entry
    with open(path, "a") as out:
        out.write(json.dumps(entry) + "\n")


def forget_rebuilt(results: dict, cards: dict) -> None:
    """Drop the results of a model that was rebuilt since they were measured, and a clean
    reference measured on a model rebuilt since."""
    for name, card in cards.items():
        before = results.get((name, "before"))
        if before is not None and before.get("model_sha256", card["model_sha256"]) != \
                card["model_sha256"]:
            for key in [key for key in results if key[0] == name]:
                del results[key]
    for key, entry in list(results.items()):
        if key[1] == "clean_reference" and entry["reference_sha256"] != \
                cards.get(entry["reference"], {}).get("model_sha256"):
            del results[key]


def plan(slices: int, agnostic: bool, known: bool = True, sizes=(100, 500)
         ) -> list[tuple[str, bool, int, int]]:
    """(run name, known trigger, pool start, samples) for one model."""
    steps = [(f"known_{k}", True, 100 * k, 100) for k in range(slices)] if known else []
    if agnostic:
        steps += [(f"agnostic_{size}", False, 0, size) for size in sizes]
    return steps


def clean_reference(card: dict, cards: dict) -> dict | None:
    """The first never-backdoored zoo model (zoo order) with ``card``'s architecture,
    framework and input (data, normalization, layout), or None."""
    same = ("arch", "framework", "data", "normalize", "nhwc")
    return next((other for other in cards.values() if not other["backdoored"]
                 and all(other.get(key) == card.get(key) for key in same)), None)


def measure_reference(folder: Path, card: dict, reference: dict | None, results: dict,
                      path: Path) -> None:
    """What the never-backdoored model of the same architecture does with this model's
    trigger (its test images and target): ``evaluate``'s figures, as for the repaired
    model, so its ASR (or the share of a class the trigger takes most) reads beside them."""
    name = folder.name
    if not card["backdoored"] or reference is None:
        return
    done = results.get((name, "clean_reference"))
    if done is not None and done.get("reference_sha256") == reference["model_sha256"]:
        return
    model = folder.parent / reference["name"] / "model.onnx"
    record(path, results, name, "clean_reference", {
        "reference": reference["name"], "reference_sha256": reference["model_sha256"],
        **runs.evaluate(model, folder, card["target"])})


def run_model(folder: Path, card: dict, results: dict, path: Path, slices: int,
              agnostic: bool, known: bool = True, sizes=(100, 500), scan: bool = True,
              reference: dict | None = None) -> None:
    name, model = folder.name, folder / "model.onnx"
    if (name, "before") not in results:
        record(path, results, name, "before", {
            "model_sha256": card["model_sha256"],
            **runs.evaluate(model, folder, card["target"]),
            "forward_100": runs.forward_seconds(model, folder, 100),
            "forward_500": runs.forward_seconds(model, folder, 500)})
    measure_reference(folder, card, reference, results, path)
    if scan and (name, "scan") not in results:
        record(path, results, name, "scan", {**runs.scan(model, folder),
                                             "code": run_code("scan")})
    with tempfile.TemporaryDirectory() as work:
        for run, given, start, count in plan(slices, agnostic, known, sizes):
            if (name, run) not in results:
                record(path, results, name, run, {
                    **runs.repair(model, folder, card, Path(work), start, count, given),
                    "code": run_code(run)})
                print(f"{name} {run}: {results[(name, run)]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=None)
    parser.add_argument("--only", default="")
    parser.add_argument("--slices", type=int, default=5,
                        help="disjoint 100-sample slices for the known-trigger repair")
    parser.add_argument("--no-agnostic", action="store_true")
    parser.add_argument("--agnostic-samples", default="100,500",
                        help="clean-sample counts of the trigger-agnostic runs")
    parser.add_argument("--no-known", action="store_true",
                        help="skip the known-trigger repairs (scan and before figures only)")
    parser.add_argument("--no-scan", action="store_true",
                        help="skip the scans (a run of the known-trigger repairs only)")
    parser.add_argument("--render-only", action="store_true",
                        help="write the table from the results measured so far")
    parser.add_argument("--keep-stale", action="store_true",
                        help="also show runs made by other code (marked nowhere: for a look)")
    parser.add_argument("--accept", action="append", default=[], metavar="KIND=DIGEST,...",
                        help="also count the runs of KIND (scan, known or agnostic) made by "
                             "these code digests, for code whose later changes do not touch "
                             "what those runs do (each section names every digest it shows)")
    parser.add_argument("--out", default=str(HERE.parent / "docs" / "benchmark.md"))
    args = parser.parse_args()
    cache = cache_dir(args.cache)
    path = cache / RESULTS
    accepted = {kind: set(digests.split(",")) for kind, digests in
                (entry.split("=", 1) for entry in args.accept)}
    results = load_results(path, accepted)
    wanted = set(filter(None, args.only.split(",")))
    built = {spec.name: json.loads((cache / spec.name / "card.json").read_text())
             for spec in ZOO if (cache / spec.name / "card.json").is_file()}
    cards = {name: card for name, card in built.items() if not wanted or name in wanted}
    forget_rebuilt(results, built)
    if not args.render_only:
        runs.check_command_tree(HERE.parent)
    if not args.keep_stale:
        forget_stale(results, accepted)
    for spec in ZOO:
        if spec.name in cards:
            if not args.render_only:
                run_model(cache / spec.name, cards[spec.name], results, path, args.slices,
                          not args.no_agnostic, not args.no_known,
                          tuple(int(n) for n in args.agnostic_samples.split(",")),
                          not args.no_scan, clean_reference(cards[spec.name], built))
    page = render(cards, results, args.slices, len(ZOO))
    also = "".join(f"; {kind} runs also by `{'`, `'.join(sorted(digests))}` (--accept)"
                   for kind, digests in sorted(accepted.items()))
    Path(args.out).write_text(page + f"\nCode measured: onnx_bdfix/ and cli/ digest "
                              f"`{run_code('scan')}` (known-trigger runs: "
                              f"`{run_code('known_0')}`, all but agnostic/){also}.\n")


if __name__ == "__main__":
    main()
