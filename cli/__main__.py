from onnx_bdfix_cli.main import main

main()
