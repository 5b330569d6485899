"""The model as the tool sees it: read as hostile input, indexed once, exposed, run, saved.

``load`` reads and checks a file (``constants``: weights held in Constant or Identity
nodes become initializers); ``index`` answers graph look-ups; ``signature`` finds the
data input and the class scores; ``expose`` adds intermediate tensors as outputs; ``runtime``
runs ONNX Runtime sessions; ``large`` handles models over 2 GiB; ``save`` writes a model.
"""
from .index import GraphIndex, index_of
from .load import LoadedModel, as_loaded, load_model
from .save import save_model
from .signature import InputInfo, model_input, score_output

__all__ = ["GraphIndex", "InputInfo", "LoadedModel", "as_loaded", "index_of", "load_model",
           "model_input", "save_model", "score_output"]
