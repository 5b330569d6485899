"""Known-trigger repair, end to end: load → collect → choose → solve → patch → verify."""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from . import __version__
from .collect import Progress, collect_statistics, open_runner, scores
from .data import Dataset
from .errors import DataError, InputError, ModelError, OutputPathError
from .graph import (LoadedModel, has_bypass, load_model, model_input, save_model,
                    score_output)
from .layers import (Layer, bias_array, find_layers, from_matrices, shifted_bias, to_matrices,
                     weight_array)
from .calibrate import held_out_figures, logit_layer, offset_bias, target_offset
from .patch import patched, set_provenance
from .select import (CandidateResult, LayerEvidence, best, candidate_sets, key_divergence,
                     output_divergence)
from .solve import bdk_correction
from .stats import KeyStats, total
from .verify import full_check, parity, quality

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
    max_auto_layers: int = 4
    output: str | None = None
    device: str = "auto"
    batch_size: int = 64
    seed: int = 0


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


def infer_target(clean_pred: np.ndarray, triggered_pred: np.ndarray) -> tuple[int, float]:
    """The class the trigger sends most flipped samples to, and the share it gets."""
    flipped = triggered_pred != clean_pred
    counts = np.bincount(triggered_pred[flipped] if flipped.any() else triggered_pred)
    target = int(counts.argmax())
    return target, float((triggered_pred[clean_pred != target] == target).mean())


def combined(stats: list[KeyStats], target_stats: list[KeyStats] | None, weight: float,
             leave_out: int | None = None) -> KeyStats:
    """Sum over folds (but ``leave_out``), clean keys of the target class weighted ``weight``."""
    keep = [i for i in range(len(stats)) if i != leave_out]
    summed = total([stats[i] for i in keep])
    if target_stats is not None and weight != 1.0:
        extra = total([target_stats[i] for i in keep])
        summed.clean_clean = summed.clean_clean + (weight - 1.0) * extra.clean_clean
    return summed


def corrections(proto: onnx.ModelProto, layers: list[Layer], stats: dict[str, KeyStats],
                alpha: float, eps: float, overshoot: float) -> dict[str, np.ndarray]:
    """Δ (groups, m, d) for each layer: computed, not applied."""
    return {layer.name: bdk_correction(to_matrices(layer, weight_array(proto, layer)),
                                       stats[layer.name], alpha, eps, overshoot)
            for layer in layers}


