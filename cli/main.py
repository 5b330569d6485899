"""onnx-bdfix command line: inspect, repair, evaluate, scan, gate, diff, demo.

Exit codes: 0 ok; 1 scan found a backdoor or a gate check failed; 2 usage; 3 the model,
data, trigger, device or output path cannot be used;
4 internal error (a bug: rerun with --debug and report it).
"""
from __future__ import annotations

import functools
import json
import logging
import sys
import tempfile
import traceback
from pathlib import Path

import click

from onnx_bdfix import __version__
from onnx_bdfix.errors import BdfixError, InputError

EXIT_INPUT, EXIT_INTERNAL = 3, 4
log = logging.getLogger("onnx_bdfix")


# ------------------------------------------------------------------ shared plumbing
def fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def handles_errors(command):
    """Library errors become one line on stderr and a documented exit code."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        debug = click.get_current_context().find_root().params.get("debug", False)
        try:
            return command(*args, **kwargs)
        except click.ClickException:
            raise
        except InputError as exc:
            if debug:
                traceback.print_exc()
            fail(" ".join(str(exc).split()), EXIT_INPUT)
        except BdfixError as exc:
            if debug:
                traceback.print_exc()
            fail(f"internal error: {exc} (rerun with --debug and report it)", EXIT_INTERNAL)
        except MemoryError:
            fail("out of memory: lower --batch-size or use fewer samples", EXIT_INPUT)
        except Exception as exc:  # noqa: BLE001 - the last line of defence, by design
            if debug:
                traceback.print_exc()
            fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug)",
                 EXIT_INTERNAL)
    return wrapper


def progress_printer():
    """Progress on stderr, only when it is a terminal."""
    if not sys.stderr.isatty():
        return None

    def show(stage: str, done: int, total: int) -> None:
        end = "\n" if done >= total else ""
        click.echo(f"\r{stage}: {done}/{total}", err=True, nl=False)
        if end:
            click.echo("", err=True)
    return show


def device_option(command):
    return click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]),
                        default="auto", show_default=True,
                        help="Execution provider: CUDA when it loads (auto), or force one."
                        )(command)


def batch_option(command):
    return click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True,
                        help="Samples per ONNX Runtime batch (memory grows with it).")(command)


def output_option(command):
    return click.option("--output", "output_name", default=None,
                        help="Output holding class scores (default: the first float "
                             "(N, classes) output).")(command)


def image_options(command):
    """How to read a folder of images (ignored for .npz files)."""
    for option in reversed([
        click.option("--size", default=None, help="Resize images to HxW (default: model's)."),
        click.option("--layout", type=click.Choice(["NCHW", "NHWC"]), default="NCHW",
                     show_default=True, help="Layout of the model input, for image folders."),
        click.option("--scale", type=float, default=1 / 255, show_default=True,
                     help="Multiply pixel values (0..255) by this, for image folders."),
        click.option("--mean", default="0", show_default=True,
                     help="Per-channel mean to subtract after scaling, comma separated."),
        click.option("--std", default="1", show_default=True,
                     help="Per-channel std to divide by after the mean, comma separated.")]):
        command = option(command)
    return command


def evaluation_data_options(command):
    """--data, and the trigger as a file or as triggered copies."""
    for option in reversed([
        click.option("--data", required=True, type=click.Path(),
                     help="Evaluation samples: .npz (x[, y]) or a folder of images."),
        click.option("--trigger", type=click.Path(),
                     help="Trigger .npz: mask+pattern, or delta [, target_class]."),
        click.option("--triggered-data", type=click.Path(),
                     help="Triggered copies of the data (.npz, same order).")]):
        command = option(command)
    return command


def read_triggered(dataset, trigger, triggered_data):
    """(triggered rows or None, {path, sha256, kind} or None, the trigger file's target)."""
    from onnx_bdfix.triggers import load_trigger, load_triggered
    if trigger:
        loaded = load_trigger(trigger, dataset.raw.shape[1:])
        return dataset.rows(trigger=loaded), {"path": trigger, "sha256": loaded.sha256,
                                              "kind": loaded.kind}, loaded.target_class
    if triggered_data:
        copies = load_triggered(triggered_data, dataset)
        return copies.rows(), {"path": triggered_data, "sha256": copies.sha256,
                               "kind": "copies"}, None
    return None, None, None


def read_image_options(size, layout, scale, mean, std):
    from onnx_bdfix.data import ImageOptions
    try:
        parsed = tuple(int(v) for v in size.lower().split("x")) if size else None
        if parsed is not None and len(parsed) != 2:
            raise ValueError
        means = [float(v) for v in mean.split(",")]
        stds = [float(v) for v in std.split(",")]
    except ValueError:
        raise click.UsageError("--size takes HxW, --mean and --std comma-separated numbers")
    if any(s == 0 for s in stds):
        raise click.UsageError("--std values must not be zero")
    return ImageOptions(parsed, layout, scale, means, stds)


def load_inputs(model, data_path, images, what):
    from onnx_bdfix.data import load_data
    from onnx_bdfix.graph import load_model, model_input
    spec = model_input(load_model(model).proto)
    return spec, load_data(data_path, spec, images, what)


# ------------------------------------------------------------------------ commands
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onnx-bdfix")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-v", "--verbose", is_flag=True, help="Log what each step does.")
def main(debug: bool, verbose: bool) -> None:
    """Remove backdoors from exported ONNX classifiers by local weight edits."""
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


