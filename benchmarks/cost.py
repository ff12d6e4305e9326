"""What an artifact costs an app: download size, parameters, multiply-accumulates, peak memory.

MACs are counted from the Keras model's layers (convolutions, depthwise convolutions, dense),
the figure papers quote (MobileNetV2 1.0 at 224 px: ~300 M). Peak memory is read from the kernel
(/proc/self/status VmHWM) in a fresh subprocess per artifact: native runtimes allocate outside
Python's heap, so tracemalloc would miss almost everything.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pocketml
from pocketml.errors import PocketMLError, one_line
from pocketml.fsutil import tree_bytes

# The folder holding the `pocketml` package (a checkout, or site-packages of a wheel install): the
# probe child runs there, away from modules in the user's folder that could shadow pocketml's imports.
PROJECT_ROOT = Path(pocketml.__file__).resolve().parents[1]
PROBE_TIMEOUT_S = 600  # a Keras probe imports TensorFlow: slow on a busy machine, but not forever


def zipped_bytes(path: str | Path) -> int:
    """Bytes of `path` (file or .mlpackage directory) deflated into a zip, as app stores ship it."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for file in files:
            archive.write(file, file.relative_to(path.parent).as_posix())
    return buffer.getbuffer().nbytes


def file_sizes(path: str | Path) -> dict[str, int]:
    return {"bytes": tree_bytes(path), "zip_bytes": zipped_bytes(path)}


def _leaf_layers(model: Any) -> list[Any]:
    """Every non-container layer, descending into nested models (a backbone inside a classifier)."""
    leaves = []
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            leaves += _leaf_layers(layer)
        else:
            leaves.append(layer)
    return leaves


def _spatial_positions(shape: tuple) -> int:
    """Output positions a kernel is applied at: the product of the dims between batch and channels."""
    return math.prod(int(d) for d in shape[1:-1])


def layer_macs(layer: Any) -> int:
    """Multiply-accumulates of one forward pass of `layer` for one image (0 for layers without weights)."""
    kind = type(layer).__name__
    if kind not in ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "DepthwiseConv1D", "Dense", "SeparableConv2D"):
        return 0
    out_shape = tuple(layer.output.shape)
    positions = _spatial_positions(out_shape)
    if kind == "SeparableConv2D":
        return positions * (math.prod(layer.depthwise_kernel.shape) + math.prod(layer.pointwise_kernel.shape))
    # Conv kernels are (kh, kw, in/groups, out), depthwise (kh, kw, in, multiplier), dense (in, out):
    # each output position costs one MAC per kernel weight.
    return positions * math.prod(int(d) for d in layer.kernel.shape)


def count_macs(model: Any) -> int:
    return int(sum(layer_macs(layer) for layer in _leaf_layers(model)))


def count_params(model: Any) -> int:
    return int(model.count_params())


# The probe runs in a child process so its peak is the artifact's alone. It imports the runtime
# first, then resets the high-water mark (clear_refs 5), so import-time peaks are not counted.
_PROBE = r"""
import json, sys
import numpy as np
fmt, path, runs, height, width = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])

def status_kb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)

# Import the runtime itself before the reset: a library's import is not the model's memory.
if fmt == "keras":
    __import__("keras")
    from pocketml.export.keras_model import load_keras_predictor as load
else:
    from pocketml.export.registry import format_module
    module = format_module(fmt)
    __import__(module.RUNTIME_MODULE)
    load = module.load
images = np.random.default_rng(0).integers(0, 256, (1, height, width, 3), dtype=np.uint8)
try:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    reset = True
except OSError:
    reset = False
baseline = status_kb("VmRSS")
predictor = load(path)
for _ in range(runs):
    predictor.predict(images)
print(json.dumps({"baseline_rss_kb": baseline, "peak_rss_kb": status_kb("VmHWM"), "hwm_reset": reset}))
"""


def peak_memory(fmt: str, path: str | Path, image_size: tuple[int, int], runs: int = 5) -> dict:
    """Peak resident memory (MB) of loading `path` and running `runs` inferences, in a fresh process."""
    if not Path("/proc/self/status").exists():
        raise PocketMLError("peak memory needs /proc/self/status (Linux); set measure_memory = false elsewhere")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # The child runs in the project folder, away from the user's modules: a relative path must be resolved here.
    cmd = [sys.executable, "-c", _PROBE, fmt, str(Path(path).resolve()), str(runs), str(image_size[0]), str(image_size[1])]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=PROBE_TIMEOUT_S, cwd=PROJECT_ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe exited {done.returncode}: {one_line(done.stderr, 'no output', last=True)}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "peak_rss_mb": figures["peak_rss_kb"] / 1024,
        "peak_delta_mb": (figures["peak_rss_kb"] - figures["baseline_rss_kb"]) / 1024,
        "baseline_rss_mb": figures["baseline_rss_kb"] / 1024,
        # Without the reset, the high-water mark may include the runtime's import: an upper bound.
        "exact": bool(figures["hwm_reset"]),
    }
