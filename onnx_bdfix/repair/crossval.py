"""Choose the edit by cross-validation: each candidate (layers x strength) is fitted on all
folds but one and scored on the held-out fold, against the original model's own answers:
residual attack success on triggered copies, and lost agreement on clean samples.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy.stats import binom

from .anchor import held_out_figures, target_offset
from .edit import edited_model
from .fit import Fit
from .layers import Layer
from .plan import Plan, RepairConfig

Strength = tuple[float, float, float, float]   # (alpha, eps, overshoot, target-key weight)


@dataclass
class CandidateResult:
    layers: tuple[str, ...]
    alpha: float                   # weight of the triggered term
    eps: float                     # ridge strength
    attack_success: float          # held-out triggered non-target samples sent to the target
    agreement: float               # held-out clean samples keeping their class
    target_agreement: float | None  # the same, over the target class's samples
    trigger_pull: float            # mean target probability of triggered non-target samples
    clean_shift: float             # mean total-variation distance from the original, clean
    target_shift: float            # the same, over the target class's samples
    trigger_shift: float = 0.0     # triggered non-target samples: distance from clean answers
    expected_drop: float = 0.0     # label-free estimate of the clean-accuracy loss (anchor.py)
    target_offset: float = 0.0     # added to the target logit by the repair step
    target_weight: float | None = None   # weight of the target class's clean keys

    @property
    def score(self) -> float:
        """Smooth held-out cost: trigger pull + trigger shift (a triggered sample must go back
        to its clean answer, not on to a third class) + clean shift + target-class shift."""
        return self.trigger_pull + self.trigger_shift + self.clean_shift + self.target_shift

    def as_dict(self) -> dict:
        return {**asdict(self), "score": self.score}


def strengths(fit: Fit, config: RepairConfig) -> list[Strength]:
    """The given values, or the grids; the target-key weight is n_classes (or the one given),
    and each of ``config.target_weight_grid`` besides when the repair step has target keys."""
    alphas = [config.alpha] if config.alpha is not None else config.alpha_grid
    epses = [config.eps] if config.eps is not None else config.eps_grid
    weights = [fit.target_weight]
    if config.target_weight is None and fit.target_stats:
        weights += [w for w in config.target_weight_grid if w != fit.target_weight]
    return [(alpha, eps, config.overshoot, weight) for weight in weights for alpha in alphas
            for eps in epses]


def cross_validate_all(plan: Plan, fit: Fit, config: RepairConfig) -> list[CandidateResult]:
    """Every plain candidate; then, only where the best of them leaves more held-out attack
    success than ``config.stronger_above``, the stronger merge edits too."""
    def run(sets, grid) -> list[CandidateResult]:
        return [result for strength in grid for names in sets
                for result in cross_validate(fit, [plan.by_name[n] for n in names], strength,
                                             config.score_without_anchor)]
    grid = strengths(fit, config)
    results = run(plan.sets, grid)
    chosen = best(results, config.max_clean_drop, fit.held_out_count)
    if plan.stronger and (chosen is None or chosen.attack_success > config.stronger_above):
        stronger = strengths(fit, replace(config, alpha=None,
                                          alpha_grid=(config.alpha or 0.1, *config.alpha_grid)))
        results += run(plan.stronger, stronger)
    return results


def cross_validate(fit: Fit, layers: list[Layer], strength: Strength,
                   score_without_anchor: bool = False) -> list[CandidateResult]:
    """Fit on all folds but one, score the held-out one on the tail after the edited
    layers; then the repair step's target-logit anchor (and, if asked, no anchor)."""
    cut = tuple(dict.fromkeys(layer.key_tensor for layer in layers))
    base = fit.held_out.tail(cut)
    if base is None or not {layer.weight for layer in layers} <= \
            {init.name for init in base.graph.initializer}:
        base = fit.proto          # layers in sequence: the tail lost the earlier ones
    rows = np.concatenate(fit.held_out.rows)
    before = fit.collected.clean_scores[rows]                       # (kept, classes)
    clean_parts, triggered_parts = [], []
    for fold in range(len(fit.bounds) - 1):
        edited = edited_model(base, layers, fit.stats(layers, fold, strength[3]), strength[:3])
        clean, triggered = fit.held_out.scores(edited, cut, fold, base is fit.proto)
        clean_parts.append(clean)
        triggered_parts.append(triggered)
    held_clean, held_triggered = np.concatenate(clean_parts), np.concatenate(triggered_parts)
    offsets = [0.0]
    if fit.anchor_layer is not None:
        offsets = [target_offset(before, held_clean, fit.target)]
        if score_without_anchor and offsets[0] > 0:
            offsets.append(0.0)   # the anchor may lift unseen triggers back: score both
    return [CandidateResult(tuple(layer.name for layer in layers), *strength[:2],
                            target_weight=strength[3], target_offset=offset,
                            **held_out_figures(before, held_clean, held_triggered,
                                               fit.target, offset))
            for offset in offsets]


def best(results: list[CandidateResult], max_clean_drop: float | None = None,
         held_out: int = 0) -> CandidateResult | None:
    """Lowest score among candidates whose held-out clean agreement is not significantly
    below 1 − ``max_clean_drop``: an exact one-sided binomial test at 2.5 % on the number of
    ``held_out`` samples that changed class (the normal approximation is poor for shares
    near 0 and a hundred samples). Ties go to the earlier candidate (later, fewer layers).
    None when no candidate keeps within the bound."""
    if max_clean_drop is None:
        kept = results
    else:
        kept = [r for r in results
                if within_bound(round((1 - r.agreement) * held_out), held_out, max_clean_drop)]
    return min(kept, key=lambda result: round(result.score, 6)) if kept else None


def within_bound(changed: int, samples: int, max_share: float, level: float = 0.025) -> bool:
    """False when ``changed`` of ``samples`` is significantly more than ``max_share``:
    P(X >= changed) <= ``level`` for X ~ Binomial(samples, max_share)."""
    if changed <= 0 or max_share >= 1:
        return True
    if max_share <= 0:
        return False
    return float(binom.sf(changed - 1, samples, max_share)) > level