@main.command()
@click.argument("model", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@output_option
@click.option("--activations", "activations", type=click.Path(),
              help="Clean samples: also expose every intermediate tensor on a probe batch.")
@click.option("--trigger", type=click.Path(),
              help="With --activations: how far triggered activations part from clean ones.")
@click.option("--probe", type=click.IntRange(1), default=64, show_default=True,
              help="Samples in the probe batch for --activations.")
@device_option
@image_options
@handles_errors
def inspect(model, as_json, output_name, activations, trigger, probe, device, size, layout,
            scale, mean, std):
    """List the editable layers of MODEL in graph order, with their shapes."""
    from onnx_bdfix.inspect import describe_model
    info = describe_model(model, output_name)
    if activations:
        info["activations"] = activation_profile(model, activations, trigger, probe, device,
                                                 read_image_options(size, layout, scale, mean,
                                                                    std))
    elif trigger:
        raise click.UsageError("--trigger needs --activations CLEAN")
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"model: {model}  (opset {info['opset']}, input {info['input']['name']} "
               f"{info['input']['shape']}, scores "
               f"{info['score_output'] or 'not found: name them with --output'})")
    click.echo(f"{'#':>3}  {'layer':40} {'op':6} {'weight':16} {'d':>6} {'m':>5}  bypass  after")
    for index, layer in enumerate(info["layers"]):
        click.echo(f"{index:>3}  {layer['name'][:40]:40} {layer['op']:6} "
                   f"{layer['weight_shape']:16} {layer['key_dim']:>6} {layer['out_dim']:>5}  "
                   f"{ {True: 'yes', False: 'no', None: '?'}[layer['bypassed']]:6}  "
                   f"{layer['followed_by']}")
    if activations:
        print_activations(info["activations"])


def activation_profile(model, clean_path, trigger_path, probe, device, images) -> list[dict]:
    from onnx_bdfix.activations import profile
    from onnx_bdfix.graph import load_model
    from onnx_bdfix.triggers import load_trigger
    spec, clean = load_inputs(model, clean_path, images, "clean data")
    probe_x = clean.head(probe).x
    triggered = None
    if trigger_path:
        triggered = load_trigger(trigger_path, clean.raw.shape[1:]).apply(probe_x)
    rows = profile(load_model(model).proto, probe_x, triggered, probe, device)
    return [row.as_dict() for row in rows]


def print_activations(rows: list[dict]) -> None:
    click.echo(f"\n{'tensor':44} {'op':18} {'shape':14} {'mean|a|':>9} {'zeros':>6} "
               f"{'trig/clean':>10}  key of")
    for row in rows:
        shape = "x".join(map(str, row["shape"]))
        divergence = "" if row["divergence"] is None else f"{row['divergence']:.3g}"
        click.echo(f"{row['name'][:44]:44} {row['made_by'][:18]:18} {shape[:14]:14} "
                   f"{row['mean_abs']:9.3g} {row['zero_share']:6.1%} {divergence:>10}  "
                   f"{', '.join(row['key_of'])}")


@main.command()
@click.argument("model", type=click.Path())
@click.option("--clean", required=True, type=click.Path(),
              help="Clean samples: .npz (x[, y]) or a folder of images.")
