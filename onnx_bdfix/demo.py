"""The bundled demo: repair a backdoored fixture shipped inside the package, score it."""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from .data import load_data, load_trigger
from .evaluation import evaluate
from .model import load_model
from .model.runtime import Progress
from .repair import RepairConfig, repair_model

DEMO_SAMPLES = 100


def demo_files() -> Path:
    return Path(str(resources.files("onnx_bdfix") / "demo_data"))


def run_demo(workdir: Path, device: str = "auto", progress: Progress | None = None) -> dict:
    """Repair the demo model with 100 clean samples; CA / ASR before and after on 3,000 others."""
    folder = demo_files()
    card = json.loads((folder / "card.json").read_text())
    model = load_model(folder / "model.onnx")
    clean = load_data(folder / "clean.npz", model, what="clean data").head(DEMO_SAMPLES)
    trigger = load_trigger(folder / "trigger.npz", model)
    repaired_path = workdir / "demo_repaired.onnx"
    report = repair_model(model, clean, trigger, repaired_path, RepairConfig(device=device),
                    progress)
    held_out = load_data(folder / "eval.npz", model, what="evaluation data")
    target = card["target_class"]
    before = evaluate(model, held_out, trigger, target, device=device)
    after = evaluate(repaired_path, held_out, trigger, target, device=device)
    return {"model": card["about"], "clean_samples": DEMO_SAMPLES,
            "eval_samples": len(held_out), "target_class": target,
            "inferred_target_class": report.target_class, "layers": report.chosen,
            "before": before.quality.as_dict(), "after": after.quality.as_dict(),
            "provider": after.provider}
