"""Read-only commands on models: ``inspect`` and ``diff``."""
from __future__ import annotations

import json

import click

from onnx_bdfix.activations import profile
from onnx_bdfix.data import load_data, load_trigger
from onnx_bdfix.diff import diff_models
from onnx_bdfix.inspect import describe_model
from onnx_bdfix.model import LoadedModel, load_model

from .options import Runtime, image_options, output_option, runtime_options


@click.command()
@click.argument("model", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@output_option
@click.option("--activations", "activations", type=click.Path(),
              help="Clean samples: also expose every intermediate tensor on a probe batch.")
@click.option("--trigger", type=click.Path(),
              help="With --activations: how far triggered activations part from clean ones.")
@click.option("--probe", type=click.IntRange(1), default=64, show_default=True,
              help="Samples in the probe batch for --activations.")
@runtime_options()
@image_options
def inspect(model, as_json, output_name, activations, trigger, probe, runtime, images):
    """List the editable layers of MODEL in graph order, with their shapes."""
    if trigger and not activations:
        raise click.UsageError("--trigger needs --activations CLEAN")
    loaded = load_model(model)
    info = describe_model(loaded, output_name)
    if activations:
        info["activations"] = activation_profile(loaded, activations, trigger, probe, runtime,
                                                 images)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    print_layers(model, info)
    if activations:
        print_activations(info["activations"])


def activation_profile(loaded: LoadedModel, clean_path, trigger_path, probe: int,
                       runtime: Runtime, images) -> list[dict]:
    clean = load_data(clean_path, loaded, images, "clean data")
    probe_x = clean.head(probe).x
    triggered = None
    if trigger_path:
        triggered = load_trigger(trigger_path, tuple(clean.raw.shape[1:])).apply(probe_x)
    return [row.as_dict() for row in profile(loaded, probe_x, triggered, probe,
                                             runtime.device)]


def print_layers(model, info: dict) -> None:
    click.echo(f"model: {model}  (opset {info['opset']}, input {info['input']['name']} "
               f"{info['input']['shape']}, scores "
               f"{info['score_output'] or 'not found: name them with --output'})")
    click.echo(f"{'#':>3}  {'layer':40} {'op':6} {'weight':16} {'d':>6} {'m':>5}  bypass  after")
    for index, layer in enumerate(info["layers"]):
        bypass = {True: "yes", False: "no", None: "?"}[layer["bypassed"]]
        weight = layer["weight_shape"] + (" (T)" if layer["weight_transposed"] else "")
        click.echo(f"{index:>3}  {layer['name'][:40]:40} {layer['op']:6} "
                   f"{weight:16} {layer['key_dim']:>6} {layer['out_dim']:>5}  "
                   f"{bypass:6}  {layer['followed_by']}")


def print_activations(rows: list[dict]) -> None:
    click.echo(f"\n{'tensor':44} {'op':18} {'shape':14} {'mean|a|':>9} {'zeros':>6} "
               f"{'trig/clean':>10}  key of")
    for row in rows:
        shape = "x".join(map(str, row["shape"]))
        divergence = "" if row["divergence"] is None else f"{row['divergence']:.3g}"
        click.echo(f"{row['name'][:44]:44} {row['made_by'][:18]:18} {shape[:14]:14} "
                   f"{row['mean_abs']:9.3g} {row['zero_share']:6.1%} {divergence:>10}  "
                   f"{', '.join(row['key_of'])}")


@click.command()
@click.argument("model_a", type=click.Path())
@click.argument("model_b", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def diff(model_a, model_b, as_json):
    """List what differs between two models: structure, and each changed initializer."""
    result = diff_models(load_model(model_a), load_model(model_b))
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


COMMANDS = [inspect, diff]
