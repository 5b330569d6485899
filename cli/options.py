"""Option groups shared by the commands. Each group is a decorator that adds its options and
hands the command one object built from them (``images``, ``runtime``, ``evaluation``), so
no signature threads them one by one."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import click

from onnx_bdfix.data import Dataset, ImageOptions, load_data, load_trigger, load_triggered
from onnx_bdfix.errors import OutputPathError
from onnx_bdfix.model import LoadedModel
from onnx_bdfix.output import check_distinct


def option_group(name: str, build, entries: list[tuple[str, object]]):
    """A decorator that adds the options of ``entries`` ([(parameter, click.option)]) and
    passes ``build(**their values)`` to the command as the keyword ``name``."""
    def decorate(command):
        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            kwargs[name] = build(**{key: kwargs.pop(key) for key, _ in entries})
            return command(*args, **kwargs)
        for _, option in reversed(entries):
            wrapper = option(wrapper)
        return wrapper
    return decorate


# ------------------------------------------------------------------------ images
def read_image_options(size, layout, scale, mean, std, input_range=None) -> ImageOptions:
    try:
        parsed = tuple(int(v) for v in size.lower().split("x")) if size else None
        if parsed is not None and (len(parsed) != 2 or min(parsed) < 1):
            raise ValueError
        means = [float(v) for v in mean.split(",")]
        stds = [float(v) for v in std.split(",")]
        span = [float(v) for v in input_range.split(",")] if input_range else None
        if span is not None and len(span) % 2:
            raise ValueError
    except ValueError:
        raise click.UsageError("--size takes HxW (positive), --mean and --std "
                               "comma-separated numbers, --input-range pairs low,high") from None
    if any(s == 0 for s in stds):
        raise click.UsageError("--std values must not be zero")
    return ImageOptions(parsed, layout, scale, means, stds, span)


image_options_entries = [
    ("size", click.option("--size", default=None,
                          help="Resize images to HxW (default: model's).")),
    ("layout", click.option("--layout", type=click.Choice(["NCHW", "NHWC"]), default="NCHW",
                            show_default=True, help="Layout of the model input, for image "
                            "folders.")),
    ("scale", click.option("--scale", type=float, default=None,
                           help="Multiply pixel values (0..255) by this, for image folders "
                                "(default: 1/255; 1 for a model that takes integer pixels).")),
    ("mean", click.option("--mean", default="0", show_default=True,
                          help="Per-channel mean to subtract after scaling, comma separated.")),
    ("std", click.option("--std", default="1", show_default=True,
                         help="Per-channel std to divide by after the mean, comma separated.")),
]
image_options = option_group("images", read_image_options, image_options_entries)

# the commands that reconstruct triggers also take the input's valid range
search_image_options = option_group("images", read_image_options, [
    *image_options_entries,
    ("input_range", click.option(
        "--input-range", default=None,
        help="Valid range of the model's input, in its own scale, for reconstructed "
             "triggers: LOW,HIGH, or one pair per channel (default: from --scale/--mean/--std "
             "for image folders, from scale and offset for 8-bit .npz, else the clean "
             "samples' own range).")),
])


# ----------------------------------------------------------------------- runtime
@dataclass(frozen=True)
class Runtime:
    device: str
    batch_size: int


device_option = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]),
                             default="auto", show_default=True,
                             help="Execution provider: CUDA when it loads (auto), or force one.")


def runtime_options(default_batch: int = 64):
    return option_group("runtime", Runtime, [
        ("device", device_option),
        ("batch_size", click.option("--batch-size", type=click.IntRange(1),
                                    default=default_batch, show_default=True,
                                    help="Samples per ONNX Runtime batch (memory grows with "
                                         "it).")),
    ])


def output_option(command):
    return click.option("--output", "output_name", default=None,
                        help="Output holding class scores (default: the first float "
                             "(N, classes) output).")(command)


# -------------------------------------------------------------- evaluation data
@dataclass(frozen=True)
class EvaluationInputs:
    """--data and the trigger, as a file or as triggered copies of the data."""
    data: str
    trigger: str | None
    triggered_data: str | None

    @property
    def paths(self) -> list[str]:
        return [p for p in (self.data, self.trigger, self.triggered_data) if p]

    def load(self, model: LoadedModel, images: ImageOptions) -> tuple[Dataset, object]:
        """The data, and the trigger or the triggered copies (None when neither is given)."""
        dataset = load_data(self.data, model, images, "data")
        if self.trigger:
            return dataset, load_trigger(self.trigger, tuple(dataset.raw.shape[1:]))
        if self.triggered_data:
            return dataset, load_triggered(self.triggered_data, dataset)
        return dataset, None


def _evaluation(data, trigger, triggered_data) -> EvaluationInputs:
    if trigger and triggered_data:
        raise click.UsageError("give at most one of --trigger T.npz or --triggered-data F.npz")
    return EvaluationInputs(data, trigger, triggered_data)


evaluation_options = option_group("evaluation", _evaluation, [
    ("data", click.option("--data", required=True, type=click.Path(),
                          help="Evaluation samples: .npz (x[, y]) or a folder of images.")),
    ("trigger", click.option("--trigger", type=click.Path(),
                             help="Trigger .npz: mask+pattern, or delta [, target_class].")),
    ("triggered_data", click.option("--triggered-data", type=click.Path(),
                                    help="Triggered copies of the data (.npz, same order).")),
])


def distinct_outputs(paths: dict) -> None:
    """Two outputs of one command naming the same file is a usage error."""
    try:
        check_distinct(paths)
    except OutputPathError as exc:
        raise click.UsageError(str(exc)) from None
