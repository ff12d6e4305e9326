"""The Predictor contract every runtime is wrapped in, so parity, accuracy and latency code is
written once: predict(images uint8|float32 [N,H,W,3] RGB 0..255) -> float32 [N, classes], and
invoker(image) -> a call that runs the runtime once on that prepared [1,H,W,3] image (what latency
times: the runtime's own work, set up exactly as predict sets it up, threads included).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pocketml.errors import PocketMLError
from pocketml.spec import ModelSpec

# The metadata key under which every format stores ModelSpec.to_dict() as JSON.
META_SPEC = "pocketml.spec"


@runtime_checkable
class Predictor(Protocol):
    name: str  # e.g. "tflite-fp16" or "keras"
    input_size: tuple[int, int]  # (height, width)

    def predict(self, images: np.ndarray) -> np.ndarray: ...

    def invoker(self, image: np.ndarray) -> Callable[[], Any]: ...


def check_images(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`images` as an [N,H,W,3] array of the model's size, else a one-line error."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or tuple(images.shape[1:3]) != tuple(size):
        raise PocketMLError(f"images must be [N,{size[0]},{size[1]},3] RGB 0..255; got shape {images.shape}")
    if images.dtype not in (np.uint8, np.float32):
        raise PocketMLError(f"images must be uint8 or float32; got {images.dtype}")
    return images


def spec_from_metadata(metadata: dict[str, str], path) -> ModelSpec:
    """The ModelSpec pocketml stored in an artifact's key/value metadata (ONNX, Core ML)."""
    import json

    if META_SPEC not in metadata:
        raise PocketMLError(f"{path} has no '{META_SPEC}' metadata; it was not written by pocketml export")
    return ModelSpec.from_dict(json.loads(metadata[META_SPEC]))
