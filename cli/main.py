"""onnx-bdfix command line: inspect, repair, evaluate, scan, gate, diff, demo.

Exit codes: 0 ok; 1 scan found a backdoor, a gate check failed, or a known-trigger repair
found no edit within its clean-cost bound that meets --max-asr (nothing written); 2 usage;
3 the model, data, trigger, device or output path cannot be used; 4 internal error (a bug:
rerun with --debug and report it). Library errors become one line on stderr here, in one place
(:class:`BdfixGroup`), with the traceback only under --debug.
"""
from __future__ import annotations

import logging
import sys
import traceback

import click

from onnx_bdfix import __version__
from onnx_bdfix.errors import BdfixError, InputError, RepairShortfall

from . import check_commands, model_commands, repair_commands

EXIT_SHORTFALL, EXIT_INPUT, EXIT_INTERNAL = 1, 3, 4


class BdfixGroup(click.Group):
    """Runs a command and turns what it raises into one line on stderr and an exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except RepairShortfall as exc:
            fail(ctx, " ".join(str(exc).split()), EXIT_SHORTFALL, "not repaired")
        except InputError as exc:
            fail(ctx, " ".join(str(exc).split()), EXIT_INPUT)
        except BdfixError as exc:
            fail(ctx, f"internal error: {exc} (rerun with --debug and report it)",
                 EXIT_INTERNAL)
        except MemoryError:
            fail(ctx, "out of memory: lower --batch-size or use fewer samples", EXIT_INPUT)
        except Exception as exc:  # noqa: BLE001 - the last line of defence, by design
            fail(ctx, f"internal error: {type(exc).__name__}: {exc} (rerun with --debug)",
                 EXIT_INTERNAL)


def fail(ctx: click.Context, message: str, code: int, kind: str = "error") -> None:
    if ctx.params.get("debug"):
        traceback.print_exc()
    click.echo(f"{kind}: {message}", err=True)
    ctx.exit(code)


@click.group(cls=BdfixGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onnx-bdfix")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-v", "--verbose", is_flag=True, help="Log what each step does.")
def main(debug: bool, verbose: bool) -> None:
    """Remove backdoors from exported ONNX classifiers by local weight edits."""
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


for _module in (model_commands, repair_commands, check_commands):
    for _command in _module.COMMANDS:
        main.add_command(_command)
