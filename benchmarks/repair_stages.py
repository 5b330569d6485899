"""One known-trigger repair of a zoo model, stage by stage: the best held-out candidates of the
plain, stronger (merge, normalization scale) and sequential edits, within the clean-cost
bound and at any cost (run by hand).

    python benchmarks/repair_stages.py jax_cnn_sig 0      # model, 100-sample slice of its pool
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "zoo"))

import runs  # noqa: E402
from build import cache_dir  # noqa: E402

import onnx_bdfix as bd  # noqa: E402
from onnx_bdfix.metrics import declared_target  # noqa: E402
from onnx_bdfix.repair.crossval import (  # noqa: E402
    bounded_cost,
    cross_validate_all,
    cross_validate_stronger,
    within,
)
from onnx_bdfix.repair.fit import collect_fit, order_samples  # noqa: E402
from onnx_bdfix.repair.plan import RepairConfig, make_plan  # noqa: E402
from onnx_bdfix.repair.sequential import cross_validate_sequential  # noqa: E402


def show(stage: str, results: list, config: RepairConfig, most: int = 3) -> None:
    """The candidates of ``stage`` that leave the least attack success, within the bound and
    at any cost."""
    for scope, rows in (("within", within(results, config)), ("any cost", results)):
        for r in sorted(rows, key=lambda r: (r.attack_success, bounded_cost(r, config)))[:most]:
            print(f"{stage:10} {scope:8} {' then '.join(r.all_layers)}  alpha={r.alpha:g} "
                  f"eps={r.eps:g}  ASR {r.attack_success:.1%}  clean cost "
                  f"{bounded_cost(r, config):.2%}  agreement {r.agreement:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("slice", type=int)
    parser.add_argument("--cache", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    folder = cache_dir(args.cache) / args.model
    work = Path(tempfile.mkdtemp())
    files = runs.clean_slice(folder, work, 100 * args.slice, 100)
    model = bd.load_model(folder / "model.onnx")
    clean = bd.load_data(files["clean"], model)
    trigger = bd.load_trigger(folder / "trigger.npz", model) \
        if (folder / "trigger.npz").is_file() else bd.load_data(files["clean_triggered"], model)
    config = RepairConfig()
    plan = make_plan(model, clean, work / "out.onnx", config)
    samples = order_samples(plan, clean, trigger)
    declared = declared_target(None, trigger)
    fit = collect_fit(plan, samples, config, declared)
    results = cross_validate_all(plan, fit, config)
    show("plain", results, config)
    if plan.stronger:
        plan = replace(plan, with_stronger=True)
        fit = collect_fit(plan, samples, config, declared)
        stronger = cross_validate_stronger(plan, fit, config)
        show("stronger", stronger, config)
        results += stronger
    show("sequential", cross_validate_sequential(plan, fit, results, samples, config), config)


if __name__ == "__main__":
    main()
