"""Built zoo models kept in the repository, so that a new machine restores in minutes what
took hours to train (run by hand; build.py restores first).

    python benchmarks/zoo/snapshot.py save       # the cache's models and results -> models/
    python benchmarks/zoo/snapshot.py restore    # and back (what build.py does first)

Per model, ``benchmarks/zoo/models/<name>/`` keeps model.onnx, card.json and trigger.npz (a
static trigger; TrojanNN's is optimized from the trained model and cannot be made again).
The data files are made again from the seeded test set and attack, and checked: the model
must give the card's clean accuracy, attack success and target-class accuracy on them again,
and its bytes the card's digest. The measured results (the zoo table's JSON lines) are kept
beside them, so a table goes on across machines where it stopped.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import datasets  # noqa: E402
from specs import BY_NAME  # noqa: E402
from store import measure, store_images  # noqa: E402

STORE = HERE / "models"
KEPT = ("model.onnx", "card.json", "trigger.npz")
RESULTS = "results.jsonl"
FIGURES = ("clean_accuracy", "attack_success_rate", "target_class_accuracy")


def save(cache: Path, store: Path = STORE) -> list[str]:
    """Copy every built model's kept files, and the results, from ``cache`` to ``store``."""
    saved = []
    for card in sorted(cache.glob("*/card.json")):
        target = store / card.parent.name
        target.mkdir(parents=True, exist_ok=True)
        for name in KEPT:
            if (card.parent / name).is_file():
                shutil.copy2(card.parent / name, target / name)
        saved.append(card.parent.name)
    if (cache / RESULTS).is_file():
        shutil.copy2(cache / RESULTS, store / RESULTS)
    return saved


def restore(cache: Path, store: Path = STORE) -> list[str]:
    """Every model of ``store`` the cache lacks, its data made again and checked; then the
    results the cache lacks. The card is written last: a folder with a card is complete."""
    restored = []
    for card_path in sorted(store.glob("*/card.json")):
        name = card_path.parent.name
        if name not in BY_NAME or (cache / name / "card.json").is_file():
            continue
        folder = cache / name
        folder.mkdir(parents=True, exist_ok=True)
        for kept in ("model.onnx", "trigger.npz"):              # the card comes last
            if (card_path.parent / kept).is_file():
                shutil.copy2(card_path.parent / kept, folder / kept)
        card = json.loads(card_path.read_text())
        paired = remake_data(folder, name)
        check(folder, name, card, paired)
        shutil.copy2(card_path, folder / "card.json")
        restored.append(name)
    merge_results(store / RESULTS, cache / RESULTS)
    return restored


def remake_data(folder: Path, name: str) -> bool:
    """clean.npz, eval.npz and (a sample-specific attack) their triggered copies; whether
    the attack is sample-specific."""
    from build import make_attack, split
    spec = BY_NAME[name]
    x_test, y_test = datasets.test_set(spec.data)
    attack = make_attack(spec, x_test.shape[1], x_test.shape[-1])
    paired = attack is not None and attack.paired
    store_images(folder, spec, attack if paired else None, x_test, y_test,
                 *split(len(x_test)))
    return paired


def check(folder: Path, name: str, card: dict, paired: bool) -> None:
    """The restored model is the card's, and answers on the remade data as it did."""
    digest = hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
    if digest != card["model_sha256"]:
        raise SystemExit(f"{name}: model.onnx is not the one its card describes")
    again = measure(folder / "model.onnx", folder, BY_NAME[name], paired)
    off = {key: (card[key], again[key]) for key in FIGURES
           if abs(card[key] - again[key]) > 1e-9}
    if off:
        raise SystemExit(f"{name}: the remade data do not give the card's figures: {off}")


def merge_results(source: Path, target: Path) -> None:
    """Append the lines of ``source`` that ``target`` does not hold yet."""
    if not source.is_file():
        return
    held = set(target.read_text().splitlines()) if target.is_file() else set()
    new = [line for line in source.read_text().splitlines() if line and line not in held]
    if new:
        with target.open("a") as out:
            out.write("".join(line + "\n" for line in new))


def main() -> None:
    from build import cache_dir
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("save", "restore"))
    parser.add_argument("--cache", default=None)
    args = parser.parse_args()
    cache = cache_dir(args.cache)
    done = save(cache) if args.action == "save" else restore(cache)
    print(f"{args.action}: {len(done)} models ({', '.join(done) or 'none'})")


if __name__ == "__main__":
    main()
