"""Quantisation that passes: per-layer sensitivity per format and a bounded recovery search.

`search` runs a format's ladder of candidate files (each judged on the held-out evaluation images)
and stops at the first within budget; `equalize` corrects the Keras weights before conversion for
the rounding every integer format applies; `tflite`, `onnx` and `coreml` hold each format's rungs and
its sensitivity measure.
"""
