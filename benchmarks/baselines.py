"""Published defenses beside onnx-bdfix, on the same zoo models (run by hand).

    python benchmarks/baselines.py --defenses clp        # no samples, no training
    pip install '.[baselines]'                           # torch, onnx2torch
    python benchmarks/baselines.py [--only NAMES] [--defenses ft,fp,ftsam] [--sizes 100,2500]

CLP (channel Lipschitzness-based pruning; Zheng et al., ECCV 2022) is the data-free one, in
onnx-bdfix's position: it reads the ONNX weights and nothing else, and runs once per model
(``clp_0``, :func:`channel_lipschitz_prune`).

The training-based ones get labelled samples, which onnx-bdfix never does. Each ONNX model is
converted to PyTorch with onnx2torch (checked for parity first), so every defense starts from
exactly the weights onnx-bdfix edits:
- FT (BackdoorBench): all weights trained on the labelled clean samples, SGD lr 0.01,
  momentum 0.9, weight decay 5e-4;
- FP (Fine-Pruning): the last convolution's channels pruned in order of their mean clean
  activation, until accuracy on the labelled samples falls under 90 % of what it was, then
  FT with the pruning kept;
- FT-SAM: FT with sharpness-aware minimization (rho 0.05).
Epochs: 100 at 100 samples, 20 at 2,500 (BackdoorBench gives 100; fewer here, for two CPU
cores: the page says so). Labelled samples: 100 from the pool onnx-bdfix repairs with, and
2,500 other test images that neither the pool nor the scoring set holds. onnx2torch imports
torchvision, and PyPI's torchvision does not import beside the torch 2.13.0 CPU build the
zoo pins ("operator torchvision::nms does not exist"): these three need an environment of
their own whose torch and torchvision match.

Results go to the zoo's results file; benchmarks/zoo_table.py --render-only puts them in
docs/benchmark.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "zoo"))

from build import cache_dir  # noqa: E402
from specs import BY_NAME, ZOO  # noqa: E402
from zoo_table import RESULTS, load_results, record  # noqa: E402

EPOCHS = {100: 100, 2500: 20}
DATA_FREE = {"clp"}       # run once per model, as ``clp_0``


def labelled(folder: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``size`` labelled clean samples in the model's input convention."""
    import datasets
    from train import convention
    spec = BY_NAME[folder.name]
    if size <= 500:
        with np.load(folder / "clean.npz") as stored:
            return (stored["x"][:size] * stored["scale"] + stored["offset"]).astype(
                np.float32), stored["y"][:size]
    x_test = datasets.test_set_rgb() if spec.data == "rgb" else \
        datasets.dataset("gray", 10, 0)[2]
    y_test = datasets.fashion()[3]
    order = np.random.default_rng(2024).permutation(len(x_test))[3500:3500 + size]
    return convention(x_test[order], spec.normalize, spec.nhwc), y_test[order]


def scoring(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clean x, labels, triggered x) of eval.npz in the model's input convention."""
    from store import load_images
    x, y = load_images(folder / "eval.npz")
    if (folder / "trigger.npz").is_file():
        from onnx_bdfix.data import load_trigger
        triggered = load_trigger(folder / "trigger.npz", tuple(x.shape[1:])).apply(x)
    else:
        triggered = load_images(folder / "eval_triggered.npz")[0]
    return x.astype(np.float32), y, triggered.astype(np.float32)


