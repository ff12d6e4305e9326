"""`[export]`: which files `pocketml export` produces and how it checks them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pocketml.dataset import AGREEMENT_COUNT, CALIBRATION_COUNT, EVALUATION_COUNT
from pocketml.errors import PocketMLError
from pocketml.spec import Normalization, requested_normalization

# The ONNX opsets export writes: 13 (per-channel QDQ needs it) .. 18 (the newest tf2onnx 1.17 writes).
ONNX_OPSETS = range(13, 19)
ONNX_OPSET = 17  # the default: ONNX Runtime Mobile and every current runtime execute it
# Oldest iOS a Core ML package may target; iOS16 is the first whose Core ML runs compressed weights.
COREML_TARGETS = ("iOS16", "iOS17", "iOS18", "iOS26", "iOS27")
COREML_TARGET = "iOS16"


@dataclass
class ExportConfig:
    # File formats to produce, in order, from export.registry (tflite, coreml, onnx, coreai); empty means every
    # format this machine converts to (Core AI only with the pocketml[coreai] extra).
    formats: list[str] = field(default_factory=list)
    # Precisions to produce; empty means every precision each format supports (see export.registry).
    precisions: list[str] = field(default_factory=list)
    # Images for int8 calibration: its train split (a folder without splits: any of its images). None: the
    # train split of validation_images when it has one, else calibrated variants are skipped with a note.
    calibration: Path | None = None
    # Calibration images used at most (deterministic choice), and at most a quarter of a small pool so the
    # rest can judge the files.
    calibration_images: int = CALIBRATION_COUNT
    # Input size "N" or "HxW" for models whose input is dynamic (None: the model's own size or spec.json).
    image_size: str | None = None
    # Labels file (one per line) that replaces spec.json's labels; None: use spec.json beside the model.
    labels: Path | None = None
    # Oldest iOS the Core ML package must run on (mlprogram needs iOS15+; fp16 compute iOS16+).
    minimum_deployment_target: str = COREML_TARGET
    # ONNX opset for the fp32 graph (17 is what onnxruntime mobile and most tooling accept).
    opset: int = ONNX_OPSET
    # Preprocessing the model expects but lacks, put in front of it in every exported file: none,
    # mobilenet ([-1, 1]), imagenet (torchvision mean/std), caffe-bgr, unit ([0, 1]); None: the model's
    # own (a Rescaling/Normalization layer at its input, or spec.json), else raw pixels 0..255.
    preprocess: str | None = None
    # Per-channel mean subtracted from RGB 0..255 pixels (one number or R,G,B); instead of preprocess.
    mean: str | float | list[float] | None = None
    # Per-channel divisor after the mean (one number or R,G,B); instead of preprocess.
    std: str | float | list[float] | None = None
    # Reverse RGB to BGR after normalising, for Caffe-style networks; with mean/std or alone.
    bgr: bool = False
    # Judge every file against the Keras original on the evaluation images (its one verdict).
    validate: bool = True
    # Evaluation images: the held-out split (test, else val) of this folder; None: the held-out split of
    # `calibration` (a folder without splits: its images not used to calibrate). Never a calibration image.
    validation_images: Path | None = None
    # Held-out evaluation images used at most (deterministic, every class keeps its share): accuracy is
    # measured on these.
    evaluation_images: int = EVALUATION_COUNT
    # Images agreement and |dp| are measured on at most: the evaluation images plus every other image of
    # the folders given that did not calibrate (agreement needs no labels). A verdict on too few images
    # says "too few images" and how many would decide it.
    agreement_images: int = AGREEMENT_COUNT

    def __post_init__(self) -> None:
        if self.calibration_images < 1 or self.evaluation_images < 1 or self.agreement_images < 1:
            raise PocketMLError(f"calibration_images = {self.calibration_images}, evaluation_images = "
                                f"{self.evaluation_images} and agreement_images = {self.agreement_images}; "
                                "need at least 1 each")
        if self.opset not in ONNX_OPSETS:
            raise PocketMLError(f"opset {self.opset} is not accepted; use {ONNX_OPSETS.start}.."
                                f"{ONNX_OPSETS.stop - 1} (default {ONNX_OPSET})")
        if self.minimum_deployment_target not in COREML_TARGETS:
            raise PocketMLError(f"minimum_deployment_target {self.minimum_deployment_target!r} is not accepted; "
                                f"use one of {', '.join(COREML_TARGETS)}")
        self.normalization  # noqa: B018 -- rejects a bad preprocess/mean/std before any work

    @property
    def normalization(self) -> Normalization | None:
        """The preprocessing asked for (None: the model's own)."""
        return requested_normalization(self.preprocess, self.mean, self.std, self.bgr)
