"""Choose the edit by cross-validation: each candidate (layers x strength) is fitted on all
folds but one and scored on the held-out fold, against the original model's own answers:
residual attack success on triggered copies, and the clean accuracy it would cost.

Clean cost is a bound, not a term of the score (:func:`choose`): an edit whose held-out clean
cost exceeds ``max_clean_drop`` is never chosen, whatever it removes.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np

from ..errors import InternalError, RepairShortfall
from .anchor import OFFSET_RULES, held_out_figures, slack_offset
from .edit import edited_model
from .fit import Fit
from .layers import Layer
from .plan import Plan, RepairConfig

Strength = tuple[float, float, float, float]   # (alpha, eps, overshoot, target-key weight)
TARGET_EROSION = 0.02   # share of the target class's median logit margin an edit may take


@dataclass(frozen=True)
class Step:
    """An edit made before the candidate's own, whose model the candidate's keys were
    collected through (:mod:`.sequential`)."""
    layers: tuple[str, ...]
    strength: Strength


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
    target_erosion: float = 0.0    # target-class samples' median logit margin lost, a share
    expected_drop: float = 0.0     # label-free estimate of the clean-accuracy loss (anchor.py)
    labelled_drop: float | None = None   # held-out clean-accuracy loss, where labels are given
    target_offset: float = 0.0     # added to the target logit by the repair step
    target_weight: float | None = None   # weight of the target class's clean keys
    target_slack: float | None = None    # this edit's slack reading of the offset (anchor.py)
    first: Step | None = None      # a sequential edit's first step (this one is its second)

    @property
    def all_layers(self) -> tuple[str, ...]:
        """Every layer the edit changes, the first step's first."""
        return (self.first.layers if self.first else ()) + self.layers

    @property
    def clean_cost(self) -> float:
        """Held-out loss of clean accuracy, estimated without labels (``expected_drop``:
        each changed answer costs what the original model believed it was right, less
        what it believed the new answer was). On a hundred samples this varies far less
        than the labelled loss (``labelled_drop``, reported where labels are given), where
        one sample is a whole point and a gain elsewhere hides a loss."""
        return self.expected_drop

    @property
    def score(self) -> float:
        """Smooth held-out cost: trigger pull + trigger shift (a triggered sample must go back
        to its clean answer, not on to a third class) + clean shift + target-class shift."""
        return self.trigger_pull + self.trigger_shift + self.clean_shift + self.target_shift

    def as_dict(self) -> dict:
        return {**asdict(self), "score": self.score, "clean_cost": self.clean_cost}


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
    """Candidates in order of cost, each stage tried only when none of the earlier ones
    within the clean-cost bound brings held-out attack success to ``config.max_asr``:
    the plain layer sets at the given strength (every strength of ``alpha_grid`` at once
    when none is given: the known-trigger default), then, with one given, the same sets
    unlearning harder (the rest of ``alpha_grid``). The stronger edits come after, from a
    second collect pass (:func:`cross_validate_stronger`)."""
    grid = strengths(fit, config)
    harder = [strength for strength in every_strength(fit, config) if strength not in grid]
    results = _run(plan, fit, config, plan.sets, grid)
    if config.stronger and harder and not meeting(results, config):
        results += _run(plan, fit, config, plan.sets, harder)
    return results


def cross_validate_stronger(plan: Plan, fit: Fit, config: RepairConfig) -> list[CandidateResult]:
    """The stronger edits (merge edits, normalization scales) over the whole strength grid
    (``fit`` must hold their statistics)."""
    return _run(plan, fit, config, plan.stronger, every_strength(fit, config))


def cross_validate_harder(plan: Plan, fit: Fit, config: RepairConfig) -> list[CandidateResult]:
    """The layer sets collected so far (the stronger ones too after the second pass),
    unlearning harder than the strength grid: ``config.harder_alphas``. The triggered term
    then outweighs the clean one, and the edit gives up more of what the layer computes on
    clean samples to silence the trigger; the clean-cost bound still decides."""
    sets = [*plan.sets, *(plan.stronger if plan.with_stronger else ())]
    harder = strengths(fit, replace(config, alpha=None, alpha_grid=config.harder_alphas))
    return _run(plan, fit, config, sets, harder)


def every_strength(fit: Fit, config: RepairConfig) -> list[Strength]:
    return strengths(fit, replace(config, alpha=None, alpha_grid=tuple(dict.fromkeys(
        (config.alpha or 0.1, *config.alpha_grid)))))


