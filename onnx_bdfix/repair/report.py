"""What a repair reports: the layers and why, every candidate it cross-validated, the repair
step, parity and quality before and after; and the provenance written into the model."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .. import __version__
from ..data import Dataset
from ..metrics import parity, quality
from .crossval import CandidateResult, bounded_cost, fallback, ranking
from .evidence import layer_evidence
from .fit import Fit
from .plan import Plan, RepairConfig


@dataclass
class RepairReport:
    model: str
    output_model: str | None          # None: refused, nothing written (RepairShortfall)
    score_output: str
    provider: str | None
    target_class: int
    target_class_source: str
    layers: list[dict]
    chosen: list[str]
    choice_reason: str
    candidates: list[dict]
    chosen_figures: dict
    repair_step: dict
    shifted_copies: int               # shifted copies of each clean sample fitted on too
    parity: dict | None
    before: dict
    after: dict | None
    timings: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Outcome:
    """What the repair chose and what the repaired model answered."""
    results: list[CandidateResult]
    chosen: CandidateResult | None
    provider: str
    after: tuple[np.ndarray, np.ndarray]    # (checked, classes) clean and triggered scores
    labels: np.ndarray                      # (N,) true labels, or the original's answers
    rows: np.ndarray                        # (checked,) the fold-ordered rows ``after`` is of


def build_report(plan: Plan, fit: Fit, outcome: Outcome, config: RepairConfig, out_path,
                 timings: dict) -> RepairReport:
    chosen, collected = outcome.chosen, fit.collected
    given = plan.given[outcome.rows]             # of the rows the repaired model answered,
    rows = outcome.rows[given]                   # the samples as given (not shifted copies)
    labels = outcome.labels[rows]
    after = tuple(scores[given] for scores in outcome.after)
    return RepairReport(
        **common(plan, fit, outcome.results, chosen, config, timings),
        output_model=str(out_path), provider=outcome.provider,
        choice_reason=reason(chosen, outcome.results, config),
        parity=parity(collected.clean_scores[outcome.rows], outcome.after[0]).as_dict(),
        before=quality(collected.clean_scores[rows], collected.triggered_scores[rows],
                       labels, fit.target).as_dict(),
        after=quality(*after, labels, fit.target).as_dict())


def refused_report(plan: Plan, fit: Fit, results: list[CandidateResult], config: RepairConfig,
                   labels: np.ndarray, why: str, timings: dict) -> RepairReport:
    """The report of a repair that wrote nothing (no edit within the bound met the goal):
    every candidate it cross-validated and the original model's figures on all the clean
    samples (``labels``: (N,) in fold order); no output model, provider, parity or after."""
    collected, given = fit.collected, plan.given
    return RepairReport(
        **common(plan, fit, results, None, config, timings),
        output_model=None, provider=None, choice_reason=f"not repaired: {why}", parity=None,
        before=quality(collected.clean_scores[given], collected.triggered_scores[given],
                       labels[given], fit.target).as_dict(),
        after=None)


def common(plan: Plan, fit: Fit, results: list[CandidateResult],
           chosen: CandidateResult | None, config: RepairConfig, timings: dict) -> dict:
    """The fields a written and a refused repair report alike."""
    evidence = layer_evidence(plan.loaded.index, plan.layers, plan.involved,
                              fit.collected.stats, plan.output,
                              chosen.all_layers if chosen else ())
    return {"model": str(plan.loaded.path), "score_output": plan.output,
            "target_class": fit.target, "target_class_source": fit.target_source,
            "layers": [e.as_dict() for e in evidence],
            "chosen": list(chosen.all_layers) if chosen else [],
            "chosen_figures": chosen.as_dict() if chosen else {},
            "repair_step": repair_step(plan, fit, chosen, config),
            "shifted_copies": plan.copies,
            "candidates": [r.as_dict() for r in results],
            "timings": timings, "config": asdict(config)}


def repair_step(plan: Plan, fit: Fit, chosen: CandidateResult | None,
                config: RepairConfig) -> dict:
    return {"enabled": config.repair_step,
            "target_key_weight": chosen.target_weight if chosen else fit.target_weight,
            "target_samples": int((fit.reference[plan.given] == fit.target).sum()),
            "anchor_layer": fit.anchor_layer.name if fit.anchor_layer else None,
            "target_logit_offset": chosen.target_offset if chosen else 0.0}


def reason(chosen: CandidateResult | None, results: list[CandidateResult],
           config: RepairConfig) -> str:
    measure = "share of changed clean answers" if config.bound_changed_answers else \
        "clean cost"
    if chosen is None:
        return (f"no candidate edit kept its held-out {measure} within "
                f"{config.max_clean_drop:.1%}: the weights are left unchanged")
    named = "" if config.layers in ("auto", ["auto"]) else "layers named with --layers; "
    goal = "reaching" if chosen.attack_success <= config.max_asr + 1e-9 else "short of"
    if chosen.first is not None:
        named += (f"a sequential edit: {', '.join(chosen.first.layers)} first (alpha="
                  f"{chosen.first.strength[0]:g}), then, collected again through it, "
                  f"{', '.join(chosen.layers)}; ")
    bound = "no bound" if config.max_clean_drop is None else f"{config.max_clean_drop:.1%}"
    if fallback(config) is not None and bounded_cost(chosen, config) > config.max_clean_drop + 1e-9:
        bound = (f"the fallback bound, {config.fallback_clean_drop:.1%}: no edit within "
                 f"{bound} reached the goal")
    return (f"{named}{ranking(config)[0]} of {len(results)} candidates (layers x strength) within "
            f"the bound on its {measure} ({bound}) and {goal} {config.max_asr:.1%} attack success: "
            f"alpha={chosen.alpha:g}, eps={chosen.eps:g}, {chosen.attack_success:.1%} attack "
            f"success, {chosen.clean_cost:.1%} clean cost, {chosen.agreement:.1%} clean "
            f"agreement")


def provenance(plan: Plan, clean: Dataset, trigger_info: dict,
               chosen: CandidateResult | None, target: int, config: RepairConfig) -> dict:
    """How the file was made: tool, inputs' digests, the trigger, the edit, every parameter."""
    edit = {"layers": list(chosen.layers), "alpha": chosen.alpha, "eps": chosen.eps,
            "target_logit_offset": chosen.target_offset} if chosen else {"layers": []}
    if chosen is not None and chosen.first is not None:     # edited, collected again, edited
        edit["first_step"] = {"layers": list(chosen.first.layers),
                              "alpha": chosen.first.strength[0],
                              "eps": chosen.first.strength[1]}
    return {"tool": "onnx-bdfix", "version": __version__, "mode": config.mode,
            "input_sha256": plan.loaded.sha256, "clean_sha256": clean.sha256,
            "clean_samples": len(clean), "shifted_copies": plan.copies,
            "target_class": target, **trigger_info, **edit,
            "parameters": asdict(config)}
