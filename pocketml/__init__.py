"""pocketml: image classifiers from data to app-ready Core ML, TFLite and ONNX files.

This package holds the CLI, the configuration schema and the vocabulary every stage shares.
It never imports TensorFlow or any stage's heavy code at import time.
"""

from pocketml.errors import PocketMLError

__version__ = "0.1.0"
__all__ = ["PocketMLError", "__version__"]
