"""Trigger-agnostic repair: reconstruct the trigger with ONNX Runtime, then repair as if known.

The scan (:mod:`.scan`) finds, per class, the strongest small triggers. The class it names
(or the ``--target-class`` hint) goes through the known-trigger pipeline unchanged, with its
triggers taken in turn, one per cross-validation fold: the strongest, then the strongest of
each other family, then runners-up, all as strong as the alarm level (:meth:`Found.strong`),
four at most; where the class's best is a blend, its whole-image blends are refined toward
the backdoor; where it is a patch, the folds left free take smaller patches found inside it
and refined, first (:mod:`.shrink`). A wave, colour field, blend or warp is held with a copy
1.5 times as strong (:data:`STRONGER`), which the fold's samples take in turn: the scan
finds the smallest trigger that flips the probe, the planted one is usually stronger, and an
edit that removes only the smallest can leave the real one standing (the zoo's
vgg11_sig_norm: the menu's wave at 0.08 of the range, the real SIG at 0.1, and 27.5 %
attack success after the repair; with the stronger copies 0.4 %: docs/agnostic.md, "Stop
30"); a patch is the same at any strength and is held once. Each fold's held-out samples
carry a reconstruction the other folds never saw, so the layer and strength are chosen for
how the edit carries over to new instances of the trigger, not to the ones it was fitted on.
This mode's own choices go to the pipeline as data: a second target-key weight (1) and the
edit scored with and without the logit anchor are cross-validated too (and no slack reading
of the anchor: a reconstruction does not measure how far the real trigger is from the
target); with a class suspected, every
unlearning strength is scored at once, and the pick is the edit that leaves the
reconstructions the least pull toward the target (``choose_by="pull"``), not the lowest
smooth score: an edit that only just removes a reconstruction leaves much of the real
trigger (the zoo's vgg11_blended_noise: 9.9 % attack success by the score's pick, 0.9 % by
the pull's, at the same clean cost: docs/agnostic.md, "Stop 25"; a model called clean is
hardened as gently as before, :func:`choice`); the harder unlearning stage is off (not
measured in this mode); and an edit must keep its held-out clean cost within
``max_clean_drop`` and take at most ``max_target_erosion`` of the suspected class's median
logit margin, as with the trigger known (with a class suspected, when no edit within that
bound removes the held-out reconstructions, one within ``fallback_clean_drop``, 2 % by
default, that does: :func:`choice`), else the weights are left as they were (a model
with no backdoor to remove is hardened only as far as that bound allows:
``must_meet_asr=False``). Without the margin limit the edit written on the zoo's
mobilenetv2_blended_noise_1pct lost 15.5 points of its target class on unseen images
(keras_vgg_badnets 6.6); with it, 4.0 and 0 (+0.3), and more of the attack stays
(docs/agnostic.md, "Stop 24"). On a model the scan calls clean (and no class hinted), the
bound holds the share of held-out clean answers the edit changes, not the label-free
estimate of the accuracy it loses: a natural easy class's pseudo-trigger is removed only by
edits that change many uncertain answers, which the estimate counts cheap (on the zoo's
clean Keras and JAX models it estimated 0.8–1.0 % and they lost 1.6 points).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..data import Dataset, Trigger, TriggerSet
from ..metrics import check_target
from ..model import as_loaded
from ..model.runtime import Progress
from ..repair import RepairConfig, RepairReport, repair_model
from .geometry import stronger
from .refine import refine_blend
from .scan import PROBE, ScanResult, scan_model
from .search import Found
from .shrink import shrunk_patches

STRONG = 0.9   # runners-up and refined blends must send this share of the probe (or the best's)
STRONGER = 1.5  # each fold also holds its reconstruction this many times as strong
FALLBACK_CLEAN_DROP = 0.02   # a suspected class: the wider clean-cost bound (choice())


def agnostic_repair(model, clean: Dataset, out_path, config: RepairConfig,
                    progress: Progress | None = None) -> tuple[RepairReport, ScanResult]:
    """Scan ``model`` (a path or a loaded model), then repair it against the reconstructions
    of the suspected (or hinted) class."""
    loaded = as_loaded(model)
    result = scan_model(loaded, clean, config.output, config.device, evidence=False)
    hint = config.target_class
    if hint is not None:
        check_target(hint, len(result.found), "--target-class")
    found, triggers = reconstructions(result, clean, hint, config.folds)
    result.runner = None                 # the repair opens its own sessions
    report = repair_against(loaded, clean, triggers, out_path, config, found.target,
                            hint is not None or result.suspicious, progress)
    return report, result


def reconstructions(result: ScanResult, clean: Dataset, hint: int | None, folds: int
                    ) -> tuple[Found, list[Trigger | TriggerSet]]:
    """The suspected (or hinted) class's best reconstruction and the triggers the repair
    holds out, one per fold (module docstring; a fold's reconstruction with its stronger copy
    is a TriggerSet), made on the scan's own session."""
    found = result.best(hint)
    level = min(found.flip_rate, STRONG)
    triggers = found.strong(level, most=folds)  # one reconstruction per fold
    if found.params["family"] in ("blend", "noise blend"):
        triggers = _refined(result, clean, found, triggers, level)
    triggers = _shrunk(result, clean, found, level, folds - len(triggers)) + triggers
    return found, [_with_stronger(trigger) for trigger in triggers]


