"""onnx-bdfix: remove backdoors from exported ONNX classifiers by local, closed-form weight edits.

The steps of the algorithm are one module each: ``graph`` (load, find layers, expose tensors),
``collect`` (ONNX Runtime passes), ``stats`` (streamed sufficient statistics), ``solve`` (the
closed-form correction), ``patch`` (write new initializers), ``verify`` (checker, parity,
accuracy, attack success rate). ``repair`` strings them together.
"""
from .errors import (
                     BdfixError,
                     DataError,
                     DeviceError,
                     InputError,
                     InternalError,
                     ModelError,
                     OutputPathError,
                     TriggerError,
)

__version__ = "0.1.0"

__all__ = ["BdfixError", "DataError", "DeviceError", "InputError", "InternalError",
           "ModelError", "OutputPathError", "TriggerError", "__version__"]
