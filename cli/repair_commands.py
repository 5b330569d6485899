"""Commands that write a repaired model: ``repair`` and ``demo``."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from onnx_bdfix.agnostic import agnostic_repair
from onnx_bdfix.data import load_data, load_trigger, load_triggered
from onnx_bdfix.demo import run_demo
from onnx_bdfix.errors import RepairShortfall
from onnx_bdfix.model import load_model
from onnx_bdfix.output import check_output_path, write_atomic
from onnx_bdfix.repair import RepairConfig, repair_model

from .options import (
    device_option,
    distinct_outputs,
    search_image_options,
    output_option,
    runtime_options,
)
from .progress import progress_display


@click.command()
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
              help="Backdoor target class (default: the trigger file's, else read off the "
                   "model).")
@click.option("--no-repair-step", is_flag=True,
              help="Do not protect the target class's clean samples.")
@output_option
@click.option("--report", type=click.Path(), help="Write the full report as JSON here.")
@runtime_options()
@click.option("--eps", type=float, default=None, help="Ridge strength relative to the key scale.")
@click.option("--max-clean-drop", type=click.FloatRange(0, 1), default=0.01, show_default=True,
              help="Largest held-out loss of clean accuracy an edit may cost, estimated "
                   "without labels from the original model's own class probabilities.")
@click.option("--fallback-clean-drop", type=click.FloatRange(0, 1), default=None,
              help="Trigger-agnostic repair of a suspected class only: when no edit within "
                   "--max-clean-drop removes the reconstructed triggers on held-out "
                   "samples, one within this wider bound that does may be written "
                   "(default 0.02; 0 for none).")
@click.option("--max-asr", type=click.FloatRange(0, 1), default=0.02, show_default=True,
              help="Held-out attack success an edit must reach. With a known trigger, "
                   "when no edit within --max-clean-drop reaches it, nothing is written "
                   "and the exit code is 1.")
@click.option("--max-target-erosion", type=click.FloatRange(min=0), default=0.25,
              show_default=True,
              help="Largest share of the target (or suspected) class's median logit "
                   "margin an edit may take on held-out samples (the class a repair must "
                   "keep, which few clean samples show; above 1 the margin may turn "
                   "negative).")
@click.option("--shifted-copies", type=click.IntRange(0, 4), default=None,
              help="With a known trigger: copies of each clean image, moved one pixel "
                   "(down, up, right, left), fitted on too, with the trigger applied to "
                   "them (triggered copies shifted alike). Default: 4 while samples and "
                   "copies stay within 512, fewer above; 0 for none. Images only.")
@search_image_options
def repair(model, clean, out, trigger, triggered, layers, target_class, no_repair_step,
           output_name, report, runtime, eps, max_clean_drop, fallback_clean_drop, max_asr,
           max_target_erosion, shifted_copies, images):
    """Repair MODEL; write and verify the repaired model at OUT.

    With --trigger or --triggered the trigger is known. Without either, onnx-bdfix runs in
    trigger-agnostic mode: it reconstructs the strongest small triggers with ONNX Runtime
    (patches, blends and waves from a menu, refined patches, and blends, smooth warps and
    colour fields optimized per class), then repairs against them.

    Without a trigger, a suspected class's edit may cost up to --fallback-clean-drop when
    none within --max-clean-drop removes the reconstructions; a model the scan calls clean
    is held to --max-clean-drop.

    Exit 0: repaired and written. Exit 1 (known trigger): no edit within --max-clean-drop
    and --max-target-erosion brings held-out attack success to --max-asr; no model is
    written, and the line says what the best edit would leave and which --max-clean-drop
    (or --max-target-erosion) would allow one that meets it. --report is still written:
    every candidate and its held-out figures, with output_model, parity and after null.
    """
    if trigger and triggered:
        raise click.UsageError("give at most one of --trigger T.npz or --triggered F.npz")
    if (trigger or triggered) and fallback_clean_drop is not None:
        raise click.UsageError("--fallback-clean-drop is for trigger-agnostic repair; with "
                               "the trigger known, --max-clean-drop is the bound")
    inputs = [model, clean, trigger, triggered]
    distinct_outputs({"--out": out, "--report": report})
    if report:
        check_output_path(report, inputs, "report")
    loaded = load_model(model)
    clean_data = load_data(clean, loaded, images, "clean data")
    config = RepairConfig(layers="auto" if layers == "auto" else layers.split(","),
                          target_class=target_class, repair_step=not no_repair_step,
                          output=output_name, device=runtime.device,
                          batch_size=runtime.batch_size, max_clean_drop=max_clean_drop,
                          max_asr=max_asr, max_target_erosion=max_target_erosion,
                          shifted_copies=shifted_copies, fallback_clean_drop=fallback_clean_drop)
    if eps is not None:
        config.eps = eps
    if not trigger and not triggered:
        click.echo("trigger-agnostic mode: no trigger given, reconstructing one", err=True)
        result, found = agnostic_repair(loaded, clean_data, out, config, progress_display())
        click.echo(f"scan: {found.verdict}; repaired against the strongest trigger found, "
                   f"{found.best(result.target_class).trigger.source!r} into class "
                   f"{result.target_class}")
    else:
        known = load_trigger(trigger, tuple(clean_data.raw.shape[1:])) if trigger \
            else load_triggered(triggered, clean_data)
        try:
            result = repair_model(loaded, clean_data, known, out, config, progress_display())
        except RepairShortfall as refused:          # the report says why nothing was written
            if report and refused.report is not None:
                write_atomic(report, json.dumps(refused.report, indent=2) + "\n")
            raise
    if report:
        write_atomic(report, json.dumps(result.as_dict(), indent=2) + "\n")
    print_repair(result)


def print_repair(result) -> None:
    click.echo(f"repaired {result.model} -> {result.output_model} on {result.provider}")
    click.echo(f"target class {result.target_class} ({result.target_class_source})")
    if result.shifted_copies:
        click.echo(f"fitted on the clean samples and {result.shifted_copies} shifted "
                   "copies of each")
    step = result.repair_step
    if step["enabled"]:
        click.echo(f"repair step: {step['target_samples']} of the clean samples are in the "
                   f"target class (their keys weigh {step['target_key_weight']:g})")
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


@click.command()
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def demo(device: str, as_json: bool) -> None:
    """Repair a bundled backdoored model and show CA / ASR before and after."""
    with tempfile.TemporaryDirectory() as workdir:
        result = run_demo(Path(workdir), device, progress_display())
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"demo: {result['model']}")
    click.echo(f"repaired with {result['clean_samples']} clean samples, scored on "
               f"{result['eval_samples']} others ({result['provider']})")
    click.echo(f"edited layers: {', '.join(result['layers'])}; target class "
               f"{result['target_class']} (read off the model: {result['inferred_target_class']})")
    click.echo(quality_table(result["before"], result["after"]))


COMMANDS = [repair, demo]
