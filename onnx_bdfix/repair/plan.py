"""What a repair is asked to do (:class:`RepairConfig`) and what it works on (:class:`Plan`):
the model's layers, the candidate layer sets, and the samples ordered by cross-validation fold.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import KFold

from ..data import Dataset
from ..errors import DataError, ModelError
from ..model import LoadedModel, model_input, score_output
from ..model.save import check_model_output
from .anchor import SLACK_SHARE
from .candidates import affine_layers, affordable, merge_layers, pick_layers
from .layers import Layer, find_layers

MIN_SAMPLES = 8


@dataclass
class RepairConfig:
    """Parameters of a repair; recorded in the provenance of the file it writes.

    An edit is written only when its held-out clean cost (lost clean accuracy, measured or
    estimated: :attr:`CandidateResult.clean_cost`) is at most ``max_clean_drop``, and its
    held-out attack success at most ``max_asr``; when none is, ``must_meet_asr`` refuses with
    :class:`RepairShortfall`, else the lowest-scoring edit within the bound is written (or
    none). With ``fallback_clean_drop`` (the trigger-agnostic mode, a suspected class: not
    with the trigger known), an edit that meets ``max_asr`` within that wider bound is
    written when none within ``max_clean_drop`` does. The trigger-agnostic mode passes its
    own choices as data: a second target-key weight to cross-validate
    (``target_weight_grid``), scoring each edit without the logit anchor too
    (``score_without_anchor``), with a class suspected every strength at once
    and the edit that leaves the reconstructions the least pull toward the target rather
    than the lowest smooth score (``choose_by="pull"``; a model its scan calls clean: the
    gentlest strength first, ``alpha=0.1``, and the score), no slack reading of the
    anchor's offset
    (``target_slack=0``: reconstructions do not measure the real trigger's room), no
    shifted copies (``shifted_copies=0``: measured with the trigger known only), and
    hardening rather than refusing (``must_meet_asr=False``); on a model its scan calls
    clean, the bound holds the share of held-out clean answers an edit changes
    (``bound_changed_answers``), which no accuracy loss can exceed, rather than the
    estimated loss. The bound also holds the target class: an edit whose held-out
    target-class samples lose more than ``max_target_erosion`` of their median logit margin
    is not within it (a few target samples keep their answers while the class's borderline
    ones, which they rarely include, leave it: crossval.within). ``mode`` is a label for
    the provenance; no step reads it.
    """
    layers: str | list[str] = "auto"   # "auto" or layer names
    target_class: int | None = None
    repair_step: bool = True
    shifted_copies: int | None = None   # shifted copies of each clean sample fitted on too
                                        # (data/shifts.py); None: up to 4 within 512 rows
    target_weight: float | None = None  # weight of target-class clean keys; None: n_classes
    target_weight_grid: tuple = ()      # further target-key weights to cross-validate
    score_without_anchor: bool = False  # also score each edit with no target-logit anchor
    target_slack: float = SLACK_SHARE   # share of the triggered samples' room the anchor may
                                        # spend to keep the target class (0: not read)
    alpha: float | None = None          # weight of the triggered term; None: cross-validated
    overshoot: float = 0.25             # push triggered outputs past clean, away from the shift
    alpha_grid: tuple = (0.1, 0.3, 1.0)  # all scored together
    harder_alphas: tuple = (3.0, 10.0)  # unlearning harder still, when every edit above falls
                                        # short (before the sequential edits)
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
    max_clean_drop: float | None = 0.01  # largest held-out clean cost an edit may have
    fallback_clean_drop: float | None = None  # a wider bound, used only when no edit within
                                              # max_clean_drop meets max_asr (crossval.choose)
    bound_changed_answers: bool = False  # the bound holds changed answers, not expected loss
    max_target_erosion: float | None = 0.25  # share of the target class's median logit margin
                                             # an edit may take, held out (None: no limit)
    max_asr: float = 0.02               # held-out attack success an edit must reach
    must_meet_asr: bool = True          # none does: refuse (True) or harden within the bound
    choose_by: str = "score"            # "score": the lowest smooth score; "pull": the least
                                        # held-out trigger pull (crossval.ranking)
    stronger: bool = True               # try merge edits when the plain ones fall short
    mode: str = "bdk"                   # "bdk": trigger given; "agnostic": reconstructed


@dataclass(frozen=True)
class Plan:
    """What the repair works on: the model, its layers, the candidate sets, the fold order."""
    loaded: LoadedModel
    output: str
    layers: list[Layer]
    sets: list[tuple[str, ...]]
    order: np.ndarray          # (N,) sample permutation that groups the folds
    bounds: list[int]          # fold f holds rows bounds[f]:bounds[f + 1] of the permuted data
    # merge edits and normalization scales, tried when ``sets`` fall short
    stronger: list[tuple[str, ...]] = ()
    with_stronger: bool = False   # collect for the stronger edits too (the second pass)
    copies: int = 0               # shifted copies of each sample among the rows

    @property
    def given(self) -> np.ndarray:
        """(N,) whether each fold-ordered row is a sample as given (not a shifted copy)."""
        return self.order < len(self.order) // (self.copies + 1)

    @property
    def by_name(self) -> dict[str, Layer]:
        return {layer.name: layer for layer in self.layers}

    @property
    def involved(self) -> list[Layer]:
        """The layers whose statistics the collect pass gathers: the plain candidates, and
        the stronger edits only in the second pass (:attr:`with_stronger`)."""
        every = [*self.sets, *(self.stronger if self.with_stronger else ())]
        return [layer for layer in self.layers if any(layer.name in s for s in every)]

    @property
    def folds(self) -> int:
        return len(self.bounds) - 1


def fold_order(n: int, folds: int, seed: int, copies: int = 0) -> tuple[np.ndarray, list[int]]:
    """A permutation that puts the samples of each fold together, and the fold bounds
    (scikit-learn's shuffled K-fold split of the ``n`` samples). With ``copies``, rows
    ``c·n + i`` (c = 1..copies) are copies of sample i and go to its fold, after it."""
    parts = [test for _, test in KFold(folds, shuffle=True, random_state=seed).split(
        np.zeros((n, 1)))]
    parts = [np.concatenate([part + copy * n for copy in range(copies + 1)]) for part in parts]
    bounds = np.cumsum([0] + [len(part) for part in parts]).tolist()
    return np.concatenate(parts), bounds


def make_plan(loaded: LoadedModel, clean: Dataset, out_path, config: RepairConfig,
              copies: int = 0) -> Plan:
    """Every check that can refuse the job, before any work; then layers and folds.
    ``clean``: the samples as given; ``copies``: how many shifted copies of each the repair
    works on too (:mod:`onnx_bdfix.data.shifts`; they join their sample's fold)."""
    check_model_output(out_path, [clean.source, *loaded.external_files],
                       bool(loaded.external_tensors), model=loaded.path)
    model_input(loaded)                      # one float data input, or a clear error
    output = score_output(loaded, config.output)
    layers = find_layers(loaded)
    if not layers:
        raise ModelError("the model has no editable layer (Conv, Gemm or MatMul with a "
                         "constant weight)")
    if len(clean) < MIN_SAMPLES:
        raise DataError(f"{clean.source}: {len(clean)} clean samples; at least "
                        f"{MIN_SAMPLES} are needed (100 or more work well)")
    automatic = config.layers in ("auto", ["auto"])
    cheap = affordable(loaded.index, layers) if automatic else None   # shapes inferred once
    sets = pick_layers(config.layers, layers, loaded.index, output, config.max_auto_layers,
                       cheap)
    merges, scales = [], []
    if automatic and config.stronger:
        merges = merge_layers(loaded.index, layers, output, config.max_auto_layers, cheap)
        scales = affine_layers(loaded.index, layers, output, config.max_auto_layers)
    folds = min(config.folds, max(2, len(clean) // 10))
    order, bounds = fold_order(len(clean), folds, config.seed, copies)
    return Plan(loaded, output, layers + merges, sets, order, bounds,
                [(layer.name,) for layer in merges + scales], copies=copies)