@click.option("-o", "--out", required=True, type=click.Path(), help="Repaired model to write.")
@click.option("--trigger", type=click.Path(), help="Trigger .npz: mask+pattern, or delta.")
@click.option("--triggered", type=click.Path(),
              help="Triggered copies of the clean samples (.npz, same order).")
@click.option("--layers", default="auto", show_default=True,
              help="'auto', or comma-separated layer names (see inspect).")
@click.option("--target-class", type=int, default=None,
              help="Backdoor target class (default: read off the model).")
@click.option("--no-repair-step", is_flag=True,
              help="Do not protect the target class's clean samples.")
@output_option
@click.option("--report", type=click.Path(), help="Write the full report as JSON here.")
@device_option
@batch_option
@click.option("--eps", type=float, default=None, help="Ridge strength relative to the key scale.")
@click.option("--max-clean-drop", type=click.FloatRange(0, 1), default=0.01, show_default=True,
              help="Without a trigger: largest held-out loss of agreement with the original "
                   "model's clean answers that an edit may cost.")
@image_options
@handles_errors
def repair(model, clean, out, trigger, triggered, layers, target_class, no_repair_step,
           output_name, report, device, batch_size, eps, max_clean_drop, size, layout, scale,
           mean, std):
    """Repair MODEL; write and verify the repaired model at OUT.

    With --trigger or --triggered the trigger is known. Without either, onnx-bdfix runs in
    trigger-agnostic mode: it reconstructs the strongest small trigger with ONNX Runtime
    (patches, blends, waves), then repairs against it.
    """
    from onnx_bdfix.repair import Repair, RepairConfig
    from onnx_bdfix.triggers import load_trigger, load_triggered
    if trigger and triggered:
        raise click.UsageError("give at most one of --trigger T.npz or --triggered F.npz")
    images = read_image_options(size, layout, scale, mean, std)
    spec, clean_data = load_inputs(model, clean, images, "clean data")
    config = RepairConfig(layers="auto" if layers == "auto" else layers.split(","),
                          target_class=target_class, repair_step=not no_repair_step,
                          output=output_name, device=device, batch_size=batch_size)
    if eps is not None:
        config.eps = eps
    if not trigger and not triggered:
        from onnx_bdfix.agnostic import agnostic_repair
        click.echo("trigger-agnostic mode: no trigger given, reconstructing one", err=True)
        result, found = agnostic_repair(model, clean_data, out, config, max_clean_drop,
                                        progress_printer())
        click.echo(f"scan: {found.verdict}; repaired against the strongest trigger found, "
                   f"{found.best(result.target_class).trigger.source!r} into class "
                   f"{result.target_class}")
    else:
        triggered_data = load_trigger(trigger, clean_data.raw.shape[1:]) if trigger \
            else load_triggered(triggered, clean_data)
        result = Repair(config, progress_printer()).run(model, clean_data, triggered_data, out)
    if report:
        Path(report).write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    print_repair(result)


def print_repair(result) -> None:
    click.echo(f"repaired {result.model} -> {result.output_model} on {result.provider}")
    click.echo(f"target class {result.target_class} ({result.target_class_source})")
    click.echo(f"edited: {', '.join(result.chosen)}")
    click.echo(f"why: {result.choice_reason}")
    parity = result.parity
    click.echo(f"parity on clean samples: {parity['agreement']:.1%} same class, largest "
               f"score change {parity['max_score_change']:.4g}")
    click.echo(quality_table(result.before, result.after))


def quality_table(before: dict, after: dict) -> str:
    def cell(value):
        return "n/a" if value is None else f"{100 * value:.1f}%"
    rows = [("clean accuracy", "clean_accuracy"), ("attack success", "attack_success_rate"),
            ("target-class accuracy", "target_class_accuracy")]
    lines = [f"{'':24}{'before':>10}{'after':>10}"]
    lines += [f"{label:24}{cell(before[key]):>10}{cell(after[key]):>10}" for label, key in rows]
    return "\n".join(lines)


@main.command()
@click.argument("model", type=click.Path())
@evaluation_data_options
@click.option("--target-class", type=int, default=None,
              help="Backdoor target class (default: read off the model).")
