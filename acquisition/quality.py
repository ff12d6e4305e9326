"""Quality flags: cheap measurements of a decoded image and the thresholds that turn them into flags.

The measurements are kept (report.json shows their spread) so a user can move a threshold knowing
what it will catch. Flags: dark, bright, blurry (variance of the Laplacian), low_info (grey
histogram entropy), grayscale, aspect (long/short side), tiny (short side).
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy.ndimage import laplace

from pocketml.configs.curate import CurateConfig

MEASURE_SIDE = 256  # blur is measured at a fixed scale: the Laplacian's variance depends on resolution


def measures(rgb: np.ndarray) -> dict[str, float]:
    """brightness, sharpness, entropy and colourfulness of an RGB uint8 image."""
    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    scale = MEASURE_SIDE / max(img.size)
    if scale < 1:
        img = img.resize(
            (max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BOX
        )
    small_rgb = np.asarray(img, dtype=np.int16)
    grey = np.asarray(img.convert("L"), dtype=np.float64)
    histogram = np.bincount(grey.astype(np.uint8).ravel(), minlength=256) / grey.size
    nonzero = histogram[histogram > 0]
    channel_spread = np.abs(small_rgb - small_rgb.mean(axis=2, keepdims=True)).mean()
    return {
        "brightness": float(grey.mean()),
        "sharpness": float(laplace(grey).var()),
        "entropy": float(-(nonzero * np.log2(nonzero)).sum()),
        "colourfulness": float(channel_spread),
    }


def flags(measured: dict[str, float], width: int, height: int, config: CurateConfig) -> list[str]:
    """Quality flags of one image, in the order of pocketml.configs.curate.QUALITY_FLAGS."""
    out = []
    if measured["brightness"] < config.dark_below:
        out.append("dark")
    if measured["brightness"] > config.bright_above:
        out.append("bright")
    if measured["sharpness"] < config.blur_below:
        out.append("blurry")
    if measured["entropy"] < config.low_info_below:
        out.append("low_info")
    if measured["colourfulness"] < config.grayscale_below:
        out.append("grayscale")
    if max(width, height) / max(1, min(width, height)) > config.max_aspect:
        out.append("aspect")
    if min(width, height) < config.min_side:
        out.append("tiny")
    return out


def excluded_by(image_flags: list[str], config: CurateConfig) -> list[str]:
    """The flags that keep this image out of the manifest under `config.exclude_flags`."""
    return [f for f in image_flags if f in config.exclude_flags]
