"""docs/benchmark.md from the zoo's cards and the results of benchmarks/zoo_table.py."""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

KNOWN_TARGET = {"asr": 0.02, "ca_drop": 0.01, "ta_drop": 0.02}       # issue targets
AGNOSTIC_TARGET = {"asr": 0.05, "ca_drop": 0.02}
KEYS = ("clean_accuracy", "attack_success_rate", "target_class_accuracy")


def pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def change(before: dict, after: dict, key: str) -> str:
    return f"{pct(before.get(key))} → {pct(after.get(key))}"


TOOK = 0.5           # a "backdoored" model whose ASR is below this: the attack did not take


def took(card: dict, before: dict | None) -> bool:
    return card["backdoored"] and before is not None and \
        (before.get("attack_success_rate") or 0) >= TOOK


def judged(run: dict, before: dict, target: dict, backdoored: bool,
           reference: dict | None = None) -> tuple[str, list]:
    """'ok' or 'miss', and the reasons (a failed run is a miss); an ASR miss says what the
    never-backdoored model of the same architecture does with the trigger (``reference``)."""
    if run.get("exit"):
        return "miss", [f"exit {run['exit']}: {run.get('error', '')}"]
    after = run["after"]
    if "error" in after:
        return "miss", [after["error"]]
    reasons = []
    if backdoored and after["attack_success_rate"] > target["asr"]:
        floor = before.get("target_confusion")
        # the target's floor says nothing of a class the trigger now takes samples into
        where = into(after) or (f" (floor {pct(floor)})" if floor is not None else "")
        reasons.append(f"ASR {pct(after['attack_success_rate'])} %{where}"
                       f"{reference_note(reference)}")
    drop = before["clean_accuracy"] - after["clean_accuracy"]
    limit = target["ca_drop"] if backdoored else 0.01
    if drop > limit:
        reasons.append(f"CA −{100 * drop:.1f}")
    if "ta_drop" in target and before.get("target_class_accuracy") is not None and \
            after.get("target_class_accuracy") is not None and \
            before["target_class_accuracy"] - after["target_class_accuracy"] > target["ta_drop"]:
        reasons.append(f"TA −{100 * (before['target_class_accuracy'] - after['target_class_accuracy']):.1f}")
    return ("miss" if reasons else "ok"), reasons


def worst_known(results: dict, name: str, slices: int) -> dict | None:
    """The known-trigger slice with the highest ASR after (a failure first)."""
    found = [results[(name, f"known_{k}")] for k in range(slices) if (name, f"known_{k}") in results]
    if not found:
        return None
    return max(found, key=lambda r: (bool(r.get("exit")),
                                     r.get("after", {}).get("attack_success_rate") or 0))


def model_rows(cards: dict, results: dict, slices: int, mode: str) -> tuple[list, list]:
    """One row per model (known trigger: the slice with the highest ASR after); a model
    misses when any of its runs misses, and each missing run is named."""
    rows, misses = [], []
    target = KNOWN_TARGET if mode == "known" else AGNOSTIC_TARGET
    for name, card in cards.items():
        before = results.get((name, "before"))
        names = [f"known_{k}" for k in range(slices)] if mode == "known" else [mode]
        runs = [(run, results[(name, run)]) for run in names if (name, run) in results]
        if before is None or not runs:
            continue
        reference = results.get((name, "clean_reference"))
        reasons = [f"{run}: {'; '.join(why)}" for run, r in runs
                   for verdict, why in [judged(r, before, target, card["backdoored"],
                                               reference)]
                   if verdict == "miss"]
        run = worst_known(results, name, slices) if mode == "known" else runs[0][1]
        forward = before[f"forward_{min(run['samples'], 500)}"] * (2 if mode == "known" else 1)
        verdict = "miss" if reasons else "ok"
        if card["backdoored"] and not took(card, before):
            verdict, reasons = "attack did not take", []
        rows.append((card, before, run.get("after", {}), run, verdict,
                     run["seconds"] / forward, reference))
        if reasons:
            misses.append(f"- {name}: {' | '.join(reasons)}")
    return rows, misses


