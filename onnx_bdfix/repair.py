"""Known-trigger repair, end to end: load → collect → choose → solve → patch → verify."""
from __future__ import annotations

import functools
import logging
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from . import __version__
from .calibrate import held_out_figures, logit_layer, target_offset
from .collect import Progress, collect_statistics, open_runner, scores
from .data import Dataset, Rows
from .edit import Anchor, combined, edited_model
from .errors import DataError, InputError, ModelError
from .graph import (
    LoadedModel,
    check_output_path,
    has_bypass,
    load_model,
    model_input,
    save_model,
    score_output,
)
from .heldout import HeldOut
from .layers import Layer, find_layers, to_matrices, weight_array
from .patch import set_provenance
from .select import (
    CandidateResult,
    LayerEvidence,
    best,
    candidate_sets,
    key_divergence,
    output_divergence,
    unused_key_share,
)
from .stats import KeyStats, total
from .triggers import Trigger, TriggerSet
from .verify import full_check, infer_target, parity, quality

log = logging.getLogger(__name__)
MIN_SAMPLES = 8


@dataclass
class RepairConfig:
    """Parameters of a repair; recorded in the provenance of the file it writes."""
    layers: str | list[str] = "auto"   # "auto" or layer names
    target_class: int | None = None
    repair_step: bool = True
    target_weight: float | None = None  # weight of target-class clean keys; None: n_classes
    alpha: float | None = 0.1           # weight of the triggered term; None: cross-validated
    overshoot: float = 0.25             # push triggered outputs past clean, away from the shift
    alpha_grid: tuple = (0.3, 1.0)
    eps: float | None = None            # ridge ε; None: chosen by cross-validation
    eps_grid: tuple = (1e-2, 1e-1)
    folds: int = 4
    cv_samples: int = 512               # held-out scoring uses at most this many samples
    max_auto_layers: int = 4
    verify_samples: int = 512           # the repaired model is re-run on at most this many
    output: str | None = None
    device: str = "auto"
    batch_size: int = 64
    seed: int = 0
    max_clean_drop: float | None = None  # edit only within this loss of held-out agreement
    mode: str = "bdk"                   # "bdk": trigger given; "agnostic": reconstructed


@dataclass
class RepairReport:
    model: str
    output_model: str
    score_output: str
    provider: str
    target_class: int
    target_class_source: str
    layers: list[dict]
    chosen: list[str]
    choice_reason: str
    candidates: list[dict]
    chosen_figures: dict
    repair_step: dict
    parity: dict
    before: dict
    after: dict
    timings: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- helpers