def explicit_pads(proto):
    """auto_pad SAME_* written out as pads (onnx2torch takes only explicit pads), from the
    shapes ONNX shape inference gives; the model computes the same thing."""
    import onnx
    from onnx import helper
    inferred = onnx.shape_inference.infer_shapes(proto)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.graph.value_info, *inferred.graph.input]}
    shapes.update({t.name: list(t.dims) for t in proto.graph.initializer})
    for node in proto.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        mode = attrs.get("auto_pad", b"NOTSET")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode not in ("SAME_UPPER", "SAME_LOWER"):
            continue
        spatial = shapes[node.input[0]][2:]
        kernel = attrs.get("kernel_shape") or shapes[node.input[1]][2:]
        strides = attrs.get("strides", [1] * len(spatial))
        begins, ends = [], []
        for size, k, s in zip(spatial, kernel, strides):
            total = max(0, (-(-size // s) - 1) * s + k - size)
            small, large = total // 2, total - total // 2
            begins.append(small if mode == "SAME_UPPER" else large)
            ends.append(large if mode == "SAME_UPPER" else small)
        kept = [a for a in node.attribute if a.name != "auto_pad"]
        del node.attribute[:]
        node.attribute.extend(kept + [helper.make_attribute("pads", begins + ends)])
    return proto


def convert(model_path: Path, x: np.ndarray):
    """The ONNX model as a trainable torch module, checked against ONNX Runtime."""
    import onnx
    import onnxruntime as ort
    import torch
    from onnx2torch import convert as to_torch
    proto = onnx.load(str(model_path))
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if opset > 17:                        # onnx2torch has no converters for some opset-18 ops
        proto = onnx.version_converter.convert_version(proto, 17)
    module = to_torch(explicit_pads(proto)).eval()      # BatchNorm on its running statistics
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: x[:32]})[0]
    with torch.no_grad():
        got = module(torch.from_numpy(x[:32])).numpy()
    if not np.allclose(got, expected, atol=1e-3, rtol=1e-3):
        raise RuntimeError(f"{model_path}: onnx2torch differs from ONNX Runtime by "
                           f"{np.abs(got - expected).max():.3g}")
    return module


def predict(module, x: np.ndarray) -> np.ndarray:
    """(N,) classes of ``x`` by a torch module."""
    import torch
    module.eval()
    with torch.no_grad():
        return np.concatenate([module(torch.from_numpy(x[i:i + 256])).numpy().argmax(1)
                               for i in range(0, len(x), 256)])


def onnx_classifier(proto):
    """x -> (N,) classes, by the library's ONNX Runtime runner on the CPU (which runs a
    model exported with a fixed batch in pieces)."""
    from onnx_bdfix.model.runtime import open_runner
    runner = open_runner(proto, "cpu")
    return lambda x: np.concatenate([runner.run(x[i:i + 256])[0].argmax(1)
                                     for i in range(0, len(x), 256)])


def figures(classify, scored, target: int) -> dict:
    """``classify``: x -> (N,) classes."""
    x, y, triggered = scored
    clean, landed = classify(x), classify(triggered)
    others, own = y != target, y == target
    return {"clean_accuracy": float((clean == y).mean()),
            "attack_success_rate": float((landed[others] == target).mean()),
            "target_class_accuracy": float((clean[own] == target).mean())}


CLP_U = 3.0     # the paper's default: a channel over mean + u standard deviations is pruned


def channel_lipschitz_prune(proto, u: float = CLP_U) -> tuple[int, int]:
    """CLP on an ONNX model, in place: in each convolution whose kernel is an initializer,
    the upper bound of every output channel's Lipschitz constant is the largest singular
    value of its kernel (in, kh·kw), times |γ/σ| of a BatchNormalization that follows it
    (exporters mostly fold that into the kernel already, which is the same product); the
    channels over the layer's mean by more than ``u`` standard deviations are zeroed
    (kernel rows and bias, and the BatchNormalization's scale and shift). Layers of fewer
    than 8 channels are left, as a spread of so few says nothing. (pruned, channels)."""
    from onnx import numpy_helper
    from onnx_bdfix.model.index import GraphIndex
    index = GraphIndex(proto)
    inits, users = index.initializers, index.consumers
    array = lambda name: numpy_helper.to_array(inits[name]).astype(np.float64)  # noqa: E731
    pruned = total = 0
    for conv in [n for n in proto.graph.node if n.op_type == "Conv" and n.input[1] in inits]:
        kernel = array(conv.input[1])                               # (out, in, kh, kw)
        if len(kernel) < 8:
            continue
        after = users.get(conv.output[0], [])
        norm = after[0] if len(after) == 1 and after[0].op_type == "BatchNormalization" \
            and all(name in inits for name in after[0].input[1:5]) else None
        scale = np.ones(len(kernel)) if norm is None else np.abs(
            array(norm.input[1]) / np.sqrt(array(norm.input[4]) + epsilon(norm)))
        bounds = scale * np.array([np.linalg.svd(k.reshape(len(k), -1), compute_uv=False)[0]
                                   for k in kernel])                # (out,)
        cut = np.flatnonzero(bounds > bounds.mean() + u * bounds.std())
        total += len(kernel)
        if len(cut):
            pruned += len(cut)
            names = [conv.input[1], *conv.input[2:3]] + \
                ([] if norm is None else [norm.input[1], norm.input[2]])
            for name in names:
                zeroed(inits[name], cut)
    return pruned, total


def epsilon(node) -> float:
    return next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)


def zeroed(init, channels: np.ndarray) -> None:
    """Set ``channels`` (the first axis) of an initializer to zero, in its own dtype."""
    from onnx import numpy_helper
    values = numpy_helper.to_array(init).copy()
    values[channels] = 0
    init.CopyFrom(numpy_helper.from_array(values, init.name))


def fine_tune(module, x, y, epochs: int, sam: bool = False, masks=None, seed: int = 0):
    """FT (or FT-SAM): SGD on the labelled samples; ``masks`` keep pruned weights at zero."""
    import torch
    import torch.nn.functional as F
    torch.manual_seed(seed)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
    batch = 32 if len(x) <= 500 else 128
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    rng = np.random.default_rng(seed)
    module.train()
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(x)))
        for start in range(0, len(x), batch):
            rows = order[start:start + batch]
            loss_step(module, optimizer, params, x_t[rows], y_t[rows], sam, F)
            if masks:
                with torch.no_grad():
                    for weight, mask in masks:
                        weight.mul_(mask)
    return module


