"""Sequential edits: edit one layer set, collect again through the edited model, then edit
another, so that the second edit's keys are what the deployed graph computes after the
first (an edit solved on the original model's keys would answer a network that no longer
exists).

Tried only when the plain and merge edits fall short. The first step is the candidate within
the clean-cost bound that leaves the least held-out attack success; the second, every other
candidate layer set over the whole strength grid. Held out as the rest: for fold f, the
first edit is fitted without fold f, the samples are collected again through it, and the
second edit is fitted without fold f and scored on fold f's kept rows. A repair that
chooses a sequential edit collects once more, through the first edit fitted on every fold.
"""
from __future__ import annotations

import logging
from dataclasses import replace

from ..model.runtime import Progress
from .crossval import (
    CandidateResult,
    Step,
    bounded_cost,
    every_strength,
    held_out_scores,
    scored,
    within,
)
from .edit import edited_model
from .fit import Fit, Samples, collect_fit
from .plan import Plan, RepairConfig

log = logging.getLogger(__name__)


def first_step(results: list[CandidateResult], config: RepairConfig) -> Step | None:
    """The single-step edit within the bound that leaves the least held-out attack success
    (None when none is within it)."""
    kept = [r for r in within(results, config) if r.first is None]
    if not kept:
        return None
    best = min(kept, key=lambda r: (r.attack_success, bounded_cost(r, config)))
    return Step(best.layers, (best.alpha, best.eps, config.overshoot, best.target_weight))


def second_sets(plan: Plan, first: Step) -> list[tuple[str, ...]]:
    """The candidate layer sets a second step may edit, plain or stronger: any that shares
    no layer with the first (a normalization's scale after the linear layer before it is
    the two edited together, each on keys the other leaves)."""
    return [names for names in (*plan.sets, *plan.stronger)
            if not set(names) & set(first.layers)]


def after_first(plan: Plan, fit: Fit, first: Step, leave_out: int | None) -> Plan:
    """The plan on the model with ``first`` applied (fitted without fold ``leave_out``;
    None: on every fold), its candidates the second step's."""
    layers = [plan.by_name[name] for name in first.layers]
    proto = edited_model(fit.proto, layers, fit.stats(layers, leave_out, first.strength[3]),
                         first.strength[:3])
    return replace(plan, loaded=replace(plan.loaded, proto=proto),
                   sets=second_sets(plan, first), stronger=(), with_stronger=False)


def collect_after(plan: Plan, fit: Fit, first: Step, leave_out: int | None,
                  samples: Samples, config: RepairConfig, progress: Progress | None
                  ) -> tuple[Plan, Fit]:
    """The plan and the fit collected through the model edited by ``first``."""
    edited = after_first(plan, fit, first, leave_out)
    declared = (fit.target, fit.target_source)
    return edited, collect_fit(edited, samples, config, declared, progress, fit.labels)


def cross_validate_sequential(plan: Plan, fit: Fit, results: list[CandidateResult],
                              samples: Samples, config: RepairConfig,
                              progress: Progress | None = None) -> list[CandidateResult]:
    """Sequential candidates after the best single step of ``results``, held out by fold."""
    first = first_step(results, config)
    if first is None or not second_sets(plan, first):
        return []
    log.info("sequential edits after %s", ", ".join(first.layers))
    folds = len(fit.bounds) - 1
    per_fold = [collect_after(plan, fit, first, fold, samples, config, progress)[1]
                for fold in range(folds)]
    grid = every_strength(fit, config)
    found = []
    for names in second_sets(plan, first):
        layers = [plan.by_name[name] for name in names]
        for strength in grid:
            parts = [held_out_scores(per_fold[fold], layers, strength, fold)
                     for fold in range(folds)]
            found += scored(fit, layers, strength, parts, config, first)
    return found
