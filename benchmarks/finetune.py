"""Fine-tuning (FT) baseline beside onnx-bdfix, on the same model and the same clean samples.

    pip install '.[fixtures]'            # torch
    python benchmarks/finetune.py [--epochs 100] [--n 100] [--out docs/finetune.md]

FT is the BackdoorBench defense: train every weight of the model for E epochs on the labelled
clean samples (SGD, lr 0.01, momentum 0.9, batch 32). The ONNX graph is run in PyTorch by a
small interpreter of the ops these models use, so FT starts from exactly the weights onnx-bdfix
edits. Two measurements, each a ratio taken in one process, median of the repeats:
  1. cnn_badnets with n clean samples: time, CA and ASR of FT and of onnx-bdfix;
  2. the ResNet-18-size timing model with 1,000 samples: time of FT (two epochs timed, scaled
     to E: an epoch always costs the same) over the time of onnx-bdfix.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def torch_module(proto: onnx.ModelProto):
    """A torch.nn.Module that runs ``proto`` (Conv, Gemm, MatMul, Add, Relu, MaxPool, pooling,
    Flatten, BatchNormalization), its initializers as trainable parameters."""
    import torch
    import torch.nn.functional as F
    from onnx import helper

    class Graph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.params = torch.nn.ParameterDict({
                f"p{i}": torch.nn.Parameter(torch.from_numpy(numpy_helper.to_array(t).copy()))
                for i, t in enumerate(proto.graph.initializer)})
            self.names = {t.name: f"p{i}" for i, t in enumerate(proto.graph.initializer)}

        def forward(self, x):
            values = {proto.graph.input[0].name: x}
            get = lambda n: values[n] if n in values else self.params[self.names[n]]  # noqa
            for node in proto.graph.node:
                a = {at.name: helper.get_attribute_value(at) for at in node.attribute}
                ins = [get(n) for n in node.input if n]
                values[node.output[0]] = run_op(node.op_type, ins, a, F, torch)
            return values[proto.graph.output[0].name]
    return Graph()


def run_op(op, ins, a, F, torch):
    if op == "Conv":
        pads = a.get("pads", [0, 0, 0, 0])
        x = F.pad(ins[0], (pads[1], pads[3], pads[0], pads[2]))
        return F.conv2d(x, ins[1], ins[2] if len(ins) > 2 else None, a.get("strides", 1),
                        0, a.get("dilations", 1), a.get("group", 1))
    if op == "Gemm":
        w = ins[1].t() if a.get("transB", 0) else ins[1]
        return a.get("alpha", 1.0) * ins[0] @ w + a.get("beta", 1.0) * ins[2]
    simple = {"Relu": lambda: F.relu(ins[0]), "Add": lambda: ins[0] + ins[1],
              "MatMul": lambda: ins[0] @ ins[1],
              "Flatten": lambda: torch.flatten(ins[0], a.get("axis", 1)),
              "GlobalAveragePool": lambda: ins[0].mean(dim=(2, 3), keepdim=True),
              "MaxPool": lambda: F.max_pool2d(ins[0], a["kernel_shape"], a.get("strides"))}
    if op in simple:
        return simple[op]()
    raise NotImplementedError(f"the FT interpreter does not run {op}")


def fine_tune(module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int = 0) -> float:
    import torch
    torch.manual_seed(seed)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(xs))
        for s in range(0, len(xs), 32):
            batch = order[s:s + 32]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(module(xs[batch]), ys[batch]).backward()
            optimizer.step()
    return time.perf_counter() - start


def bdfix(model_path: Path, clean, trigger, work: Path) -> tuple[float, Path]:
    from onnx_bdfix.repair import RepairConfig, repair_model
    start = time.perf_counter()
    repair_model(model_path, clean, trigger, work / "fixed.onnx", RepairConfig(device="cpu"))
    return time.perf_counter() - start, work / "fixed.onnx"


def fixture_run(n: int, epochs: int) -> dict:
    import torch

    from onnx_bdfix.data import load_data, load_trigger
    from onnx_bdfix.evaluation import evaluate
    from onnx_bdfix.model import load_model, model_input
    folder = HERE.parent / "fixtures" / "cnn_badnets"
    proto = load_model(folder / "model.onnx").proto
    spec = model_input(proto)
    clean = load_data(folder / "clean.npz", spec).head(n)
    held_out = load_data(folder / "eval.npz", spec)
    trigger = load_trigger(folder / "trigger.npz", tuple(spec.sample_shape))
    module = torch_module(proto)
    ft_time = fine_tune(module, clean.x, clean.y, epochs)
    with torch.no_grad():
        logits = module(torch.from_numpy(held_out.x)).numpy()
        logits_t = module(torch.from_numpy(held_out.rows(trigger=trigger)[:])).numpy()
    others = held_out.y != 0
    ft = {"clean_accuracy": float((logits.argmax(1) == held_out.y).mean()),
          "attack_success_rate": float((logits_t[others].argmax(1) == 0).mean())}
    with tempfile.TemporaryDirectory() as work:
        fix_time, fixed = bdfix(folder / "model.onnx", clean, trigger, Path(work))
        after = evaluate(fixed, held_out, held_out.rows(trigger=trigger), 0, device="cpu")
        before = evaluate(folder / "model.onnx", held_out, held_out.rows(trigger=trigger), 0,
                          device="cpu")
    return {"ratio": ft_time / fix_time, "ft": ft, "bdfix": after.quality.as_dict(),
            "before": before.quality.as_dict()}


def resnet_run(epochs: int, n: int = 1000, timed_epochs: int = 2) -> dict:
    from models import resnet18

    from onnx_bdfix.data import Dataset, Trigger
    proto = resnet18()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(n, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, size=n)
    mask = np.zeros((3, 32, 32), np.float32)
    mask[:, -4:-1, -4:-1] = 1
    trigger = Trigger("blend", {"mask": mask, "pattern": np.ones_like(mask)}, "t", "t")
    with tempfile.TemporaryDirectory() as work:
        onnx.save(proto, Path(work) / "m.onnx")
        fix_time, _ = bdfix(Path(work) / "m.onnx", Dataset(x, None, "x", "x"), trigger,
                            Path(work))
    ft_time = fine_tune(torch_module(proto), x, y, timed_epochs) * epochs / timed_epochs
    return {"ratio": ft_time / fix_time}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(HERE.parent / "docs" / "finetune.md"))
    args = parser.parse_args()
    fixture = [fixture_run(args.n, args.epochs) for _ in range(args.repeats)]
    resnet = [resnet_run(args.epochs) for _ in range(args.repeats)]
    ratio = lambda runs: statistics.median(r["ratio"] for r in runs)  # noqa: E731
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    f, b = fixture[0], fixture[0]["before"]
    lines = ["# Fine-tuning baseline", "",
             f"Made with `python benchmarks/finetune.py {' '.join(sys.argv[1:])}` "
             f"({args.repeats} repeats, medians).", "",
             f"FT: {args.epochs} epochs of SGD on the labelled clean samples; onnx-bdfix: "
             "`repair` with the defaults and the known trigger. Same model, same samples.", "",
             "| model | clean samples | FT time / onnx-bdfix time | CA before → FT / onnx-bdfix "
             "| ASR before → FT / onnx-bdfix |", "|---|---|---|---|---|",
             f"| cnn_badnets (fixture) | {args.n} | {ratio(fixture):.1f} | "
             f"{pct(b['clean_accuracy'])} → {pct(f['ft']['clean_accuracy'])} / "
             f"{pct(f['bdfix']['clean_accuracy'])} | {pct(b['attack_success_rate'])} → "
             f"{pct(f['ft']['attack_success_rate'])} / {pct(f['bdfix']['attack_success_rate'])} |",
             f"| ResNet-18 size (random weights, timing only) | 1,000 | {ratio(resnet):.1f} | "
             "n/a | n/a |", "",
             "The ResNet-18 FT time is two timed epochs scaled to the epoch count."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
