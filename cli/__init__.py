"""The Click front end of onnx-bdfix (installed as the ``onnx_bdfix_cli`` package)."""
