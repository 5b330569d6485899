"""Time onnx-bdfix against the floor of one ONNX Runtime pass; write docs/performance.md.

    python benchmarks/perf.py [--sizes 100,1000,10000] [--repeats 3] [--out docs/performance.md]

For each timing model (benchmarks/models.py: a ResNet-18-size classifier, 3x32x32, and a wide
MLP) and each n, a fresh child process first runs the floor, plain ONNX Runtime inference of
the same 2n samples (n clean, n triggered) with the same provider and batch size, then the
repair, end to end and per stage, and reports its peak resident memory. Each ratio is taken
within one child, and the table gives the median over the repeats. Random weights and
random images: only the cost matters here. Run by hand, never in CI.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def make_inputs(folder: Path, model: str, n: int) -> None:
    """Uncompressed .npz (memory-mapped by onnx-bdfix) of uint8 images, and a patch trigger."""
    import onnx
    from models import resnet18, wide_mlp
    proto = resnet18() if model == "resnet18" else wide_mlp()
    onnx.save(proto, folder / "model.onnx")
    shape = (3, 32, 32) if model == "resnet18" else (3072,)
    rng = np.random.default_rng(n)
    np.savez(folder / "clean.npz", x=rng.integers(0, 256, size=(n, *shape), dtype=np.uint8),
             scale=np.float32(1 / 255))
    mask = np.zeros(shape, np.float32)
    if model == "resnet18":
        mask[:, -4:-1, -4:-1] = 1.0
    else:
        mask[:48] = 1.0
    np.savez(folder / "trigger.npz", mask=mask, pattern=np.ones(shape, np.float32))


def child(folder: Path, batch_size: int) -> dict:
    """One measured run: the floor, then the repair, in this process."""
    from onnx_bdfix.data import load_data, load_trigger
    from onnx_bdfix.model import load_model, model_input
    from onnx_bdfix.model.runtime import open_runner, scores
    from onnx_bdfix.repair import RepairConfig, repair_model

    spec = model_input(load_model(folder / "model.onnx").proto)
    clean = load_data(folder / "clean.npz", spec)
    trigger = load_trigger(folder / "trigger.npz", tuple(spec.sample_shape))
    start = time.perf_counter()
    runner = open_runner((folder / "model.onnx").read_bytes(), "auto")
    output = runner.session.get_outputs()[0].name
    scores(runner, clean.rows(), output, batch_size)
    scores(runner, clean.rows(trigger=trigger), output, batch_size)
    floor = time.perf_counter() - start
    start = time.perf_counter()
    report = repair_model(folder / "model.onnx", clean, trigger, folder / "out.onnx",
                    RepairConfig(batch_size=batch_size))
    total = time.perf_counter() - start
    return {"floor": floor, "repair": total, "ratio": total / floor, "stages": report.timings,
            "layers": report.chosen, "provider": report.provider,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure(model: str, n: int, repeats: int, batch_size: int) -> dict:
    runs = []
    with tempfile.TemporaryDirectory() as work:
        make_inputs(Path(work), model, n)
        for _ in range(repeats):
            out = subprocess.run([sys.executable, __file__, "--child", work, "--batch-size",
                                  str(batch_size)], check=True, capture_output=True, text=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    median = lambda key: statistics.median(run[key] for run in runs)  # noqa: E731
    stages = {stage: statistics.median(run["stages"][stage] / run["floor"] for run in runs)
              for stage in runs[0]["stages"]}
    return {"model": model, "n": n, "ratio": median("ratio"), "floor": median("floor"),
            "peak_mb": median("peak_mb"), "stages": stages, "layers": runs[0]["layers"],
            "provider": runs[0]["provider"], "repeats": repeats}


def solve_scaling(dims: list[int], repeats: int = 3) -> list[tuple[int, float]]:
    """Median seconds of one closed-form solve, m = 512 outputs, for key length d."""
    from onnx_bdfix.repair.solve import bdk_correction
    from onnx_bdfix.repair.stats import KeyStats
    rows = []
    rng = np.random.default_rng(0)
    for d in dims:
        keys = rng.normal(size=(1, 2 * d, d)).astype(np.float32)
        stats = KeyStats(1, d)
        stats.add(keys, keys + 0.1, np.ones(2 * d, np.float32))
        weights = rng.normal(size=(1, 512, d))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            bdk_correction(weights, stats, 0.1, 1e-2, 0.25)
            times.append(time.perf_counter() - start)
        rows.append((d, statistics.median(times)))
    return rows


def machine() -> str:
    import onnxruntime
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os
    return (f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}")


def write(results: list[dict], scaling, command: str, out: Path) -> None:
    lines = ["# Performance", "",
             f"Made with `{command}` on: {machine()}.", "",
             "Ratios are repair time over the floor (plain ONNX Runtime inference of the same "
             "2n samples, same provider, same batch size), each measured within one process and "
             "given as the median of the repeats. Stage columns are each stage's time over the "
             "same floor. Peak memory is the resident high-water mark of the whole process "
             "(floor and repair). No absolute time is quoted: the machines are shared.", "",
             "| model | n | repair / floor | load | collect | choose | solve+patch | verify | "
             "peak MB | layers edited | provider |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        s = r["stages"]
        lines.append(f"| {r['model']} | {r['n']:,} | **{r['ratio']:.2f}** | {s['load']:.2f} | "
                     f"{s['collect']:.2f} | {s['choose']:.2f} | {s['solve_patch']:.2f} | "
                     f"{s['verify']:.2f} | {r['peak_mb']:.0f} | {', '.join(r['layers'])} | "
                     f"{r['provider']} |")
    base = scaling[0][1]
    lines += ["", f"Closed-form solve, one layer, m = 512 outputs, median of 3, as a multiple "
              f"of the d = {scaling[0][0]} solve (O(d³) would give (d/{scaling[0][0]})³):", "",
              "| key length d | time / time at the smallest d |", "|---|---|"]
    lines += [f"| {d:,} | {t / base:.1f} |" for d, t in scaling]
    out.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--models", default="resnet18,wide_mlp")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default=str(HERE.parent / "docs" / "performance.md"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--keep", action="store_true",
                        help="Keep the other models' rows from the last run (results.json).")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child), args.batch_size)))
        return
    store = Path(args.out).with_suffix(".json")
    saved = json.loads(store.read_text()) if args.keep and store.exists() else {}
    models = args.models.split(",")
    results = [r for r in saved.get("results", []) if r["model"] not in models]
    for model in models:
        for n in map(int, args.sizes.split(",")):
            results.append(measure(model, n, args.repeats, args.batch_size))
            store.write_text(json.dumps({**saved, "results": results}, indent=1))
            print(json.dumps(results[-1]), flush=True)
    scaling = solve_scaling([256, 512, 1024, 2048, 4608])
    store.write_text(json.dumps({"results": results, "scaling": scaling}, indent=1))
    write(results, scaling, "python benchmarks/perf.py " + " ".join(sys.argv[1:]),
          Path(args.out))


if __name__ == "__main__":
    main()