@output_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@device_option
@batch_option
@image_options
@handles_errors
def evaluate(model, data, trigger, triggered_data, target_class, output_name, as_json, device,
             batch_size, size, layout, scale, mean, std):
    """Clean accuracy, attack success rate and target-class accuracy of MODEL."""
    from onnx_bdfix.verify import evaluate as evaluate_model
    if bool(trigger) == bool(triggered_data):
        raise click.UsageError("give exactly one of --trigger T.npz or --triggered-data F.npz")
    images = read_image_options(size, layout, scale, mean, std)
    _, dataset = load_inputs(model, data, images, "data")
    triggered_x, _, declared = read_triggered(dataset, trigger, triggered_data)
    target_class = declared if target_class is None else target_class
    result = evaluate_model(model, dataset, triggered_x, target_class, output_name, device,
                            batch_size, progress_printer())
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    q = result.quality
    cell = lambda v: "n/a" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    click.echo(f"samples               {q.samples}")
    click.echo(f"clean accuracy        {cell(q.clean_accuracy)}"
               + ("" if dataset.y is not None else "  (no labels: agreement with itself)"))
    click.echo(f"attack success rate   {cell(q.attack_success_rate)}")
    click.echo(f"target class          {result.target_class} ({result.target_class_source})")
    click.echo(f"target-class accuracy {cell(q.target_class_accuracy)}")


@main.command()
@click.argument("model", type=click.Path())
@click.option("--clean", required=True, type=click.Path(),
              help="Clean samples (no labels needed): .npz or a folder of images.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@click.option("--probe", type=click.IntRange(8), default=64, show_default=True,
              help="Clean samples the reconstructed triggers are tried on.")
@output_option
@device_option
@image_options
@handles_errors
def scan(model, clean, as_json, probe, output_name, device, size, layout, scale, mean, std):
    """Scan MODEL for a backdoor without labels or trigger. Exit 1 when suspicious."""
    from onnx_bdfix.scan import scan as scan_model
    _, clean_data = load_inputs(model, clean, read_image_options(size, layout, scale, mean,
                                                                 std), "clean data")
    result = scan_model(model, clean_data, output_name, device, probe)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        click.echo(f"{'class':>5}  {'suspicion':>9}  strongest trigger found")
        for row in result.classes:
            mark = "  <- suspected target" if row["class"] == result.suspected_class else ""
            click.echo(f"{row['class']:>5}  {row['suspicion']:>9.1%}  {row['trigger']}{mark}")
        click.echo(f"verdict: {result.verdict.upper()} (alarm at {result.threshold:.0%} of "
                   f"probe samples sent to one class)")
    sys.exit(1 if result.suspicious else 0)


@main.command()
@click.argument("model", type=click.Path())
@evaluation_data_options
@click.option("--target-class", type=int, default=None,
              help="Backdoor target class (default: the trigger file's, else inferred).")
@click.option("--max-asr", type=click.FloatRange(0, 1), default=0.05, show_default=True,
              help="Largest attack success rate that passes.")
@click.option("--min-accuracy", type=click.FloatRange(0, 1), default=None,
              help="Smallest clean accuracy that passes (needs labels).")
@click.option("--reference", type=click.Path(),
              help="Reference model (e.g. the last release, or the original before repair).")
@click.option("--max-accuracy-drop", type=click.FloatRange(0, 1), default=None,
              help="With --reference: largest accuracy drop against it that passes "
                   "[default: 0.02].")
@click.option("--scan", "run_scan", is_flag=True,
              help="Also run the label-free backdoor scan; an alarm fails the gate.")
@click.option("--clean", type=click.Path(),
              help="With --scan: clean samples to scan with (default: --data).")
@click.option("--junit", type=click.Path(), help="Write JUnit XML here.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the result as JSON (docs/gate.md) on stdout; the verdict line "
                   "goes to stderr.")
@click.option("--html", "html_path", type=click.Path(),
              help="Write a one-page HTML report here (needs onnx-bdfix[report]).")