def loss_step(module, optimizer, params, xb, yb, sam: bool, F, rho: float = 0.05) -> None:
    import torch
    optimizer.zero_grad()
    F.cross_entropy(module(xb), yb).backward()
    if sam:                                   # ascend to the worst nearby weights, then step
        with torch.no_grad():
            norm = torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
            moves = []
            for p in params:
                move = rho * p.grad / (norm + 1e-12) if p.grad is not None else None
                if move is not None:
                    p.add_(move)
                moves.append(move)
        optimizer.zero_grad()
        F.cross_entropy(module(xb), yb).backward()
        with torch.no_grad():
            for p, move in zip(params, moves):
                if move is not None:
                    p.sub_(move)
    optimizer.step()


def fine_prune(module, x, y, epochs: int, seed: int):
    """Prune the last convolution's least active channels (on clean x) while labelled
    accuracy stays over 90 % of its start, then fine-tune with the pruning kept."""
    import torch
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    if not convs:
        return fine_tune(module, x, y, epochs, seed=seed), 0
    last = convs[-1]
    seen = {}
    hook = last.register_forward_hook(lambda _, __, out: seen.update(a=out.detach()))
    start_accuracy = float((predict(module, x) == y).mean())
    hook.remove()
    activation = seen["a"].mean(dim=(0, 2, 3)) if seen["a"].ndim == 4 else seen["a"].mean(0)
    order = torch.argsort(activation)
    mask = torch.ones_like(last.weight)
    pruned = 0
    for count in range(len(order) // 20, len(order), max(1, len(order) // 20)):
        trial = torch.ones_like(last.weight)
        trial[order[:count]] = 0
        with torch.no_grad():
            saved = last.weight.clone()
            last.weight.mul_(trial)
            accuracy = float((predict(module, x) == y).mean())
            last.weight.copy_(saved)
        if accuracy < 0.9 * start_accuracy:
            break
        mask, pruned = trial, count
    with torch.no_grad():
        last.weight.mul_(mask)
    return fine_tune(module, x, y, epochs, masks=[(last.weight, mask)], seed=seed), pruned


def defend(name: str, folder: Path, defense: str, size: int, scored) -> dict:
    card = json.loads((folder / "card.json").read_text())
    if defense == "clp":
        return data_free(folder, card, scored)
    x, y = labelled(folder, size)
    module = convert(folder / "model.onnx", scored[0])
    start = time.perf_counter()
    extra = {}
    if defense == "fp":
        module, extra["pruned_channels"] = fine_prune(module, x, y, EPOCHS[size], card["seed"])
    else:
        module = fine_tune(module, x, y, EPOCHS[size], sam=defense == "ftsam",
                           seed=card["seed"])
    seconds = time.perf_counter() - start
    return {"mode": defense, "samples": size, "epochs": EPOCHS[size], "exit": 0,
            "seconds": round(seconds, 2),
            "after": figures(lambda x: predict(module, x), scored, card["target"]), **extra}


def data_free(folder: Path, card: dict, scored) -> dict:
    """CLP on the model as exported: no samples."""
    import onnx
    proto = onnx.load(str(folder / "model.onnx"))
    start = time.perf_counter()
    pruned, channels = channel_lipschitz_prune(proto)
    seconds = time.perf_counter() - start
    return {"mode": "clp", "samples": 0, "u": CLP_U, "exit": 0, "seconds": round(seconds, 2),
            "pruned_channels": pruned, "channels": channels,
            "after": figures(onnx_classifier(proto), scored, card["target"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=None)
    parser.add_argument("--only", default="")
    parser.add_argument("--defenses", default="ft,fp,ftsam")
    parser.add_argument("--sizes", default="100,2500")
    parser.add_argument("--retry-failed", action="store_true",
                        help="run again the defenses that failed before")
    args = parser.parse_args()
    cache = cache_dir(args.cache)
    results = load_results(cache / RESULTS)
    wanted = list(filter(None, args.only.split(",")))    # in the order given
    for spec in [BY_NAME[name] for name in wanted] if wanted else ZOO:
        folder = cache / spec.name
        if not (folder / "card.json").is_file():
            continue
        scored = None
        for defense in args.defenses.split(","):
            for size in [0] if defense in DATA_FREE else map(int, args.sizes.split(",")):
                run = f"{defense}_{size}"
                done = results.get((spec.name, run))
                if done is not None and not (args.retry_failed and done.get("exit")):
                    continue
                scored = scored or scoring(folder)
                try:
                    figures_ = defend(spec.name, folder, defense, size, scored)
                except Exception as exc:  # noqa: BLE001 - a failure is a row of the table
                    figures_ = {"mode": defense, "samples": size, "exit": 1,
                                "error": f"{type(exc).__name__}: {exc}"[:300], "seconds": 0}
                record(cache / RESULTS, results, spec.name, run, figures_)
                print(spec.name, run, figures_, flush=True)


if __name__ == "__main__":
    main()
