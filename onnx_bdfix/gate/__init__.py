"""The model-release gate: ``run`` measures, ``checks`` judges, ``result`` holds the verdict
and its JSON document, ``report`` renders JUnit XML and HTML."""
from .result import (
           FAILED,
           PASSED,
           SKIPPED,
           Check,
           GateOptions,
           GateResult,
           ModelFigures,
)
from .run import TAKEOVER, guard_takeover, run_gate, settle_target

__all__ = ["FAILED", "PASSED", "SKIPPED", "TAKEOVER", "Check", "GateOptions", "GateResult",
           "ModelFigures", "guard_takeover", "run_gate", "settle_target"]