def corrected_weights(proto: onnx.ModelProto, layers: list[Layer],
                      deltas: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """W + Δ, back in each initializer's shape and dtype."""
    return {layer.name: from_matrices(layer, to_matrices(layer, weight_array(proto, layer))
                                      + deltas[layer.name]) for layer in layers}


def mean_keeping_biases(proto: onnx.ModelProto, layers: list[Layer],
                        deltas: dict[str, np.ndarray],
                        stats: dict[str, KeyStats]) -> dict[str, np.ndarray]:
    """b − Δ·μ for layers with a bias: the mean output over clean keys stays as it was."""
    biases = {}
    for layer in layers:
        if layer.bias and stats[layer.name].weight_sum > 0:
            mean_key = stats[layer.name].key_sum / stats[layer.name].weight_sum   # (groups, d)
            shift = -np.einsum("gmd,gd->gm", deltas[layer.name], mean_key)      # (groups, m)
            biases[layer.name] = shifted_bias(layer, bias_array(proto, layer), shift)
    return biases


@dataclass
class Anchor:
    """The repair step's offset on the target class's logit, through ``layer``'s bias."""
    layer: Layer
    target: int
    offset: float = 0.0


def edited_model(proto: onnx.ModelProto, layers: list[Layer], stats: dict[str, KeyStats],
                 strength: tuple[float, float, float],
                 anchor: Anchor | None = None) -> onnx.ModelProto:
    """Corrections for ``layers`` at (alpha, eps, overshoot), plus the anchor, on a copy."""
    deltas = corrections(proto, layers, stats, *strength)
    biases = mean_keeping_biases(proto, layers, deltas, stats)
    touched = {layer.name: layer for layer in layers}
    if anchor is not None and anchor.offset:
        name = anchor.layer.name
        start = biases.get(name, bias_array(proto, anchor.layer))
        biases[name] = offset_bias(anchor.layer, start, anchor.target, anchor.offset)
        touched[name] = anchor.layer
    return patched(proto, touched, corrected_weights(proto, layers, deltas), biases)


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
    clean_x: np.ndarray
    triggered_x: np.ndarray
    bounds: list[int]
    reference: np.ndarray             # (N,) the original model's clean predictions
    target: int
    output: str
    anchor_layer: Layer | None

    def stats(self, layers: list[Layer], leave_out: int | None = None) -> dict[str, KeyStats]:
        return {layer.name: combined(self.collected.stats[layer.name],
                                     self.target_stats[layer.name] if self.target_stats
                                     else None, self.target_weight, leave_out)
                for layer in layers}


# ------------------------------------------------------------------------ the repair
class Repair:
    """Known-trigger (BDK) repair of one model; ``run`` writes and verifies the new file."""

    def __init__(self, config: RepairConfig | None = None, progress: Progress | None = None):
        self.config = config or RepairConfig()
        self.progress = progress

    def run(self, model_path, clean: Dataset, triggered: Dataset, out_path) -> RepairReport:
        """``triggered`` holds the triggered copies of ``clean``'s samples, same order."""
        cfg, clock = self.config, {}
        start = time.perf_counter()
        loaded = load_model(model_path)
        _check_paths(Path(model_path), Path(out_path))
        proto = loaded.proto
        model_input(proto)                       # one float data input, or a clear error
        output = score_output(proto, cfg.output)
        layers = find_layers(proto)
        if not layers:
            raise ModelError("the model has no editable layer (Conv, Gemm or MatMul with a "
                             "constant weight)")
        by_name = {layer.name: layer for layer in layers}
        sets = pick_layers(cfg.layers, layers, proto, output, cfg.max_auto_layers)
        involved = [layer for layer in layers if any(layer.name in s for s in sets)]
        folds = min(cfg.folds, max(2, len(clean) // 10))
        if len(clean) < MIN_SAMPLES:
            raise DataError(f"{clean.source}: {len(clean)} clean samples; at least "
                            f"{MIN_SAMPLES} are needed (100 or more work well)")
        order, bounds = fold_order(len(clean), folds, cfg.seed)
        clean_x, triggered_x = clean.x[order], triggered.x[order]
        clock["load"] = time.perf_counter() - start

        start = time.perf_counter()
        collected = collect_statistics(proto, involved, clean_x, triggered_x, bounds, output,
                                       cfg.device, cfg.batch_size, self.progress)
        clock["collect"] = time.perf_counter() - start
        reference = collected.clean_scores.argmax(1)
        target, source = self._target(reference, collected)
        weight = cfg.target_weight or float(collected.clean_scores.shape[1])
        target_stats = self._target_stats(proto, involved, clean_x, reference, target,
                                          bounds, output) if cfg.repair_step else None

        start = time.perf_counter()
        n_classes = collected.clean_scores.shape[1]
        anchor_layer = logit_layer(proto, layers, output, n_classes) if cfg.repair_step else None
        fit = Fit(proto, collected, target_stats, weight, clean_x, triggered_x, bounds,
                  reference, target, output, anchor_layer)
        results = [self._cross_validate(fit, [by_name[n] for n in names], strength)
                   for strength in self._strengths() for names in sets]
        chosen = best(results)
        clock["choose"] = time.perf_counter() - start

        start = time.perf_counter()
        chosen_layers = [by_name[name] for name in chosen.layers]
        anchor = Anchor(anchor_layer, target, chosen.target_offset) if anchor_layer else None
        repaired = edited_model(proto, chosen_layers, fit.stats(chosen_layers),
                                (chosen.alpha, chosen.eps, cfg.overshoot), anchor)
        set_provenance(repaired, self._provenance(loaded, clean, triggered, chosen, target))
        clock["solve_patch"] = time.perf_counter() - start

        start = time.perf_counter()
        runner = open_runner(repaired, cfg.device, "all")
        after_clean = scores(runner, clean_x, output, cfg.batch_size, self.progress, "verifying")
        after_trig = scores(runner, triggered_x, output, cfg.batch_size, self.progress,
                            "verifying")
        onnx.checker.check_model(repaired, full_check=True)
        save_model(repaired, out_path, loaded.external_tensors)
        full_check(out_path)
        clock["verify"] = time.perf_counter() - start

        labels = clean.y[order] if clean.y is not None else reference
        evidence = self._evidence(proto, layers, involved, collected, output, chosen)
        return RepairReport(
            model=str(model_path), output_model=str(out_path), score_output=output,
            provider=runner.provider, target_class=target, target_class_source=source,
            layers=[e.as_dict() for e in evidence], chosen=list(chosen.layers),
            choice_reason=_reason(chosen, results, cfg.layers),
            repair_step={"enabled": cfg.repair_step, "target_key_weight": weight,
                         "target_samples": int((reference == target).sum()),
                         "anchor_layer": anchor_layer.name if anchor_layer else None,
                         "target_logit_offset": chosen.target_offset},
            candidates=[r.as_dict() for r in results],
            parity=parity(collected.clean_scores, after_clean).as_dict(),
            before=quality(collected.clean_scores, collected.triggered_scores, labels,
                           target).as_dict(),
            after=quality(after_clean, after_trig, labels, target).as_dict(),
            timings={k: round(v, 3) for k, v in clock.items()}, config=asdict(cfg))

    # -- steps ------------------------------------------------------------------------
    def _strengths(self) -> list[tuple[float, float, float]]:
        """(alpha, eps) pairs to cross-validate: the given values, or the grids."""
        alphas = [self.config.alpha] if self.config.alpha is not None else self.config.alpha_grid
        epses = [self.config.eps] if self.config.eps is not None else self.config.eps_grid
        return [(alpha, eps, self.config.overshoot) for alpha in alphas for eps in epses]

    def _target(self, reference: np.ndarray, collected) -> tuple[int, str]:
        n_classes = collected.clean_scores.shape[1]
        triggered_pred = collected.triggered_scores.argmax(1)
        if self.config.target_class is not None:
            if not 0 <= self.config.target_class < n_classes:
                raise InputError(f"--target-class {self.config.target_class} is out of range: "
                                 f"the model has {n_classes} classes (0..{n_classes - 1})")
            return self.config.target_class, "given"
        target, share = infer_target(reference, triggered_pred)
        log.info("target class %d: %.0f%% of triggered samples go there", target, 100 * share)
        return target, f"read off the model: {share:.0%} of triggered non-target samples"

    def _target_stats(self, proto, layers, clean_x, reference, target, bounds, output):
        """Clean keys of the samples the model puts in the target class (repair step)."""
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

    def _cross_validate(self, fit: "Fit", layers: list[Layer],
                        strength: tuple[float, float, float]) -> CandidateResult:
        """Fit on all folds but one, score the held-out one; then the target-logit anchor."""
        cfg = self.config
        held_clean = np.empty_like(fit.collected.clean_scores)           # (N, classes)
        held_triggered = np.empty_like(fit.collected.clean_scores)
        for fold in range(len(fit.bounds) - 1):
            model = edited_model(fit.proto, layers, fit.stats(layers, leave_out=fold), strength)
            runner = open_runner(model, cfg.device, "all")
            rows = slice(fit.bounds[fold], fit.bounds[fold + 1])
            held_clean[rows] = scores(runner, fit.clean_x[rows], fit.output, cfg.batch_size)
            held_triggered[rows] = scores(runner, fit.triggered_x[rows], fit.output,
                                          cfg.batch_size)
        offset = 0.0
        if fit.anchor_layer is not None:
            offset = target_offset(fit.collected.clean_scores, held_clean, fit.target)
        figures = held_out_figures(fit.collected.clean_scores, held_clean, held_triggered,
                                   fit.target, offset)
        return CandidateResult(tuple(layer.name for layer in layers), *strength[:2],
                               target_offset=offset, **figures)

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
                candidate=layer in involved, chosen=layer.name in chosen.layers))
        return evidence

    def _provenance(self, loaded: LoadedModel, clean: Dataset, triggered: Dataset,
                    chosen: CandidateResult, target: int) -> dict:
        return {"tool": "onnx-bdfix", "version": __version__, "mode": "bdk",
                "input_sha256": loaded.sha256, "clean_sha256": clean.sha256,
                "trigger_sha256": triggered.sha256, "clean_samples": len(clean),
                "layers": list(chosen.layers), "alpha": chosen.alpha, "eps": chosen.eps,
                "target_logit_offset": chosen.target_offset,
                "target_class": target,
                "parameters": asdict(self.config)}


def _check_paths(model_path: Path, out_path: Path) -> None:
    if out_path.resolve() == model_path.resolve():
        raise OutputPathError(f"{out_path}: the output must not overwrite the input model")
    if out_path.is_dir():
        raise OutputPathError(f"{out_path}: is a folder; give a file name for the output")


def _reason(chosen: CandidateResult, results: list[CandidateResult], requested) -> str:
    if requested not in ("auto", ["auto"]):
        return "named with --layers"
    return (f"lowest held-out score (attack success + lost clean agreement) of "
            f"{len(results)} candidates (layers x strength): alpha={chosen.alpha:g}, "
            f"eps={chosen.eps:g}, "
            f"{chosen.attack_success:.1%} attack success, "
            f"{chosen.agreement:.1%} clean agreement")
