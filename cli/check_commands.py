"""Commands that judge a model: ``evaluate``, ``scan`` and the release ``gate``."""
from __future__ import annotations

import json

import click

from onnx_bdfix.agnostic import scan_model
from onnx_bdfix.data import load_data
from onnx_bdfix.evaluation import evaluate as evaluate_model
from onnx_bdfix.gate import GateOptions, run_gate
from onnx_bdfix.gate.report import html_report, junit_xml
from onnx_bdfix.model import load_model
from onnx_bdfix.output import check_output_path, write_atomic

from .options import (
    distinct_outputs,
    evaluation_options,
    image_options,
    search_image_options,
    output_option,
    runtime_options,
)
from .progress import progress_display


@click.command()
@click.argument("model", type=click.Path())
@evaluation_options
@click.option("--target-class", type=int, default=None,
              help="Backdoor target class (default: the trigger file's, else read off the "
                   "model).")
@output_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@runtime_options(256)
@image_options
def evaluate(model, evaluation, target_class, output_name, as_json, runtime, images):
    """Clean accuracy, attack success rate and target-class accuracy of MODEL."""
    if not evaluation.trigger and not evaluation.triggered_data:
        raise click.UsageError("give exactly one of --trigger T.npz or --triggered-data F.npz")
    loaded = load_model(model)
    dataset, triggered = evaluation.load(loaded, images)
    result = evaluate_model(loaded, dataset, triggered, target_class, output_name,
                            runtime.device, runtime.batch_size, progress_display())
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    q = result.quality
    cell = lambda v: "n/a" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    click.echo(f"samples               {q.samples}")
    click.echo(f"clean accuracy        {cell(q.clean_accuracy)}"
               + ("" if dataset.y is not None else "  (no labels: agreement with itself)"))
    click.echo(f"attack success rate   {cell(q.attack_success_rate)}")
    if result.target_confusion is not None:
        click.echo(f"  floor (no trigger)  {cell(result.target_confusion)} of other classes' "
                   "samples are put in the target class clean")
    click.echo(f"target class          {result.target_class} ({result.target_class_source})")
    click.echo(f"target-class accuracy {cell(q.target_class_accuracy)}")


@click.command()
@click.argument("model", type=click.Path())
@click.option("--clean", required=True, type=click.Path(),
              help="Clean samples (no labels needed): .npz or a folder of images.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@click.option("--probe", type=click.IntRange(8), default=64, show_default=True,
              help="Clean samples the reconstructed triggers are tried on.")
@click.option("--budget", type=click.IntRange(0), default=200_000, show_default=True,
              help="Image evaluations the trigger search may make: at least the fixed menu's "
                   "(a smaller budget is refused with that figure); the patch refinement "
                   "and the optimized blends and warps get what it leaves.")
@output_option
@runtime_options()
@search_image_options
@click.pass_context
def scan(ctx, model, clean, as_json, probe, budget, output_name, runtime, images):
    """Scan MODEL for a backdoor without labels or trigger. Exit 1 when suspicious."""
    loaded = load_model(model)
    clean_data = load_data(clean, loaded, images, "clean data")
    result = scan_model(loaded, clean_data, output_name, runtime.device, probe, budget=budget)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        click.echo(f"{'class':>5}  {'suspicion':>9}  strongest trigger found")
        for row in result.classes:
            mark = "  <- suspected target" if row["class"] == result.suspected_class else ""
            click.echo(f"{row['class']:>5}  {row['suspicion']:>9.1%}  {row['trigger']}{mark}")
        spent = result.evaluations
        click.echo(f"image evaluations: {spent.total:,} (menu {spent.menu:,}, patch "
                   f"refinement {spent.refine:,}, optimized blends, warps and colour fields "
                   f"{sum(spent.optimized.values()):,} over {len(spent.optimized)} classes)")
        click.echo(f"verdict: {result.verdict.upper()} (alarm at {result.threshold:.0%} of "
                   f"probe samples sent to one class)")
    ctx.exit(1 if result.suspicious else 0)


@click.command()
@click.argument("model", type=click.Path())
@evaluation_options
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
@runtime_options(256)
@search_image_options
@click.pass_context
def gate(ctx, model, evaluation, target_class, max_asr, min_accuracy, reference,
         max_accuracy_drop, run_scan, clean, junit, as_json, html_path, output_name, runtime,
         images):
    """Release gate: check MODEL's accuracy, attack success rate, drop against a reference,
    scan verdict and structure. Ends with PASSED or FAILED; exit 0 pass, 1 a check failed,
    2 usage, 3 the model or data cannot be used."""
    check_gate_usage(evaluation, min_accuracy, reference, max_accuracy_drop, run_scan, clean)
    distinct_outputs({"--junit": junit, "--html": html_path})
    inputs = [model, reference, clean, *evaluation.paths]
    for report_path in (junit, html_path):
        if report_path:
            check_output_path(report_path, inputs, "report")
    loaded = load_model(model)
    dataset, triggered = evaluation.load(loaded, images)
    scan_data = load_data(clean, loaded, images, "clean data") if clean else None
    options = GateOptions(max_asr=max_asr, min_accuracy=min_accuracy, reference=reference,
                          scan=run_scan, target_class=target_class, output=output_name,
                          device=runtime.device, batch_size=runtime.batch_size,
                          activations=bool(html_path))
    if max_accuracy_drop is not None:
        options.max_accuracy_drop = max_accuracy_drop
    result = run_gate(loaded, dataset, triggered, options, scan_data, progress_display(),
                      load_model(reference) if reference else None)
    if junit:
        write_atomic(junit, junit_xml(result))
    if html_path:
        write_atomic(html_path, html_report(result))
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        click.echo(result.summary(), err=True)
    else:
        print_gate(result)
    ctx.exit(0 if result.passed else 1)


def check_gate_usage(evaluation, min_accuracy, reference, max_accuracy_drop, run_scan,
                     clean) -> None:
    if max_accuracy_drop is not None and not reference:
        raise click.UsageError("--max-accuracy-drop needs --reference REF.onnx")
    if clean and not run_scan:
        raise click.UsageError("--clean is the scan's data: give it with --scan")
    if not (evaluation.trigger or evaluation.triggered_data or min_accuracy is not None
            or reference or run_scan):
        raise click.UsageError("nothing to check: give a trigger (--trigger or "
                               "--triggered-data), --min-accuracy, --reference or --scan")


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


COMMANDS = [evaluate, scan, gate]
