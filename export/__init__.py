"""Export: one module per format (tflite.py, coreml.py, onnx.py), found through `registry`.

The package is also the Python API's export function: `pocketml.export(model, out_dir, ...)` calls
`pocketml.export.exporter.export`. (Importing a submodule binds `pocketml.export` to this package,
so the package itself must be what a user calls.)
"""

import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from pocketml.export.exporter import export

        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
