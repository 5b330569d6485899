"""onnx-bdfix: remove backdoors from exported ONNX classifiers by local, closed-form weight edits.

The subpackages follow the algorithm: ``model`` (read, index, expose, run, save), ``data``
(samples and triggers), ``repair`` (collect → stats → choose → solve → patch → verify),
``agnostic`` (reconstruct the trigger: scan, trigger-agnostic repair) and ``gate`` (the
release gate). ``metrics`` holds every figure's one rule, ``output`` the one rule for writing
files, ``evaluate``, ``inspect`` and ``diff`` the read-only commands.

    import onnx_bdfix as bd
    model = bd.load_model("model.onnx")
    clean = bd.load_data("clean.npz", model)
    trigger = bd.load_trigger("trigger.npz", model)
    report = bd.repair_model(model, clean, trigger, "repaired.onnx")
"""
__version__ = "0.1.0"

from .agnostic import agnostic_repair, scan_model  # noqa: E402
from .data import ImageOptions, load_data, load_trigger, load_triggered  # noqa: E402
from .diff import diff_models  # noqa: E402
from .errors import (  # noqa: E402
    BdfixError,
    DataError,
    DeviceError,
    InputError,
    InternalError,
    ModelError,
    OutputPathError,
    RepairShortfall,
    TriggerError,
)
from .evaluation import evaluate  # noqa: E402
from .gate import GateOptions, run_gate  # noqa: E402
from .model import load_model  # noqa: E402
from .repair import RepairConfig, RepairReport, repair_model  # noqa: E402

__all__ = ["BdfixError", "DataError", "DeviceError", "GateOptions", "ImageOptions",
           "InputError", "InternalError", "ModelError", "OutputPathError", "RepairConfig",
           "RepairShortfall",
           "RepairReport", "TriggerError", "__version__", "agnostic_repair", "diff_models",
           "evaluate", "load_data", "load_model", "load_trigger", "load_triggered",
           "repair_model", "run_gate", "scan_model"]
