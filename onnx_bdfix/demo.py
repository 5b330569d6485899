"""The bundled demo: repair a backdoored fixture shipped inside the package, score it."""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from .collect import Progress
from .data import load_data
from .graph import load_model, model_input
from .repair import Repair, RepairConfig
from .triggers import load_trigger
from .verify import evaluate

DEMO_SAMPLES = 100


def demo_files() -> Path:
    return Path(str(resources.files("onnx_bdfix") / "demo_data"))


def run_demo(workdir: Path, device: str = "auto", progress: Progress | None = None) -> dict:
    """Repair the demo model with 100 clean samples; CA / ASR before and after on 3,000 others."""
    folder = demo_files()
    card = json.loads((folder / "card.json").read_text())
    model = folder / "model.onnx"
    spec = model_input(load_model(model).proto)
    pool = load_data(folder / "clean.npz", spec, what="clean data")
    clean = pool.head(DEMO_SAMPLES)
    trigger = load_trigger(folder / "trigger.npz", tuple(spec.sample_shape))
    repaired = workdir / "demo_repaired.onnx"
    report = Repair(RepairConfig(device=device), progress).run(
        model, clean, trigger, repaired)
    held_out = load_data(folder / "eval.npz", spec, what="evaluation data")
    triggered_eval = held_out.rows(trigger=trigger)
    target = card["target_class"]
    before = evaluate(model, held_out, triggered_eval, target, device=device)
    after = evaluate(repaired, held_out, triggered_eval, target, device=device)
    return {"model": card["about"], "clean_samples": DEMO_SAMPLES,
            "eval_samples": len(held_out), "target_class": target,
            "inferred_target_class": report.target_class, "layers": report.chosen,
            "before": before.quality.as_dict(), "after": after.quality.as_dict(),
            "provider": after.provider}
