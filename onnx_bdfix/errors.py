"""One exception hierarchy for the library, rooted in :class:`BdfixError`.

``RepairShortfall`` means a repair found no edit that meets its goals within its bounds and
wrote nothing: the CLI prints its message on one line and exits 1. ``InputError`` and its
children mean the user's model, data, trigger or options cannot be
used: the CLI prints their message on one line and exits 3. ``InternalError`` means a bug in
onnx-bdfix itself: the CLI exits 4 and asks for a report. Messages say what is wrong and what
to do about it.
"""


class BdfixError(Exception):
    """Base of every error onnx-bdfix raises on purpose."""


class InputError(BdfixError):
    """The model, data, trigger, device or options given cannot be used."""


class ModelError(InputError):
    """The ONNX model cannot be read, checked, run or edited."""


class DataError(InputError):
    """A data file or image folder cannot be used with this model."""


class TriggerError(InputError):
    """A trigger file, or the triggered copies, cannot be used with this model or data."""


class DeviceError(InputError):
    """The requested execution device is not available."""


class OutputPathError(InputError):
    """The output file cannot be written where it was asked for."""


class MissingDependencyError(InputError):
    """An optional feature needs a package that is not installed (an extra)."""


class RepairShortfall(BdfixError):
    """No edit within the clean-cost bound removes the backdoor to the asked level; nothing
    was written. The message says what the best edit would leave and what bound it needs;
    ``report``, where the repair got that far, is the refused repair's report (a dict: every
    candidate it cross-validated, the target class, the original model's figures)."""

    report: dict | None = None


class InternalError(BdfixError):
    """A check inside onnx-bdfix failed: a bug, to be reported with the --debug output."""
