"""What the model is run on: clean samples (``dataset``, ``npz``, ``images``) and triggers
(``triggers``), each read as hostile input and checked against the model's input."""
from .dataset import Dataset, Rows, check_against_input, load_data
from .images import ImageOptions
from .triggers import Trigger, TriggerSet, load_trigger, load_triggered

__all__ = ["Dataset", "ImageOptions", "Rows", "Trigger", "TriggerSet", "check_against_input",
           "load_data", "load_trigger", "load_triggered"]
