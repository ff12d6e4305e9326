"""pocketml: image classifiers from data to app-ready Core ML, TFLite and ONNX files.

`import pocketml` is light: it holds the vocabulary every stage shares and imports no stage. The
Python API — pocketml.acquire, curate, train, export, validate, bench, package, load, run — is
looked up on first use from pocketml/app/api.py, which sits above the stages (see that module).
"""

from pocketml.errors import PocketMLError

__version__ = "0.1.0"
API = ("acquire", "curate", "train", "export", "validate", "bench", "package", "load", "run")
__all__ = ["PocketMLError", "__version__", *API]


def __getattr__(name: str):
    if name == "export":  # the export package, callable as the API function (see its docstring)
        import importlib

        return importlib.import_module("pocketml.export")
    if name in API:
        from pocketml.app import api

        return getattr(api, name)
    raise AttributeError(f"module 'pocketml' has no attribute {name!r}")
