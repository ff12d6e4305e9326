"""Export: one module per format (tflite.py, coreml.py, onnx.py), found through `registry`."""