def table(rows: list) -> list[str]:
    lines = ["| model | arch | attack | rate | split | CA | ASR | ASR floor | clean model's ASR "
             "| target-class acc. | layers | seconds (× forward) | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for card, before, after, run, verdict, multiple, reference in rows:
        layers = ", ".join(run.get("layers", [])) or ("no edit" if not run.get("exit") else
                                                      "failed")
        lines.append(f"| {card['name']} | {card['arch']} | {card['attack'] or 'clean'} | "
                     f"{card['rate'] if card['attack'] else '–'} | {card['split']} | "
                     f"{change(before, after, KEYS[0])} | {asr_cell(before, after)} | "
                     f"{pct(before.get('target_confusion'))} | {reference_cell(reference)} | "
                     f"{change(before, after, KEYS[2])} | {layers[:60]} | "
                     f"{run['seconds']:.0f} ({multiple:.1f}) | "
                     f"{verdict} |")
    return lines


def into(after: dict) -> str:
    """' into class N' when the repaired trigger takes samples into a third class N (the
    ASR is then its share there), else ''."""
    return f" into class {after['takeover_class']}" if "takeover_class" in after else ""


def reference_cell(reference: dict | None) -> str:
    """The never-backdoored model's ASR with the trigger (its share of the class the trigger
    takes most, where that is not the target); '–' where the zoo has no such model."""
    if reference is None or "attack_success_rate" not in reference:
        return "–"
    return pct(reference["attack_success_rate"]) + (f" ({into(reference).strip()})"
                                                    if into(reference) else "")


def reference_note(reference: dict | None) -> str:
    if reference_cell(reference) == "–":
        return ""
    return f" (never-backdoored {reference['reference']}: " \
           f"{pct(reference['attack_success_rate'])} %{into(reference)})"


def asr_cell(before: dict, after: dict) -> str:
    """Before → after, and which class the share went into where it is not the target (the
    target-class column is then the backdoor's own target's accuracy)."""
    where = into(after)
    return change(before, after, KEYS[1]) + (f" ({where.strip()})" if where else "")


def summary(rows: list, field: str) -> list[str]:
    groups = defaultdict(list)
    for card, before, after, *_ in rows:
        if "attack_success_rate" in after:
            groups[card[field] or "clean"].append((before, after))
    lines = [f"| {field} | models | ASR after, mean / worst | CA change, mean / worst |",
             "|---|---|---|---|"]
    for key in sorted(groups):
        asr = [a["attack_success_rate"] for _, a in groups[key]]
        drop = [a["clean_accuracy"] - b["clean_accuracy"] for b, a in groups[key]]
        lines.append(f"| {key} | {len(asr)} | {pct(np.mean(asr))} / {pct(max(asr))} | "
                     f"{100 * np.mean(drop):+.1f} / {100 * min(drop):+.1f} |")
    return lines


def scan_section(cards: dict, results: dict) -> list[str]:
    from sklearn.metrics import roc_auc_score
    rows = [(card, results[(name, "scan")]) for name, card in cards.items()
            if (name, "scan") in results]
    scored = [(card, took(card, results.get((card["name"], "before"))), r["score"],
               r.get("anomaly", 0.0)) for card, r in rows
              if "score" in r and (took(card, results.get((card["name"], "before")))
                                   or not card["backdoored"])]
    lines = ["| model | attack | true target | verdict | named | top class | top suspicion | "
             "anomaly index | seconds |", "|---|---|---|---|---|---|---|---|---|"]
    for card, r in rows:
        lines.append(f"| {card['name']} | {card['attack'] or 'clean'} | "
                     f"{card['target'] if card['backdoored'] else '–'} | "
                     f"{r.get('verdict', 'failed: ' + r.get('error', ''))} | {r.get('named')} | "
                     f"{r.get('top_class', '–')} | {pct(r.get('score'))} | "
                     f"{r.get('anomaly', float('nan')):.2f} | {r.get('seconds', 0):.0f} |")
    lines += [""] + verdict_rates(cards, rows, results)
    labels = [label for _, label, *_ in scored]
    if len(set(labels)) == 2:
        for name, column in (("top suspicion", 2), ("anomaly index", 3)):
            auc = roc_auc_score(labels, [row[column] for row in scored])
            splits = {split: [row for row in scored if row[0]["split"] == split]
                      for split in ("tune", "check")}
            by_split = ", ".join(
                f"{split} {roc_auc_score([r[1] for r in part], [r[column] for r in part]):.3f}"
                for split, part in splits.items() if len({r[1] for r in part}) == 2)
            lines += ["", f"ROC AUC ({name}, clean against backdoored): **{auc:.3f}** over "
                      f"{labels.count(True)} backdoored and {labels.count(False)} clean models "
                      f"({by_split}; a model whose attack did not take counts as neither)."]
    return lines


HELD_FAMILIES = ("badnets", "blended-noise", "blended-image", "sig", "lf")   # issue 12's ≥ 90 %
GROUPS = {"tune": lambda c: c["split"] == "tune", "check": lambda c: c["split"] == "check",
          "all": lambda c: True,
          "BadNets, Blended, SIG, LF (and clean)":
              lambda c: c["attack"] in (None, *HELD_FAMILIES),
          "WaNet, Input-aware, SSBA, TrojanNN":
              lambda c: c["attack"] is not None and c["attack"] not in HELD_FAMILIES}


def verdict_rates(cards: dict, rows: list, results: dict) -> list[str]:
    """Detection (suspicious, naming the true target) and false alarms, per split (the
    defaults may be tuned on the tune seeds only; the check seeds say how they carry over)
    and per family group."""
    lines = ["| models | backdoored | detected (right class) | named a wrong class | "
             "clean models | false alarms | image evaluations (mean) |",
             "|---|---|---|---|---|---|---|"]
    for split, keep in GROUPS.items():
        chosen = [(card, r) for card, r in rows if keep(card)]
        bad = [(c, r) for c, r in chosen
               if c["backdoored"] and took(c, results.get((c["name"], "before")))]
        good = [(c, r) for c, r in chosen if not c["backdoored"]]
        hit = sum(r.get("verdict") == "suspicious" and r.get("named") == c["target"]
                  for c, r in bad)
        wrong = sum(r.get("verdict") == "suspicious" and r.get("named") != c["target"]
                    for c, r in bad)
        alarms = sum(r.get("verdict") == "suspicious" for _, r in good)
        spent = [r["evaluations"] for _, r in chosen if "evaluations" in r]
        lines.append(f"| {split} | {len(bad)} | {hit} | {wrong} | {len(good)} | {alarms} | "
                     f"{f'{np.mean(spent):,.0f}' if spent else '–'} |")
    return lines


def coverage(cards: dict, results: dict, total: int) -> list[str]:
    measured = [n for n in cards if any((n, run) in results for run in ("scan", "known_0"))]
    backdoored = sum(cards[n]["backdoored"] for n in measured)
    return [f"Coverage: {len(cards)} of the zoo's {total} models are built, {len(measured)} "
            f"measured ({backdoored} backdoored, {len(measured) - backdoored} clean; each "
            "section says which code measured it). A model not listed below has not been built or measured yet; it is not "
            "left out for its result.", ""]


def render(cards: dict, results: dict, slices: int, total: int = 0) -> str:
    out = ["# Benchmark zoo", "",
           "Made with `python benchmarks/zoo/build.py` (the zoo) and "
           "`python benchmarks/zoo_table.py` (this page), on a 2-core CPU. Every figure is "
           "measured through the installed `onnx-bdfix` command on 3,000 test images the "
           "repair never saw. A failure is a row. `split`: the seeds defaults may be tuned "
           "on (tune) or that only check them (check). `× forward`: the run's wall time, the "
           "command's start included (about 2 s of Python and ONNX Runtime imports, which "
           "dominate on the small models), over one ONNX Runtime forward pass of the model on "
           "the same samples (clean and triggered for the known-trigger repair). `ASR floor`: "
           "the share of other classes' test images the original model already puts in the "
           "target class with no trigger (`evaluate`'s `target_confusion`); the ASR counts "
           "them too, so a repair cannot bring it much below that without changing clean "
           "answers. The verdict still holds every model to the issue's 2 %. `clean model's "
           "ASR`: the same trigger on the same test images through the zoo's never-backdoored "
           "model of the same architecture, framework and input (`evaluate`, as for the "
           "repaired model; `–` where the zoo has none): what the architecture does with the "
           "trigger with no backdoor at all. It is shown, not subtracted: the verdict does not "
           "use it. `(into class "
           "N)`: after the repair the trigger takes that share of other classes' images "
           "into class N rather than the backdoor's target (`evaluate` reports the class "
           "the trigger takes most); the target-class column stays the backdoor's own "
           "target. Runs made before commit f2248e6 (stop 22) did not record it; where it "
           "happened, their target-class column is class N's accuracy.", ""] + \
        coverage(cards, results, total or len(cards))
    for mode, title in (("known", f"Known trigger, 100 clean samples (worst of {slices} "
                                  "disjoint slices)"),
                        ("agnostic_100", "Trigger-agnostic, 100 clean samples"),
                        ("agnostic_500", "Trigger-agnostic, 500 clean samples")):
        rows, misses = model_rows(cards, results, slices, mode)
        if not rows:
            continue
        runs = [f"known_{k}" for k in range(slices)] if mode == "known" else [mode]
        out += [f"## {title}", "", measured_by(cards, results, runs), ""] + table(rows) + [""] + summary(rows, "arch") + [""] + \
            summary(rows, "attack") + ["", f"Misses ({len(misses)} of {len(rows)}):"] + \
            (misses or ["- none"]) + [""]
    out += ["## Scan", "", measured_by(cards, results, ["scan"]), ""] + \
        scan_section(cards, results) + [""]
    out += ["## Side by side with published defenses", "",
            "Made with `python benchmarks/baselines.py`. CLP (channel Lipschitzness-based "
            "pruning, data-free like onnx-bdfix: no samples, the exported weights only; its "
            "default u = 3). FT, FP, FT-SAM on the same models, converted with onnx2torch; "
            "labelled samples, which onnx-bdfix never gets; SGD lr 0.01, 100 epochs at 100 "
            "samples and 20 at 2,500, where BackdoorBench gives 100: two CPU cores. The "
            "onnx-bdfix known-trigger row is the first 100-sample slice; a refused repair "
            "(exit 1, nothing written) counts as the model before defense.", ""] + \
        defenses_section(cards, results) + [""]
    return "\n".join(out) + "\n"


def measured_by(cards: dict, results: dict, runs: list[str]) -> str:
    """Which code measured a section's runs: its digest (zoo_table.py's), and how many."""
    codes = Counter(results[(name, run)].get("code", "unrecorded") for name in cards
                    for run in runs if (name, run) in results)
    return "Measured by code " + ", ".join(f"`{code}` ({count} runs)"
                                           for code, count in codes.most_common()) + "."


DEFENSES = [("onnx-bdfix, trigger known", "known_0", 100),
            ("onnx-bdfix, trigger-agnostic", "agnostic_100", 100),
            ("onnx-bdfix, trigger-agnostic", "agnostic_500", 500), ("CLP", "clp_0", 0),
            ("FT", "ft_100", 100), ("FP", "fp_100", 100), ("FT-SAM", "ftsam_100", 100),
            ("FT", "ft_2500", 2500), ("FP", "fp_2500", 2500), ("FT-SAM", "ftsam_2500", 2500)]


TRAINED = {run for label, run, _ in DEFENSES if label in ("FT", "FP", "FT-SAM")}


def defenses_section(cards: dict, results: dict) -> list[str]:
    """Each defense's mean clean accuracy, attack success and time over the backdoored
    models it ran on (a failed run counts with the model's figures before defense); then
    the same over the models every defense ran on, where the means compare."""
    lines = defense_rows(cards, results)
    common = [n for n, c in cards.items() if took(c, results.get((n, "before")))
              and all((n, run) in results for _, run, _ in DEFENSES)]
    if common:
        lines += ["", f"The same, over the {len(common)} backdoored models every defense ran "
                  f"on ({', '.join(common)}):", ""]
        lines += defense_rows({n: cards[n] for n in common}, results)
    return lines + ["", "Per attack (BackdoorBench's shape), mean clean accuracy / attack "
                    "success after each defense over the backdoored models it ran on:", ""] + \
        per_attack_defenses(cards, results) + \
        ["", "Per model, clean accuracy / attack success after each defense "
                    "(– not run; a failed or refused run shows the model before defense, "
                    "marked ✗):", ""] + per_model_defenses(cards, results)


def defended(results: dict, name: str, run: str) -> str:
    """'CA / ASR' after one defense on one model."""
    done = results.get((name, run))
    if done is None:
        return "–"
    return mean_pair([after_defense(results, name, run)]) + (" ✗" if failed_run(done) else "")


def defense_columns(cards: dict, results: dict, first: str) -> tuple[list, list[str]]:
    """The defenses run on any of ``cards``, and the table's header (``first``, models or
    attack, then before, then one column each)."""
    runs = [(label, run, samples) for label, run, samples in DEFENSES
            if any((n, run) in results for n in cards)]
    return runs, [f"| {first} | before | " +
                  " | ".join(f"{label} ({samples})" for label, _, samples in runs) + " |",
                  "|---|---|---|" + "---|" * len(runs)]


def per_attack_defenses(cards: dict, results: dict) -> list[str]:
    """One row per attack, one column per defense: mean 'CA / ASR' after it."""
    runs, lines = defense_columns(cards, results, "attack | models")
    by_attack = defaultdict(list)
    for name, card in cards.items():
        if took(card, results.get((name, "before"))):
            by_attack[card["attack"]].append(name)
    for attack, names in by_attack.items():
        befores = [results[(n, "before")] for n in names]
        cells = []
        for _, run, _ in runs:
            afters = [after_defense(results, n, run) for n in names if (n, run) in results]
            cells.append(f"{mean_pair(afters)} ({len(afters)})" if afters else "–")
        lines.append(f"| {attack} | {len(names)} | {mean_pair(befores)} | " +
                     " | ".join(cells) + " |")
    return lines


def failed_run(done: dict) -> bool:
    """A defense that failed, or a repair that refused (exit 1, nothing written)."""
    return bool(done.get("exit")) or "error" in done.get("after", {})


def after_defense(results: dict, name: str, run: str) -> dict:
    """Figures after a defense; a failed or refused run leaves the model as it was."""
    done = results[(name, run)]
    return results[(name, "before")] if failed_run(done) else done["after"]


def mean_pair(figures: list[dict]) -> str:
    return f"{pct(np.mean([f[KEYS[0]] for f in figures]))} / " \
           f"{pct(np.mean([f[KEYS[1]] for f in figures]))}"


def per_model_defenses(cards: dict, results: dict) -> list[str]:
    """One row per backdoored model whose attack took, one column per defense."""
    runs, lines = defense_columns(cards, results, "model | attack")
    for name, card in cards.items():
        before = results.get((name, "before"))
        if not took(card, before):
            continue
        lines.append(f"| {name} | {card['attack']} | {pct(before[KEYS[0]])} / "
                     f"{pct(before[KEYS[1]])} | " +
                     " | ".join(defended(results, name, run) for _, run, _ in runs) + " |")
    return lines


def defense_rows(cards: dict, results: dict) -> list[str]:
    lines = ["| defense | clean samples | models | CA before → after (mean) | "
             "ASR before → after (mean) | worst ASR after | seconds (mean) | failed |",
             "|---|---|---|---|---|---|---|---|"]
    for label, run, samples in DEFENSES:
        names = [n for n, c in cards.items()
                 if took(c, results.get((n, "before"))) and (n, run) in results]
        if not names:
            continue
        rows = [(results[(n, "before")], results[(n, run)]) for n in names]
        failed = sum(failed_run(r) for _, r in rows)
        after = [after_defense(results, n, run) for n in names]
        mean = lambda key, items: float(np.mean([i[key] for i in items]))  # noqa: E731
        before = [b for b, _ in rows]
        lines.append(f"| {label} | {samples} | {len(rows)} | "
                     f"{pct(mean(KEYS[0], before))} → {pct(mean(KEYS[0], after))} | "
                     f"{pct(mean(KEYS[1], before))} → {pct(mean(KEYS[1], after))} | "
                     f"{pct(max(a[KEYS[1]] for a in after))} | "
                     f"{np.mean([r['seconds'] for _, r in rows]):.0f} | {failed} |")
    if not any(run in TRAINED for _, run in results):
        lines += ["", "FT, FP and FT-SAM have not been run on the models built here yet "
                  "(`python benchmarks/baselines.py`: onnx2torch needs a torchvision that "
                  "imports beside the zoo's torch)."]
    return lines