def repair_against(loaded, clean: Dataset, triggers: list[Trigger | TriggerSet], out_path,
                   config: RepairConfig, target: int, suspected: bool,
                   progress: Progress | None = None) -> RepairReport:
    """The known-trigger pipeline against ``triggers``, with this mode's settings."""
    single = len(triggers) == 1 and isinstance(triggers[0], Trigger)
    trigger = triggers[0] if single else TriggerSet(triggers)
    settings = replace(config, target_class=target, mode="agnostic",
                       target_weight_grid=(1.0,), harder_alphas=(),
                       score_without_anchor=True, target_slack=0.0, must_meet_asr=False,
                       shifted_copies=0, **choice(suspected, config.fallback_clean_drop))
    return repair_model(loaded, clean, trigger, out_path, settings, progress,
                        {"trigger": trigger.source, "trigger_arrays_sha256": trigger.sha256})


def choice(suspected: bool, fallback: float | None = None) -> dict:
    """How the edit is chosen. A suspected (or hinted) class: every unlearning strength
    scored at once, and the edit that leaves the reconstructions the least pull toward it
    within the bound; when no edit within it removes them on held-out samples, one within
    the wider ``fallback`` bound that does (default :data:`FALLBACK_CLEAN_DROP`; the zoo's
    keras_vgg_badnets: 17.5 → 0.2 % attack success at 1.4 points of clean accuracy,
    docs/agnostic.md, "Stop 33"). A model the scan calls clean is hardened gently: the
    weakest strength first (the harder ones only when it falls short), the lowest smooth
    score, and the bound on changed answers, with no wider one (module docstring)."""
    if suspected:
        return {"alpha": None, "choose_by": "pull", "bound_changed_answers": False,
                "fallback_clean_drop": FALLBACK_CLEAN_DROP if fallback is None else fallback}
    return {"alpha": 0.1, "alpha_grid": (0.3, 1.0), "choose_by": "score",
            "bound_changed_answers": True, "fallback_clean_drop": None}


def _refined(scanned: ScanResult, clean: Dataset, found: Found, triggers: list[Trigger],
             level: float) -> list[Trigger]:
    """Blends with their patterns refined toward the backdoor (:mod:`.refine`), on the
    scan's own session."""
    probe = clean.head(PROBE).x
    return [refine_blend(scanned.runner, scanned.output, probe, trigger, found.target, level,
                         seed, scanned.span)
            if _whole_image_blend(trigger) else trigger
            for seed, trigger in enumerate(triggers)]


def _shrunk(scanned: ScanResult, clean: Dataset, found: Found, level: float, most: int
            ) -> list[Trigger]:
    """Smaller patches inside a found patch, refined (:mod:`.shrink`), for the folds the
    scan's reconstructions leave free; on the scan's own session."""
    return shrunk_patches(scanned.runner, scanned.output, clean.head(PROBE).x, found, level,
                          scanned.span, most)


def _with_stronger(trigger: Trigger) -> Trigger | TriggerSet:
    """``trigger`` and a copy :data:`STRONGER` times as strong, taken in turn by the samples
    of its fold; a patch (the same at any strength) alone."""
    strong = stronger(trigger, STRONGER)
    if all(np.array_equal(strong.arrays[key], trigger.arrays[key]) for key in trigger.arrays):
        return trigger
    return TriggerSet([trigger, strong])


def _whole_image_blend(trigger: Trigger) -> bool:
    mask = trigger.arrays.get("mask")
    return trigger.kind == "blend" and mask is not None and float(np.min(mask)) > 0 \
        and float(np.ptp(mask)) == 0