@output_option
@device_option
@batch_option
@image_options
@handles_errors
def gate(model, data, trigger, triggered_data, target_class, max_asr, min_accuracy, reference,
         max_accuracy_drop, run_scan, clean, junit, as_json, html_path, output_name, device,
         batch_size, size, layout, scale, mean, std):
    """Release gate: check MODEL's accuracy, attack success rate, drop against a reference,
    scan verdict and structure. Ends with PASSED or FAILED; exit 0 pass, 1 a check failed,
    2 usage, 3 the model or data cannot be used."""
    from onnx_bdfix.gate import GateOptions, run_gate
    from onnx_bdfix.gate_report import html_report, junit_xml, write_file
    from onnx_bdfix.graph import check_output_path
    if trigger and triggered_data:
        raise click.UsageError("give at most one of --trigger T.npz or --triggered-data F.npz")
    if max_accuracy_drop is not None and not reference:
        raise click.UsageError("--max-accuracy-drop needs --reference REF.onnx")
    if clean and not run_scan:
        raise click.UsageError("--clean is the scan's data: give it with --scan")
    if not (trigger or triggered_data or min_accuracy is not None or reference or run_scan):
        raise click.UsageError("nothing to check: give a trigger (--trigger or "
                               "--triggered-data), --min-accuracy, --reference or --scan")
    if junit and html_path and Path(junit).resolve() == Path(html_path).resolve():
        raise click.UsageError("--junit and --html must name different files")
    inputs = [model, data, trigger, triggered_data, reference, clean]
    for report_path in (junit, html_path):
        if report_path:
            check_output_path(report_path, inputs, "report")
    images = read_image_options(size, layout, scale, mean, std)
    spec, dataset = load_inputs(model, data, images, "data")
    triggered, trigger_info, declared = read_triggered(dataset, trigger, triggered_data)
    target_source = "given"
    if target_class is None and declared is not None:
        target_class, target_source = declared, "given in the trigger file"
    scan_data = load_inputs(model, clean, images, "clean data")[1] if clean else None
    options = GateOptions(max_asr=max_asr, min_accuracy=min_accuracy, reference=reference,
                          scan=run_scan, target_class=target_class,
                          target_class_source=target_source, output=output_name,
                          device=device, batch_size=batch_size, activations=bool(html_path))
    if max_accuracy_drop is not None:
        options.max_accuracy_drop = max_accuracy_drop
    result = run_gate(model, dataset, triggered, options, trigger_info, scan_data,
                      progress_printer())
    if junit:
        write_file(junit, junit_xml(result))
    if html_path:
        write_file(html_path, html_report(result).encode())
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        click.echo(result.summary(), err=True)
    else:
        print_gate(result)
    sys.exit(0 if result.passed else 1)


def print_gate(result) -> None:
    def cell(value):
        return "" if value is None else f"{value:.4g}"
    click.echo(f"gate: {result.model.path} on {result.data['path']} "
               f"({result.data['samples']} samples, {result.provider})")
    click.echo(f"{'check':20} {'status':8} {'value':>8} {'limit':>8}  detail")
    for check in result.checks:
        click.echo(f"{check.name:20} {check.status.upper():8} {cell(check.value):>8} "
                   f"{cell(check.limit):>8}  {check.message}")
    click.echo(result.summary())


@main.command()
@click.argument("model_a", type=click.Path())
@click.argument("model_b", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@handles_errors
def diff(model_a, model_b, as_json):
    """List what differs between two models: structure, and each changed initializer."""
    from onnx_bdfix.diff import diff_models
    result = diff_models(model_a, model_b)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    for line in result.structure:
        click.echo(f"structure: {line}")
    for change in result.initializers:
        figures = "" if change.max_abs_change is None else \
            f"  max |change| {change.max_abs_change:.4g}, relative " + \
            ("n/a" if change.relative_change is None else f"{change.relative_change:.3%}")
        shape = "x".join(map(str, change.shape))
        click.echo(f"initializer {change.status}: {change.name} ({shape}){figures}")
    for line in result.metadata:
        click.echo(f"metadata {line}")
    click.echo("only weights differ" if result.weights_only else "the structure differs")


@main.command()
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@handles_errors
def demo(device: str, as_json: bool) -> None:
    """Repair a bundled backdoored model and show CA / ASR before and after."""
    from onnx_bdfix.demo import run_demo
    with tempfile.TemporaryDirectory() as workdir:
        result = run_demo(Path(workdir), device, progress_printer())
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"demo: {result['model']}")
    click.echo(f"repaired with {result['clean_samples']} clean samples, scored on "
               f"{result['eval_samples']} others ({result['provider']})")
    click.echo(f"edited layers: {', '.join(result['layers'])}; target class "
               f"{result['target_class']} (read off the model: {result['inferred_target_class']})")
    click.echo(quality_table(result["before"], result["after"]))