def _run(plan: Plan, fit: Fit, config: RepairConfig, sets, grid) -> list[CandidateResult]:
    return [result for strength in grid for names in sets
            for result in cross_validate(fit, [plan.by_name[n] for n in names], strength,
                                         config)]


def cross_validate(fit: Fit, layers: list[Layer], strength: Strength,
                   config: RepairConfig) -> list[CandidateResult]:
    """Fit on all folds but one, score the held-out one on the tail after the edited
    layers; then the repair step's target-logit anchor, by each reading of its offset (and,
    if asked, no anchor): one candidate each."""
    parts = [held_out_scores(fit, layers, strength, fold)
             for fold in range(len(fit.bounds) - 1)]
    return scored(fit, layers, strength, parts, config)


def held_out_scores(fit: Fit, layers: list[Layer], strength: Strength, fold: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(clean, triggered) scores of ``fold``'s kept rows under the edit fitted on the other
    folds."""
    cut = tuple(dict.fromkeys(layer.key_tensor for layer in layers))
    base = fit.held_out.tail(cut)
    if base is None or not {layer.weight for layer in layers} <= \
            {init.name for init in base.graph.initializer}:
        base = fit.proto          # layers in sequence: the tail lost the earlier ones
    edited = edited_model(base, layers, fit.stats(layers, fold, strength[3]), strength[:3])
    return fit.held_out.scores(edited, cut, fold, base is fit.proto)


def scored(fit: Fit, layers: list[Layer], strength: Strength, parts: list[tuple],
           config: RepairConfig, first: Step | None = None) -> list[CandidateResult]:
    """Candidates from every fold's held-out (clean, triggered) scores (``parts``, in fold
    order), one per reading of the anchor's offset (the slack reading too, with
    ``config.target_slack``); ``first``: the edit made before these layers were collected
    (:mod:`.sequential`)."""
    rows = np.concatenate(fit.held_out.rows)
    before = fit.collected.clean_scores[rows]                       # (kept, classes)
    labels = None if fit.labels is None else fit.labels[rows]       # (kept,)
    held_clean = np.concatenate([clean for clean, _ in parts])
    held_triggered = np.concatenate([triggered for _, triggered in parts])
    sizes = [len(clean) for clean, _ in parts]
    offsets, slack = [(0.0, 0.0)], None
    if fit.anchor_layer is not None:
        readings = [anchor_offsets(before, held_clean, fit.target, sizes, rule)
                    for rule in OFFSET_RULES]
        if config.target_slack > 0:
            share = lambda *arrays: slack_offset(*arrays, share=config.target_slack)  # noqa
            readings.append(anchor_offsets(before, held_clean, fit.target, sizes, share,
                                           held_triggered))
            slack = readings[-1][0]
        offsets = distinct(readings)
        if config.score_without_anchor and all(written > 0 for written, _ in offsets):
            offsets.append((0.0, 0.0))   # the anchor may lift unseen triggers back: score both
    return [CandidateResult(tuple(layer.name for layer in layers), *strength[:2],
                            target_weight=strength[3], target_offset=offset, first=first,
                            target_slack=slack,
                            **held_out_figures(before, held_clean, held_triggered,
                                               fit.target, per_row, labels))
            for offset, per_row in offsets]


def anchor_offsets(before: np.ndarray, after: np.ndarray, target: int, sizes: list[int],
                   rule=OFFSET_RULES[0], triggered: np.ndarray | None = None
                   ) -> tuple[float, np.ndarray]:
    """The target-logit offset to write by ``rule`` (read off every fold's held-out answers),
    and the offsets to score each held-out row with (N,): read off the other folds only, so
    the offset is not chosen on the answers it is scored on. With ``triggered`` (the
    held-out triggered scores, row for row), the rule reads them too (:func:`slack_offset`)."""
    arrays = (after,) if triggered is None else (after, triggered)
    read = lambda rows: rule(before[rows], *(a[rows] for a in arrays), target)  # noqa: E731
    bounds = np.cumsum([0, *sizes])
    per_row = np.zeros(len(after))
    for start, stop in zip(bounds[:-1], bounds[1:]):
        others = np.r_[0:start, stop:len(after)]
        per_row[start:stop] = read(others) if len(others) else 0.0
    return read(np.arange(len(after))), per_row


def distinct(offsets: list[tuple[float, np.ndarray]]) -> list[tuple[float, np.ndarray]]:
    """The readings that differ (one when both rules agree)."""
    kept = []
    for written, per_row in offsets:
        if not any(written == w and np.array_equal(per_row, p) for w, p in kept):
            kept.append((written, per_row))
    return kept


def bounded_cost(result: CandidateResult, config: RepairConfig) -> float:
    """The clean cost the bound holds: the estimated loss of clean accuracy, or, with
    ``config.bound_changed_answers``, the share of held-out clean answers the edit changes
    (no edit can lose more accuracy than that; a bound for hardening a model with no
    backdoor found, where a label-free estimate of the loss is the wrong thing to trust)."""
    return 1.0 - result.agreement if config.bound_changed_answers else result.clean_cost


def within(results: list[CandidateResult], config: RepairConfig) -> list[CandidateResult]:
    """The candidates whose held-out clean cost stays within ``config.max_clean_drop`` and
    whose target-class samples keep their margin (:func:`keeps_target`)."""
    kept = [r for r in results if keeps_target(r, config)]
    if config.max_clean_drop is None:
        return kept
    return [r for r in kept if bounded_cost(r, config) <= config.max_clean_drop + 1e-9]


def keeps_target(result: CandidateResult, config: RepairConfig) -> bool:
    """Whether the edit takes at most ``config.max_target_erosion`` of the held-out target
    class's median logit margin. The label-free clean cost misses what a hundred samples
    hold few of: on the zoo's mobilenetv2_blended_noise_1pct (4 target samples in 100), edits
    estimated at 0.4-0.7 % cost took 52-80 % of that margin and lost 10-20 points of the
    class on unseen images (and 1.8-3.4 of clean accuracy); the edits written on 13 other
    zoo models took at most 7.5 %, but one (gray_cnn_lf, slice 0) took 59 % and kept its
    class (-0.3 points): a limit on the margin refuses some edits that would have been fine,
    and says so."""
    limit = config.max_target_erosion
    return limit is None or result.target_erosion <= limit + 1e-9


def meeting(results: list[CandidateResult], config: RepairConfig) -> list[CandidateResult]:
    """The candidates within the bound that bring held-out attack success to
    ``config.max_asr`` or less."""
    return [r for r in within(results, config) if r.attack_success <= config.max_asr + 1e-9]


def choose(results: list[CandidateResult], config: RepairConfig) -> CandidateResult | None:
    """The edit to write. Among the candidates within the clean-cost bound that meet
    ``max_asr``, the first by :func:`ranking` (by default the lowest smooth score; ties to
    the earlier, fewer layers), written with the reading of its offset that keeps the
    target class's margin if one of them meets it too (:func:`margin_kept`). When none
    meets it but one within ``config.fallback_clean_drop`` does: the same choice within
    that wider bound (:func:`fallback`). When none meets it: with ``config.must_meet_asr``
    (a known trigger) :class:`RepairShortfall`; else the first by :func:`ranking` within the
    bound (hardening), or None when none is within it."""
    ranked = meeting(results, config)
    wider = fallback(config)
    if not ranked and wider is not None and meeting(results, wider):
        return choose(results, wider)
    if not ranked and config.must_meet_asr:
        raise RepairShortfall(shortfall(results, config))
    ranked = ranked or within(results, config)
    if not ranked:
        return None
    best = min(ranked, key=ranking(config)[1])
    return target_kept(margin_kept(best, ranked) or best, ranked)


def fallback(config: RepairConfig) -> RepairConfig | None:
    """The settings with the wider clean-cost bound in place of ``max_clean_drop``, or None
    when there is none wider. The trigger-agnostic mode sets it for a suspected class: the
    reconstructions stand for a backdoor the scan found, and the issue this mode answers
    accepts up to 2 points of clean accuracy to remove it (docs/agnostic.md, "Stop 33"),
    where a known trigger's repair is held to its bound."""
    wider, bound = config.fallback_clean_drop, config.max_clean_drop
    if wider is None or bound is None or wider <= bound:
        return None
    return replace(config, max_clean_drop=wider, fallback_clean_drop=None)


# choose_by -> (what the report calls the rule, the sort key of a candidate)
RANKINGS = {
    "score": ("lowest smooth held-out score (trigger pull and shift + clean and "
              "target-class shift)", lambda result: round(result.score, 6)),
    "pull": ("least held-out trigger pull (then lowest smooth score)",
             lambda result: (round(result.trigger_pull, 3), round(result.score, 6))),
}


def ranking(config: RepairConfig) -> tuple[str, Callable[[CandidateResult], object]]:
    """The order :func:`choose` takes its pick by, and its name for the report.
    ``choose_by="score"``: the lowest smooth score (the trigger known: its ~90 held-out
    triggered samples are the real trigger's, and the score balances them against the clean
    shift). ``"pull"``: the least held-out trigger pull (to 0.001, then the score): the edit
    that removes the most of the triggered samples' pull toward the target within the bound,
    for reconstructed triggers, which an edit must remove with room to spare to carry over
    to the real one. The pull does not see triggered samples sent on to a third class (the
    zoo's vgg11_sig_norm, agnostic: 27.5 % into class 6, where the score's pick left 1.9 %);
    ranking by pull plus that shift kept it and lost vgg11_blended_noise (docs/agnostic.md,
    "Stop 25")."""
    if config.choose_by not in RANKINGS:
        raise InternalError(f"choose_by must be one of {sorted(RANKINGS)}, "
                            f"not {config.choose_by!r}")
    return RANKINGS[config.choose_by]


def same_edit(result: CandidateResult) -> tuple:
    """What two readings of one edit share (all but the target-logit offset)."""
    return result.layers, result.alpha, result.eps, result.target_weight, result.first


def margin_kept(best: CandidateResult, ranked: list[CandidateResult]
                ) -> CandidateResult | None:
    """The lowest-scoring reading of ``best``'s edit (same layers and strength, another
    target-logit offset) among ``ranked`` whose held-out target-class samples keep their
    median logit margin (lose at most TARGET_EROSION of it); None when ``best`` loses
    more and no such reading exists. The few target samples a hundred clean ones hold stay
    at probability ≈ 1 while the margin shrinks, and the class's borderline samples, which
    they rarely include, leave it (anchor.py). Only the offset changes: the edit chosen by
    the score stays (choosing edits by their margin instead picked weaker ones: on
    vgg11_lf, 5.3 % attack success on unseen images where the score's own pick left 1.0)."""
    if best.target_erosion <= TARGET_EROSION + 1e-12:
        return best
    kept = [r for r in ranked if same_edit(r) == same_edit(best)
            and r.target_erosion <= TARGET_EROSION + 1e-12]
    return min(kept, key=lambda result: round(result.score, 6)) if kept else None


def target_kept(chosen: CandidateResult, ranked: list[CandidateResult]) -> CandidateResult:
    """The reading of ``chosen``'s edit with the largest offset up to its slack reading, among
    ``ranked`` (so it meets the goal within the bound too); ``chosen`` when its own offset is
    as large. What a hundred clean samples cannot show of the target class's loss, the
    triggered samples' room allows back (anchor.py)."""
    if chosen.target_slack is None:
        return chosen
    larger = [r for r in ranked if same_edit(r) == same_edit(chosen)
              and chosen.target_offset < r.target_offset <= chosen.target_slack + 1e-12]
    return max(larger, key=lambda result: result.target_offset) if larger else chosen


def shortfall(results: list[CandidateResult], config: RepairConfig) -> str:
    """One line: what the best edit within the bound would leave, and what bound the
    cheapest edit that meets ``max_asr`` would need."""
    bound, goal = config.max_clean_drop, config.max_asr
    kept = within(results, config)
    cost = lambda result: bounded_cost(result, config)  # noqa: E731
    limit = "with no clean-cost bound" if bound is None else \
        f"within a clean-accuracy cost of {bound:.1%}"
    if config.max_target_erosion is not None:
        limit += f", taking at most {config.max_target_erosion:.0%} of the target class's " \
                 "logit margin,"
    line = f"no edit {limit} brings held-out attack success to {goal:.1%} or less"
    if kept:
        top = min(kept, key=lambda r: (r.attack_success, cost(r)))
        line += f"; the best within it would leave {top.attack_success:.1%} (clean cost " \
                f"{cost(top):.1%})"
    reaching = [r for r in results if r.attack_success <= goal + 1e-9]
    enough = [r for r in reaching if keeps_target(r, config)]
    if reaching and not enough:
        least = min(r.target_erosion for r in reaching)
        line += f"; every edit that meets it takes more of the target class's margin (the " \
                f"least {least:.0%}: --max-target-erosion {np.ceil(least * 100) / 100:.2f} " \
                "would allow it)"
    elif enough:
        cheapest = min(enough, key=cost)
        needed = np.ceil(cost(cheapest) * 1000) / 1000
        line += f"; one that meets it costs {cost(cheapest):.1%} of clean accuracy " \
                f"(--max-clean-drop {needed:.3f} would allow it)"
    else:
        lowest = min(results, key=lambda r: (r.attack_success, cost(r)))
        line += f"; no edit meets it at any cost (the lowest leaves " \
                f"{lowest.attack_success:.1%} at a clean cost of {cost(lowest):.1%})"
    return line + "; nothing was written"