def fold_order(n: int, folds: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """A permutation that puts the samples of each fold together, and the fold bounds."""
    order = np.random.default_rng(seed).permutation(n)
    parts = [order[fold::folds] for fold in range(folds)]
    bounds = np.cumsum([0] + [len(part) for part in parts]).tolist()
    return np.concatenate(parts), bounds


def pick_layers(requested, layers: list[Layer], proto, output, max_layers) -> list[tuple]:
    if requested == "auto" or requested == ["auto"]:
        sets = candidate_sets(proto, layers, output, max_layers)
        if not sets:
            raise ModelError("no editable layer lies on every path to the output; "
                             "name layers with --layers (see `onnx-bdfix inspect`)")
        return sets
    names = [requested] if isinstance(requested, str) else list(requested)
    known = {layer.name for layer in layers}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InputError(f"--layers: no editable layer named {', '.join(unknown)}; "
                         f"editable layers: {', '.join(sorted(known))}")
    return [tuple(names)]


@dataclass
class Fit:
    """What every candidate edit is fitted and scored on (samples ordered by fold)."""
    proto: onnx.ModelProto
    collected: object                 # collect.Collected
    target_stats: dict | None         # layer name -> [KeyStats per fold], target-class keys
    target_weight: float
    clean_x: Rows
    triggered_x: Rows
    bounds: list[int]
    reference: np.ndarray             # (N,) the original model's clean predictions
    target: int
    output: str
    anchor_layer: Layer | None
    held_out: "HeldOut"

    def stats(self, layers: list[Layer], leave_out: int | None = None,
              target_weight: float | None = None) -> dict[str, KeyStats]:
        weight = self.target_weight if target_weight is None else target_weight
        return {layer.name: combined(self.collected.stats[layer.name],
                                     self.target_stats[layer.name] if self.target_stats
                                     else None, weight, leave_out)
                for layer in layers}


@dataclass
class Plan:
    """What the repair works on: the model, its layers, the candidate sets, the fold order."""
    loaded: LoadedModel
    output: str
    layers: list[Layer]
    sets: list[tuple[str, ...]]
    order: np.ndarray          # sample permutation that groups the folds
    bounds: list[int]          # fold f holds rows bounds[f]:bounds[f + 1] of the permuted data
    target_source: str = ""

    @property
    def by_name(self) -> dict[str, Layer]:
        return {layer.name: layer for layer in self.layers}

    @property
    def involved(self) -> list[Layer]:
        return [layer for layer in self.layers if any(layer.name in s for s in self.sets)]


class TargetGuess:
    """Marks the clean samples the model puts in the target class, batch by batch; without a
    given target, the first batch's triggered answers name it."""

    def __init__(self, target: int | None):
        self.target = target

    def __call__(self, clean_scores: np.ndarray, triggered_scores: np.ndarray) -> np.ndarray:
        clean_pred = clean_scores.argmax(1)
        if self.target is None:
            self.target, _ = infer_target(clean_pred, triggered_scores.argmax(1))
        return clean_pred == self.target


class Clock:
    """Wall time per stage, for the report's timing fields."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        yield
        self.seconds[stage] = round(time.perf_counter() - start, 3)


# ------------------------------------------------------------------------ the repair
class Repair:
    """Known-trigger (BDK) repair of one model; ``run`` writes and verifies the new file."""

    def __init__(self, config: RepairConfig | None = None, progress: Progress | None = None):
        self.config = config or RepairConfig()
        self.progress = progress

    def run(self, model_path, clean: Dataset, triggered: "Dataset | Trigger",
            out_path) -> RepairReport:
        """``triggered``: the trigger, or the triggered copies of ``clean``'s samples in the
        same order. Samples are read a batch at a time; nothing holds all of them as floats."""
        clock, cfg = Clock(), self.config
        self._declared = (cfg.target_class, "given") if cfg.target_class is not None else \
            (getattr(triggered, "target_class", None), "given in the trigger file")
        with clock("load"):
            plan = self._plan(model_path, out_path, clean)
            clean_x = clean.rows(plan.order)
            if isinstance(triggered, TriggerSet):
                triggered = triggered.by_fold(plan.order, plan.bounds)
            triggered_x = triggered.rows(plan.order) if isinstance(triggered, Dataset) \
                else clean.rows(plan.order, triggered)
        with clock("collect"):
            fit = self._collect(plan, clean_x, triggered_x)
        with clock("choose"):
            results = [result for strength in self._strengths(fit) for names in plan.sets
                       for result in self._cross_validate(fit, [plan.by_name[n] for n in names],
                                                          strength)]
            chosen = best(results, cfg.max_clean_drop, sum(map(len, fit.held_out.rows)))
        with clock("solve_patch"):
            repaired = self._repaired(plan, fit, chosen)
            set_provenance(repaired, self._provenance(plan.loaded, clean, triggered, chosen,
                                                      fit.target))
        with clock("verify"):
            runner, after = self._verify_and_save(plan, fit, repaired, out_path)
        labels = clean.y[plan.order] if clean.y is not None else fit.reference
        return self._report(plan, fit, results, chosen, runner.provider, after, labels,
                            out_path, clock.seconds)

    def _plan(self, model_path, out_path, clean: Dataset) -> "Plan":
        cfg = self.config
        loaded = load_model(model_path)
        check_output_path(out_path, [model_path], inputs_are="the input model")
        model_input(loaded.proto)                # one float data input, or a clear error
        output = score_output(loaded.proto, cfg.output)
        layers = find_layers(loaded.proto)
        if not layers:
            raise ModelError("the model has no editable layer (Conv, Gemm or MatMul with a "
                             "constant weight)")
        if len(clean) < MIN_SAMPLES:
            raise DataError(f"{clean.source}: {len(clean)} clean samples; at least "
                            f"{MIN_SAMPLES} are needed (100 or more work well)")
        sets = pick_layers(cfg.layers, layers, loaded.proto, output, cfg.max_auto_layers)
        folds = min(cfg.folds, max(2, len(clean) // 10))
        order, bounds = fold_order(len(clean), folds, cfg.seed)
        return Plan(loaded, output, layers, sets, order, bounds)

    def _collect(self, plan: "Plan", clean_x: Rows, triggered_x: Rows) -> Fit:
        """One pass for the key statistics; the repair step's target-class keys come along,
        for the target guessed from the first batch (a second pass only if the guess was wrong).
        """
        cfg, proto = self.config, plan.loaded.proto
        guess = TargetGuess(self._declared[0])
        folds = len(plan.bounds) - 1
        collected = collect_statistics(proto, plan.involved, clean_x, triggered_x, plan.bounds,
                                       plan.output, cfg.device, cfg.batch_size, self.progress,
                                       mark=guess if cfg.repair_step else None,
                                       keep_per_fold=max(1, cfg.cv_samples // folds))
        reference = collected.clean_scores.argmax(1)
        target, plan.target_source = self._target(reference, collected)
        n_classes = collected.clean_scores.shape[1]
        target_stats = anchor_layer = None
        if cfg.repair_step:
            target_stats = collected.marked if guess.target == target else \
                self._target_stats(proto, plan.involved, clean_x, reference, target,
                                   plan.bounds, plan.output)
            anchor_layer = logit_layer(proto, plan.layers, plan.output, n_classes)
        held_out = HeldOut(proto, plan.output, collected.kept, collected.kept_rows, clean_x,
                           triggered_x, cfg.device, cfg.batch_size)
        return Fit(proto, collected, target_stats, cfg.target_weight or float(n_classes),
                   clean_x, triggered_x, plan.bounds, reference, target, plan.output,
                   anchor_layer, held_out)

    def _repaired(self, plan: "Plan", fit: Fit, chosen: CandidateResult | None
                  ) -> onnx.ModelProto:
        if chosen is None:                       # no edit within --max-clean-drop
            unchanged = onnx.ModelProto()
            unchanged.CopyFrom(plan.loaded.proto)
            return unchanged
        layers = [plan.by_name[name] for name in chosen.layers]
        anchor = Anchor(fit.anchor_layer, fit.target, chosen.target_offset) \
            if fit.anchor_layer else None
        return edited_model(plan.loaded.proto, layers, fit.stats(layers, None,
                                                                 chosen.target_weight),
                            (chosen.alpha, chosen.eps, self.config.overshoot), anchor)

    def _verify_and_save(self, plan: "Plan", fit: Fit, repaired: onnx.ModelProto, out_path):
        """Check and run the repaired model in memory, then write it and check the file."""
        cfg = self.config
        runner = open_runner(repaired, cfg.device, "all")
        checked = slice(0, min(len(fit.clean_x), cfg.verify_samples))
        after = (scores(runner, fit.clean_x[checked], plan.output, cfg.batch_size,
                        self.progress, "verifying"),
                 scores(runner, fit.triggered_x[checked], plan.output, cfg.batch_size,
                        self.progress, "verifying"))
        save_model(repaired, out_path, plan.loaded.external_tensors,
                   check=functools.partial(full_check, original=plan.loaded.path))
        return runner, after

    def _report(self, plan, fit, results, chosen, provider, after, labels, out_path,
                timings) -> RepairReport:
        cfg, collected = self.config, fit.collected
        checked = len(after[0])                  # samples the repaired model was re-run on
        evidence = self._evidence(plan.loaded.proto, plan.layers, plan.involved, collected,
                                  plan.output, chosen)
        return RepairReport(
            model=str(plan.loaded.path), output_model=str(out_path), score_output=plan.output,
            provider=provider, target_class=fit.target, target_class_source=plan.target_source,
            layers=[e.as_dict() for e in evidence],
            chosen=list(chosen.layers) if chosen else [],
            choice_reason=_reason(chosen, results, cfg),
            chosen_figures=chosen.as_dict() if chosen else {},
            repair_step={"enabled": cfg.repair_step,
                         "target_key_weight": chosen.target_weight if chosen
                         else fit.target_weight,
                         "target_samples": int((fit.reference == fit.target).sum()),
                         "anchor_layer": fit.anchor_layer.name if fit.anchor_layer else None,
                         "target_logit_offset": chosen.target_offset if chosen else 0.0},
            candidates=[r.as_dict() for r in results],
            parity=parity(collected.clean_scores[:checked], after[0]).as_dict(),
            before=quality(collected.clean_scores[:checked],
                           collected.triggered_scores[:checked], labels[:checked],
                           fit.target).as_dict(),
            after=quality(after[0], after[1], labels[:checked], fit.target).as_dict(),
            timings=timings, config=asdict(cfg))

    # -- steps ------------------------------------------------------------------------
    def _strengths(self, fit: Fit) -> list[tuple[float, float, float, float]]:
        """(alpha, eps, overshoot, target-key weight) to cross-validate: the given values, or
        the grids. With a reconstructed trigger the target-class keys' weight is chosen too,
        between 1 and the usual n_classes: an edit that must carry over to unseen instances of
        the trigger may need the target class's own features, which that weight reserves."""
        cfg = self.config
        alphas = [cfg.alpha] if cfg.alpha is not None else cfg.alpha_grid
        epses = [cfg.eps] if cfg.eps is not None else cfg.eps_grid
        weights = [fit.target_weight]
        if cfg.mode == "agnostic" and cfg.target_weight is None and fit.target_stats:
            weights = [fit.target_weight, 1.0]
        return [(alpha, eps, cfg.overshoot, weight) for weight in weights for alpha in alphas
                for eps in epses]

    def _target(self, reference: np.ndarray, collected) -> tuple[int, str]:
        n_classes = collected.clean_scores.shape[1]
        triggered_pred = collected.triggered_scores.argmax(1)
        declared, source = self._declared
        if declared is not None:
            if not 0 <= declared < n_classes:
                raise InputError(f"target class {declared} ({source}) is out of range: "
                                 f"the model has {n_classes} classes (0..{n_classes - 1})")
            return declared, source
        target, share = infer_target(reference, triggered_pred)
        log.info("target class %d: %.0f%% of triggered samples go there", target, 100 * share)
        return target, f"read off the model: {share:.0%} of triggered non-target samples"

    def _target_stats(self, proto, layers, clean_x, reference, target, bounds, output):
        """Clean keys of the samples the model puts in the target class, in a second pass
        (only when the first batch guessed the target wrong)."""
        rows = [np.flatnonzero(reference[bounds[f]:bounds[f + 1]] == target) + bounds[f]
                for f in range(len(bounds) - 1)]
        sub_bounds = np.cumsum([0] + [len(r) for r in rows]).tolist()
        picked = np.concatenate(rows)
        if len(picked) == 0:
            return None
        again = collect_statistics(proto, layers, clean_x[picked], None, sub_bounds, output,
                                   self.config.device, self.config.batch_size, self.progress,
                                   "repair step")
        return again.stats

    def _cross_validate(self, fit: Fit, layers: list[Layer],
                        strength: tuple[float, float, float, float]
                        ) -> list[CandidateResult]:
        """Fit on all folds but one, score the held-out one on the tail after the edited
        layers; then the repair step's target-logit anchor."""
        cut = tuple(dict.fromkeys(layer.key_tensor for layer in layers))
        base = fit.held_out.tail(cut)
        if base is None or not {layer.weight for layer in layers} <= \
                {init.name for init in base.graph.initializer}:
            base = fit.proto          # layers in sequence: the tail lost the earlier ones
        rows = np.concatenate(fit.held_out.rows)
        before = fit.collected.clean_scores[rows]                       # (kept, classes)
        clean_parts, triggered_parts = [], []
        for fold in range(len(fit.bounds) - 1):
            edited = edited_model(base, layers, fit.stats(layers, fold, strength[3]),
                                  strength[:3])
            clean, triggered = fit.held_out.scores(edited, cut, fold, base is fit.proto)
            clean_parts.append(clean)
            triggered_parts.append(triggered)
        held_clean, held_triggered = np.concatenate(clean_parts), np.concatenate(triggered_parts)
        offsets = [0.0]
        if fit.anchor_layer is not None:
            offsets = [target_offset(before, held_clean, fit.target)]
            if self.config.mode == "agnostic" and offsets[0] > 0:
                offsets.append(0.0)   # the anchor may lift unseen triggers back: score both
        return [CandidateResult(tuple(layer.name for layer in layers), *strength[:2],
                                target_weight=strength[3], target_offset=offset,
                                **held_out_figures(before, held_clean, held_triggered,
                                                   fit.target, offset))
                for offset in offsets]

    def _evidence(self, proto, layers, involved, collected, output, chosen):
        evidence = []
        for layer in layers:
            stats = total(collected.stats[layer.name]) if layer in involved else None
            evidence.append(LayerEvidence(
                layer.name, layer.op, "x".join(map(str, layer.weight_shape)),
                has_bypass(proto, {layer.node_index}, output),
                key_divergence(stats) if stats else None,
                output_divergence(stats, to_matrices(layer, weight_array(proto, layer)))
                if stats else None,
                unused_key_share(stats) if stats else None,
                candidate=layer in involved,
                chosen=chosen is not None and layer.name in chosen.layers))
        return evidence

    def _provenance(self, loaded: LoadedModel, clean: Dataset, triggered,
                    chosen: CandidateResult | None, target: int) -> dict:
        edit = {"layers": list(chosen.layers), "alpha": chosen.alpha, "eps": chosen.eps,
                "target_logit_offset": chosen.target_offset} if chosen else {"layers": []}
        trigger = {"trigger_sha256": triggered.sha256}
        if self.config.mode == "agnostic":       # a reconstructed trigger: say what it was
            trigger = {"trigger": triggered.source,
                       "trigger_arrays_sha256": triggered.sha256}
        return {"tool": "onnx-bdfix", "version": __version__, "mode": self.config.mode,
                "input_sha256": loaded.sha256, "clean_sha256": clean.sha256,
                "clean_samples": len(clean), "target_class": target, **trigger, **edit,
                "parameters": asdict(self.config)}


def _reason(chosen: CandidateResult | None, results: list[CandidateResult],
            config: RepairConfig) -> str:
    if chosen is None:
        return (f"no candidate edit kept held-out clean agreement within "
                f"{config.max_clean_drop:.1%}: the weights are left unchanged")
    named = "" if config.layers in ("auto", ["auto"]) else "layers named with --layers; "
    return (f"{named}lowest smooth held-out score (trigger pull + clean and target-class "
            f"shift) of {len(results)} candidates (layers x strength): "
            f"alpha={chosen.alpha:g}, eps={chosen.eps:g}, {chosen.attack_success:.1%} attack "
            f"success, {chosen.agreement:.1%} clean agreement")
