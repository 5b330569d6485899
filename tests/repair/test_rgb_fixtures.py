"""Known-trigger repair on the committed RGB fixtures (3×32×32, real backdoored models): an
ImageNet-normalized VGG with a coloured patch, a WaNet warp given as triggered copies, and a
ViT with a real photograph blended in. 100 clean samples, scored on the fixture's 1,000
held-out images.

Margins hold what was measured on these models with room for noise (5 disjoint slices of 100,
slice 0 here; docs/method.md). They are not yet issue 11's targets (ASR ≤ 2 %, target-class
drop ≤ 2): the VGG patch leaves 2.3–4.6 % and costs up to 4 points of target-class accuracy.
The ViT is not repaired by one edit of its classifier, the only layer no residual path
bypasses (21–88 % ASR left), nor yet by the merge edits tried when that falls short: that
test is an expected failure, strict, so that it fails loudly the day the method reaches it.
"""
import json

import pytest
from conftest import FIXTURES

import onnx_bdfix as bd
from onnx_bdfix.diff import diff_models
from onnx_bdfix.errors import RepairShortfall
from onnx_bdfix.repair import RepairConfig
from onnx_bdfix.repair.layers import find_layers

N_CLEAN = 100
# fixture: (largest ASR after, largest clean-accuracy drop, largest target-class drop)
MARGINS = {"rgb_vgg_badnets_norm": (0.07, 0.01, 0.05),     # measured 4.6 %, +0.6, 3.1
           "rgb_vgg_wanet": (0.04, 0.01, 0.04)}            # measured 1.4 %, +0.3, 2.0


def trigger_of(folder, data, model, copies: str):
    """The trigger file, or the triggered copies of ``data`` stored in ``copies``."""
    if (folder / "trigger.npz").is_file():
        return bd.load_trigger(folder / "trigger.npz", model)
    return bd.load_triggered(folder / copies, data)


def repair_fixture(name, tmp_path, **options):
    folder = FIXTURES / name
    card = json.loads((folder / "card.json").read_text())
    model = bd.load_model(folder / "model.onnx")
    pool = bd.load_data(folder / "clean.npz", model)
    triggered = trigger_of(folder, pool, model, "clean_triggered.npz")
    if isinstance(triggered, bd.data.Dataset):          # copies: the same 100 samples
        triggered = triggered.head(N_CLEAN)
    report = bd.repair_model(model, pool.head(N_CLEAN), triggered, tmp_path / "out.onnx",
                             RepairConfig(device="cpu", **options))
    held_out = bd.load_data(folder / "eval.npz", model)
    scored = trigger_of(folder, held_out, model, "eval_triggered.npz")
    target = card["target_class"]
    before = bd.evaluate(model, held_out, scored, target, device="cpu")
    after = bd.evaluate(tmp_path / "out.onnx", held_out, scored, target, device="cpu")
    return card, report, before, after


@pytest.mark.parametrize("name", sorted(MARGINS))
def test_rgb_backdoor_is_removed(name, tmp_path):
    card, report, before, after = repair_fixture(name, tmp_path)
    max_asr, max_drop, max_target_drop = MARGINS[name]
    assert before.quality.attack_success_rate > 0.85          # the fixture is backdoored
    assert report.target_class == card["target_class"]
    assert after.target_class == card["target_class"]        # no other class taken over
    assert after.quality.attack_success_rate <= max_asr, report.choice_reason
    assert before.quality.clean_accuracy - after.quality.clean_accuracy <= max_drop
    assert before.quality.target_class_accuracy - \
        after.quality.target_class_accuracy <= max_target_drop


def test_vit_repair_runs_end_to_end(tmp_path):
    """The ViT's MatMul projections are found; the repaired file differs only in weights.
    (No edit reaches 2 % here, so the default refuses: this runs as hardening.)"""
    card, report, before, _ = repair_fixture("rgb_vit_blended", tmp_path, must_meet_asr=False)
    assert before.quality.attack_success_rate > 0.95
    assert sum(layer["op"] == "MatMul" for layer in report.layers) >= 8
    assert report.target_class == card["target_class"]
    assert diff_models(FIXTURES / "rgb_vit_blended" / "model.onnx",
                       tmp_path / "out.onnx").weights_only


@pytest.mark.xfail(strict=True, reason="issue 11: one classifier edit cannot remove a real-image "
                   "blend from a ViT (measured 21-88 % ASR left over 5 slices)")
def test_vit_blend_is_removed(tmp_path):
    _, _, before, after = repair_fixture("rgb_vit_blended", tmp_path)
    assert after.quality.attack_success_rate <= 0.05
    assert before.quality.clean_accuracy - after.quality.clean_accuracy <= 0.01


def test_stronger_edits_are_tried_in_order_of_cost_and_the_shortfall_is_refused(tmp_path):
    """On the ViT's second slice no plain edit at α = 0.1 reaches 2 % held-out attack
    success, so the same layers are tried unlearning harder, then the stronger edits: the
    branch layers as merge edits (they answer for the residual bypass too) and the final
    LayerNormalization's scale; then all of them harder still (α = 3 and 10), then
    sequential edits after the best of them. Only the hardest reach it, at a clean cost
    over the bound, so by default nothing is written; as hardening, every stage is on the
    report, in order."""
    folder = FIXTURES / "rgb_vit_blended"
    model = bd.load_model(folder / "model.onnx")
    pool = bd.load_data(folder / "clean.npz", model)
    clean = bd.data.Dataset(pool.raw[100:200], None, pool.sha256, pool.source, pool.scale,
                            pool.offset)
    trigger = bd.load_trigger(folder / "trigger.npz", model)
    with pytest.raises(RepairShortfall, match="one that meets it costs .* would allow it"):
        bd.repair_model(model, clean, trigger, tmp_path / "o.onnx", RepairConfig(device="cpu"))
    assert not (tmp_path / "o.onnx").exists()
    report = bd.repair_model(model, clean, trigger, tmp_path / "o.onnx",
                             RepairConfig(device="cpu", must_meet_asr=False))
    scales = {layer.name for layer in find_layers(model) if layer.affine is not None}
    harder = set(RepairConfig().harder_alphas)
    stages = [("sequential" if c["first"] else "harder" if c["alpha"] in harder else
               "merge" if c["layers"][0].endswith("(+bypass)") else
               "scale" if c["layers"][0] in scales else "plain", c["alpha"])
              for c in report.candidates]
    plain = [alpha for kind, alpha in stages if kind == "plain"]
    assert plain[0] == 0.1 and {0.3, 1.0} <= set(plain)
    order = {"plain": 0, "merge": 1, "scale": 1, "harder": 2, "sequential": 3}
    assert stages.index(("plain", 0.3)) < min(i for i, s in enumerate(stages) if s[0] == "merge")
    assert [order[kind] for kind, _ in stages] == sorted(order[kind] for kind, _ in stages)
    assert {kind for kind, _ in stages} == set(order)
