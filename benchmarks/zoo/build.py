"""Train and export the benchmark zoo of backdoored and clean models (run by hand, never CI).

    apt-get install -y dataset-fashion-mnist
    pip install '.[zoo]'
    nohup python benchmarks/zoo/build.py > zoo.log 2>&1 &     # resumes where it stopped
    python benchmarks/zoo/build.py --only vit_badnets_norm,preact18_clean

Models go to the cache (``--cache``, default $BDFIX_ZOO or ~/.cache/onnx-bdfix/zoo), one
folder each: model.onnx, clean.npz (500 unseen test images: the pool repairs draw from),
eval.npz (3,000 other test images), trigger.npz (static triggers) or clean_triggered.npz and
eval_triggered.npz (triggered copies, same order), card.json. A model whose card exists is
skipped. benchmarks/zoo/manifest.json (committed) lists every model built, with its card.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import attacks  # noqa: E402
import datasets  # noqa: E402
import snapshot  # noqa: E402
from specs import BY_NAME, ZOO, Spec  # noqa: E402
from store import measure, store_model_files  # noqa: E402

log = logging.getLogger("zoo")
TRAIN_SIZE = {"rgb": 20000, "gray": 30000, "pairs": 60000, "rgb_pairs": 60000}
POOL, EVAL = 500, 3000


def cache_dir(given: str | None) -> Path:
    return Path(given or os.environ.get("BDFIX_ZOO") or
                Path.home() / ".cache" / "onnx-bdfix" / "zoo")


def make_attack(spec: Spec, channels: int, side: int) -> attacks.Attack | None:
    options = dict(spec.options)
    if spec.attack in (None, "trojannn"):
        return None
    return {
        "badnets": lambda: attacks.badnets(channels, options.get("size", 3), side,
                                           options.get("position", "bottom-right"), spec.seed),
        "blended-noise": lambda: attacks.blended(
            attacks.noise_pattern(channels, side, spec.seed), 0.2, "uniform noise"),
        "blended-image": lambda: attacks.blended(
            datasets.real_image(side)[:channels], 0.2, "flower.jpg"),
        "sig": lambda: attacks.sig(channels, side),
        "lf": lambda: attacks.low_frequency(channels, side, spec.seed),
        "wanet": lambda: attacks.wanet(side, spec.seed),
        "inputaware": lambda: attacks.inputaware(spec.seed),
        "ssba": lambda: attacks.ssba(spec.seed),
    }[spec.attack]()


def build(spec: Spec, folder: Path) -> dict:
    x_train, y_train, x_test, y_test = datasets.dataset(spec.data, TRAIN_SIZE[spec.data],
                                                        spec.seed)
    channels, side = x_train.shape[1], x_train.shape[-1]
    attack = make_attack(spec, channels, side)
    started = time.perf_counter()
    trainer = _trainer(spec.framework)
    model_path, attack = trainer.train_and_export(spec, attack, x_train, y_train, folder)
    seconds = time.perf_counter() - started
    pool, evaluation = split(len(x_test))
    shown = attack or attacks.badnets(channels, 3, side, "bottom-right", 0)  # baseline ASR
    store_model_files(folder, spec, shown, x_test, y_test, pool, evaluation)
    card = {**spec.as_dict(), "backdoored": spec.attack is not None,
            "attack_params": shown.params, "trigger_note": None if attack else
            "a BadNets trigger, for a baseline ASR of a clean model",
            "train_samples": int(len(x_train)), "train_seconds": round(seconds, 1),
            "pool": POOL, "eval": EVAL,
            **measure(model_path, folder, spec, shown.paired),
            "model_sha256": hashlib.sha256(model_path.read_bytes()).hexdigest()}
    (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def split(count: int) -> tuple[np.ndarray, np.ndarray]:
    """(pool, evaluation): the test rows every model's clean.npz and eval.npz hold."""
    order = np.random.default_rng(2024).permutation(count)
    return order[:POOL], order[POOL:POOL + EVAL]


def _trainer(framework: str):
    if framework == "keras":
        import train_keras as trainer
    elif framework == "jax":
        import train_jax as trainer
    else:
        import train_torch_model as trainer
    return trainer


def write_manifest(cache: Path) -> None:
    entries = []
    for spec in ZOO:
        card = cache / spec.name / "card.json"
        if card.is_file():
            entries.append(json.loads(card.read_text()))
    manifest = {"about": "onnx-bdfix benchmark zoo; built by benchmarks/zoo/build.py",
                "models": entries}
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=None)
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("--framework", default="", help="only models of this framework")
    parser.add_argument("--cheap-first", action="store_true",
                        help="build the models that train fastest first")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cache = cache_dir(args.cache)
    for name in snapshot.restore(cache):
        log.info("restored %s from benchmarks/zoo/models", name)
    names = [n for n in args.only.split(",") if n] or [s.name for s in ZOO]
    if args.cheap_first:
        names.sort(key=lambda name: BY_NAME[name].cost)
    for name in names:
        spec = BY_NAME[name]
        folder = cache / name
        if (folder / "card.json").is_file() or (args.framework and
                                                spec.framework != args.framework):
            continue
        folder.mkdir(parents=True, exist_ok=True)
        log.info("building %s (%s, %s, seed %d)", name, spec.arch, spec.attack, spec.seed)
        card = build(spec, folder)
        log.info("%s: CA %.3f ASR %s (%.0f s)", name, card["clean_accuracy"],
                 card["attack_success_rate"], card["train_seconds"])
        write_manifest(cache)
    write_manifest(cache)


if __name__ == "__main__":
    main()
