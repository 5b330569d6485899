"""Known-trigger repair, one module per step, in pipeline order:

``plan`` (config, layers, folds) → ``layers``/``keys`` (a layer as a key → value memory) →
``collect`` (one ONNX Runtime pass) → ``stats`` (streamed sums) → ``fit`` (the collect stage:
target class, repair-step keys) → ``candidates`` (which layers) → ``crossval`` with
``heldout`` (choose the edit) → ``solve`` (closed form) → ``edit``/``patch``/``anchor``
(compute, then apply) → ``verify`` (checker) → ``report``. ``pipeline`` strings them together.
"""
from .pipeline import repair_model
from .plan import RepairConfig
from .report import RepairReport

__all__ = ["RepairConfig", "RepairReport", "repair_model"]
