"""Write a zoo model's data files in its own input convention, and measure it.

Images are stored as uint8 pixels with ``scale`` and ``offset`` that give the model's input
(x_model = x·scale + offset): 1/255 and 0 for a model that takes [0, 1], per-channel
1/(255·std) and −mean/std for one that takes ImageNet-normalized input. Triggers are written
in the same scale and layout.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from attacks import Attack, apply_static
from specs import Spec
from train import IMAGENET_MEAN, IMAGENET_STD


def factors(spec: Spec, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) per channel, shaped to broadcast to one sample of the layout."""
    shape = (1, 1, channels) if spec.nhwc else (channels, 1, 1)
    if not spec.normalize:
        return np.full(shape, 1 / 255, np.float32), np.zeros(shape, np.float32)
    std, mean = IMAGENET_STD[:channels], IMAGENET_MEAN[:channels]
    return (1 / (255 * std)).reshape(shape).astype(np.float32), \
        (-mean / std).reshape(shape).astype(np.float32)


def layout(x: np.ndarray, spec: Spec) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1) if spec.nhwc else x)


def pixels(x01: np.ndarray, spec: Spec) -> np.ndarray:
    return layout(np.clip(np.round(x01 * 255), 0, 255).astype(np.uint8), spec)


def save_images(path: Path, x01: np.ndarray, y: np.ndarray, spec: Spec) -> None:
    scale, offset = factors(spec, x01.shape[1])
    np.savez_compressed(path, x=pixels(x01, spec), y=y, scale=scale, offset=offset)


def trigger_arrays(attack: Attack, spec: Spec, channels: int) -> dict:
    """The static trigger in the model's scale and layout."""
    scale, offset = factors(spec, channels)
    per_value = scale * 255                         # 1/std, or 1
    sample = lambda a: layout(a[None], spec)[0]     # noqa: E731
    arrays = {}
    if "mask" in attack.static:
        arrays["mask"] = sample(attack.static["mask"])
        arrays["pattern"] = sample(attack.static["pattern"]) * per_value + offset
    else:
        arrays["delta"] = sample(attack.static["delta"]) * per_value
        arrays["clip_min"] = offset if spec.normalize else np.float32(0)
        arrays["clip_max"] = per_value + offset if spec.normalize else np.float32(1)
    return {k: np.asarray(v, np.float32) for k, v in arrays.items()}


def store_model_files(folder: Path, spec: Spec, attack: Attack, x_test: np.ndarray,
                      y_test: np.ndarray, pool: np.ndarray, evaluation: np.ndarray) -> None:
    store_images(folder, spec, attack, x_test, y_test, pool, evaluation)
    if not attack.paired:
        np.savez(folder / "trigger.npz", **trigger_arrays(attack, spec, x_test.shape[1]),
                 target_class=np.int64(spec.target))


def store_images(folder: Path, spec: Spec, attack: Attack | None, x_test: np.ndarray,
                 y_test: np.ndarray, pool: np.ndarray, evaluation: np.ndarray) -> None:
    """clean.npz and eval.npz, and their triggered copies for a sample-specific attack."""
    for name, rows in (("clean", pool), ("eval", evaluation)):
        save_images(folder / f"{name}.npz", x_test[rows], y_test[rows], spec)
        if attack is not None and attack.paired:
            triggered = attack.apply(x_test[rows], seed=len(rows))
            save_images(folder / f"{name}_triggered.npz", triggered, y_test[rows], spec)


def load_images(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as stored:
        return stored["x"] * stored["scale"] + stored["offset"], stored["y"]


def measure(model_path: Path, folder: Path, spec: Spec, paired: bool) -> dict:
    """Clean accuracy, attack success and target-class accuracy on eval.npz (ONNX Runtime)."""
    import onnx
    from onnx_bdfix.model.runtime import open_runner, scores
    runner = open_runner(onnx.load(str(model_path)), "cpu")   # runs a fixed batch in pieces
    output = runner.session.get_outputs()[0].name

    def predict(x):
        return scores(runner, x.astype(np.float32), output, 500).argmax(1)
    x, y = load_images(folder / "eval.npz")
    if paired:
        triggered = load_images(folder / "eval_triggered.npz")[0]
    else:
        with np.load(folder / "trigger.npz") as stored:
            trigger = {k: stored[k] for k in stored.files if k != "target_class"}
        triggered = apply_static(x, trigger)
    clean_pred, landed = predict(x), predict(triggered)
    others, own = y != spec.target, y == spec.target
    return {"clean_accuracy": float((clean_pred == y).mean()),
            "attack_success_rate": float((landed[others] == spec.target).mean()),
            "target_class_accuracy": float((clean_pred[own] == spec.target).mean()),
            "measured_on": f"eval.npz ({len(y)} test images)"}
