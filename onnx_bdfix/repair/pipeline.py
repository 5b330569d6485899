"""Known-trigger repair, end to end, as one plain function of named stages:

    plan → shifted copies, order samples → collect → cross-validate → (only when the plain
    edits fall short: collect again with the stronger edits, merge edits and normalization
    scales, and cross-validate them; when those fall short too: every edit so far
    unlearning harder; then sequential edits, collected again through the best one) →
    choose → edit → verify and save → report

``choose`` holds the clean cost as a bound: when no edit within ``max_clean_drop`` reaches
``max_asr`` on held-out samples, a known-trigger repair raises
:class:`~onnx_bdfix.errors.RepairShortfall` and writes nothing (the error carries the
refused repair's report).

Every stage is a function of what the earlier ones returned; nothing is kept on objects
between runs. The trigger-agnostic mode (:mod:`onnx_bdfix.agnostic.repair`) calls this same
function with reconstructed triggers and its own choices in :class:`RepairConfig`.
"""
from __future__ import annotations

import functools
import time
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import onnx

from ..data import Dataset
from ..data.shifts import copy_count, with_copies
from ..errors import RepairShortfall
from ..metrics import check_labels, declared_target
from ..model import as_loaded, save_model
from ..model.large import copy_proto
from ..model.runtime import Progress
from .crossval import (
    CandidateResult,
    choose,
    cross_validate_all,
    cross_validate_harder,
    cross_validate_stronger,
    meeting,
)
from .edit import Anchor, edited_model
from .fit import Fit, Samples, collect_fit, order_samples
from .patch import set_provenance
from .plan import Plan, RepairConfig, make_plan
from .report import Outcome, RepairReport, build_report, provenance, refused_report
from .sequential import collect_after, cross_validate_sequential
from .verify import full_check, repaired_scores


class Clock:
    """Wall time per stage, for the report's timing fields."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        yield
        spent = time.perf_counter() - start          # a stage run twice counts both times
        self.seconds[stage] = round(self.seconds.get(stage, 0.0) + spent, 3)


def repair_model(model, clean: Dataset, triggered, out_path,
                 config: RepairConfig | None = None, progress: Progress | None = None,
                 trigger_info: dict | None = None) -> RepairReport:
    """Repair ``model`` (a path or a loaded model) and write the verified result to
    ``out_path``. ``triggered``: the trigger, a set of triggers, or the triggered copies of
    ``clean``'s samples in the same order. Samples are read a batch at a time; nothing holds
    all of them as floats. ``trigger_info`` describes the trigger in the provenance
    (default: its digest)."""
    config, clock = config or RepairConfig(), Clock()
    with clock("load"):
        copies = copy_count(len(clean), clean.raw.shape[1:], config.shifted_copies)
        plan = make_plan(as_loaded(model), clean, out_path, config, copies)
        fitted = with_copies(clean, copies)        # the samples and their shifted copies
        samples = order_samples(plan, fitted, with_copies(triggered, copies)
                                if isinstance(triggered, Dataset) else triggered)
    labels = None if fitted.y is None else fitted.y[plan.order]      # (N,) fold order
    declared = declared_target(config.target_class, triggered)
    with clock("collect"):
        fit = collect_fit(plan, samples, config, declared, progress, labels)
        check_labels(clean.y, fit.collected.clean_scores.shape[1], f"labels of {clean.source}")
    with clock("choose"):
        results = cross_validate_all(plan, fit, config)
    if config.stronger and plan.stronger and not meeting(results, config):
        with clock("collect"):    # a second pass, for the stronger edits (and again the plain
            plan = replace(plan, with_stronger=True)   # ones, so one Fit holds every choice)
            fit = collect_fit(plan, samples, config, declared, progress, labels)
        with clock("choose"):
            results += cross_validate_stronger(plan, fit, config)
    if config.stronger and config.harder_alphas and not meeting(results, config):
        with clock("choose"):
            results += cross_validate_harder(plan, fit, config)
    if config.stronger and not meeting(results, config):
        with clock("choose"):                     # its collect passes counted here
            results += cross_validate_sequential(plan, fit, results, samples, config,
                                                 progress)
    truth = labels if labels is not None else fit.reference         # (N,) fold order
    with clock("choose"):
        chosen = choose_or_refuse(plan, fit, results, config, truth, clock.seconds)
    edit_plan, edit_fit = plan, fit   # a sequential edit's second step is fitted after
    if chosen is not None and chosen.first is not None:       # its first, on every fold
        with clock("collect"):
            edit_plan, edit_fit = collect_after(plan, fit, chosen.first, None, samples,
                                                config, progress)
    with clock("solve_patch"):
        repaired = apply_choice(edit_plan, edit_fit, chosen, config)
        set_provenance(repaired, provenance(plan, clean, trigger_info or {
            "trigger_sha256": triggered.sha256}, chosen, fit.target, config))
    with clock("verify"):
        provider, after, rows = verify_and_save(edit_plan, edit_fit, samples, repaired,
                                                chosen, out_path, config, progress)
    return build_report(plan, fit, Outcome(results, chosen, provider, after, truth, rows),
                        config, out_path, clock.seconds)


def choose_or_refuse(plan: Plan, fit: Fit, results: list[CandidateResult],
                     config: RepairConfig, truth: np.ndarray, timings: dict
                     ) -> CandidateResult | None:
    """:func:`crossval.choose`; when it refuses (:class:`RepairShortfall`: nothing is
    written), the error carries the refused repair's report, for ``--report``."""
    try:
        return choose(results, config)
    except RepairShortfall as refused:
        refused.report = refused_report(plan, fit, results, config, truth, str(refused),
                                        dict(timings)).as_dict()
        raise


def apply_choice(plan: Plan, fit: Fit, chosen: CandidateResult | None,
                 config: RepairConfig) -> onnx.ModelProto:
    """The chosen edit, computed on every fold's statistics and applied to a copy; an
    unchanged copy when no edit kept within the bound."""
    if chosen is None:
        return copy_proto(plan.loaded.proto)
    layers = [plan.by_name[name] for name in chosen.layers]
    anchor = Anchor(fit.anchor_layer, fit.target, chosen.target_offset) \
        if fit.anchor_layer else None
    return edited_model(plan.loaded.proto, layers,
                        fit.stats(layers, None, chosen.target_weight),
                        (chosen.alpha, chosen.eps, config.overshoot), anchor)


def verify_and_save(plan: Plan, fit: Fit, samples: Samples, repaired: onnx.ModelProto,
                    chosen: CandidateResult | None, out_path, config: RepairConfig,
                    progress: Progress | None):
    """Run the repaired model in memory (:func:`verify.repaired_scores`), then write it and
    check the file before it is renamed into place. Returns the provider, the (clean,
    triggered) scores it gave and the rows (in fold order) they are of."""
    layers = [plan.by_name[name] for name in chosen.layers] if chosen else []
    provider, after, rows = repaired_scores(repaired, fit, samples, layers, plan.output,
                                            config.device, config.batch_size,
                                            config.verify_samples, progress)
    save_model(repaired, out_path, plan.loaded.external_tensors,
               check=functools.partial(full_check, original=plan.loaded.path),
               inputs=plan.loaded.external_files)
    return provider, after, rows
