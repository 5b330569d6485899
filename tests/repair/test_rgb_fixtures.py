"""Known-trigger repair on the committed RGB fixtures (3×32×32, real backdoored models): an
ImageNet-normalized VGG, a ViT with a real-image blend, and a WaNet warp given as triggered
copies. 100 clean samples, scored on the fixture's 1,000 held-out images.

Margins hold what was measured on these models (docs/method.md), with room for noise.
"""
import json

import numpy as np
import pytest
from conftest import FIXTURES

import onnx_bdfix as bd
from onnx_bdfix.repair import RepairConfig

N_CLEAN = 100
# fixture: (largest ASR after, largest clean-accuracy drop, largest target-class drop)
MARGINS = {"rgb_vgg_badnets_norm": (0.02, 0.01, 0.02),
           "rgb_vit_blended": (0.02, 0.01, 0.02),
           "rgb_vgg_wanet": (0.10, 0.02, 0.03)}


def trigger_of(folder, data, model, copies: str):
    """The trigger file, or the triggered copies of ``data`` stored in ``copies``."""
    if (folder / "trigger.npz").is_file():
        return bd.load_trigger(folder / "trigger.npz", model)
    return bd.load_triggered(folder / copies, data)


@pytest.mark.parametrize("name", sorted(MARGINS))
def test_rgb_backdoor_is_removed(name, tmp_path):
    folder = FIXTURES / name
    card = json.loads((folder / "card.json").read_text())
    model = bd.load_model(folder / "model.onnx")
    pool = bd.load_data(folder / "clean.npz", model)
    clean = pool.head(N_CLEAN)
    triggered = trigger_of(folder, pool, model, "clean_triggered.npz")
    if hasattr(triggered, "head"):                       # copies: the same 100 samples
        triggered = triggered.head(N_CLEAN)
    report = bd.repair_model(model, clean, triggered, tmp_path / "out.onnx",
                       RepairConfig(device="cpu"))
    held_out = bd.load_data(folder / "eval.npz", model)
    scored = trigger_of(folder, held_out, model, "eval_triggered.npz")
    target = card["target_class"]
    before = bd.evaluate(model, held_out, scored, target, device="cpu").quality
    after = bd.evaluate(tmp_path / "out.onnx", held_out, scored, target, device="cpu").quality
    max_asr, max_drop, max_target_drop = MARGINS[name]
    assert before.attack_success_rate > 0.9                   # the fixture is backdoored
    assert report.target_class == target
    assert after.attack_success_rate <= max_asr, report.choice_reason
    assert before.clean_accuracy - after.clean_accuracy <= max_drop
    assert before.target_class_accuracy - after.target_class_accuracy <= max_target_drop
    assert np.isfinite(report.parity["max_score_change"])
