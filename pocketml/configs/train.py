"""`[train]`: how `pocketml train` fine-tunes a backbone on a dataset."""

from __future__ import annotations

from dataclasses import dataclass

from pocketml.errors import PocketMLError

BACKENDS = ("tensorflow", "jax")  # Keras backends training accepts besides "auto"
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")  # Keras dtype policy names


@dataclass
class TrainConfig:
    # Backbone from training.backbones.BACKBONES (`pocketml train --help` lists them); checked before any stage runs.
    backbone: str = "mobilenet_v2"
    # Width multiplier for MobileNets (ImageNet weights exist for v2: 0.35-1.4, v3: 0.75/1.0); ignored otherwise.
    alpha: float = 1.0
    # "imagenet" (Keras download; packaged for efficientnet_lite0), "none" (random), or a local weights file path.
    weights: str = "imagenet"
    # Square input side in pixels; the model's input is image_size x image_size RGB 0..255.
    image_size: int = 224
    # Images per step on a CPU, and phase 1's head batch on any device; the reference batch the
    # learning rates are tuned for.
    batch_size: int = 32
    # Max epochs of phase 1 (head on the frozen backbone, run on cached features, so cheap).
    epochs_frozen: int = 30
    # Max epochs of phase 2 (top blocks unfrozen, full forward/backward passes); 0 skips phase 2.
    epochs_finetune: int = 5
    # Adam learning rate of phase 1.
    lr_frozen: float = 1e-3
    # Adam learning rate of phase 2; small, so unfreezing does not wreck the pretrained features.
    lr_finetune: float = 1e-5
    # Backbone blocks (counted from the top) unfrozen in phase 2; BatchNorm stays in inference mode.
    unfreeze_blocks: int = 2
    # Dropout rate before the classifier, as a fraction of features dropped.
    dropout: float = 0.2
    # Augment training images (in the input pipeline only, never inside the saved model).
    augment: bool = True
    # Random horizontal flips (false for classes where left/right matters, e.g. glyphs).
    augment_flip: bool = True
    # Max rotation as a fraction of a full turn (0.05 = +-18 degrees).
    augment_rotation: float = 0.05
    # Max zoom in/out as a fraction of the image side.
    augment_zoom: float = 0.1
    # Max brightness shift as a fraction of the 0..255 range.
    augment_brightness: float = 0.1
    # Max contrast change as a fraction (0.1 = factor 0.9..1.1).
    augment_contrast: float = 0.1
    # Augmented copies of the training set whose features are cached for phase 1 (plus one clean copy).
    feature_cache_copies: int = 2
    # Seed for weights init, shuffling and augmentation, so reruns give the same model.
    seed: int = 0
    # Epochs without validation-loss improvement before early stopping (each phase).
    patience: int = 5
    # Keras backend: "auto" (KERAS_BACKEND, else keras.json, else tensorflow), "tensorflow" or "jax"
    # (GPUs: pip install 'pocketml[gpu]'). One other than the running process's trains in a subprocess.
    backend: str = "auto"
    # Keras dtype policy: "auto" (bf16 mixed on GPUs with compute capability 8.0+ and TPUs, fp16 mixed
    # on older GPUs, float32 on CPU), "float32", "mixed_bfloat16" or "mixed_float16". Saved models are float32.
    precision: str = "auto"
    # Accelerators to split each batch across (data parallel, one host); 0: every one the backend sees.
    devices: int = 0
    # Images per step per accelerator (0: 256); capped so an epoch keeps 8+ steps. Unused on CPU.
    device_batch_size: int = 0
    # Multiply lr_finetune by sqrt(batch per step / batch_size) when devices make the batch bigger.
    scale_lr: bool = True
    # Batches per phase-2 epoch (0: one pass over the training set); >0 runs fixed-length epochs.
    steps_per_epoch: int = 0
    # Threads serving batches to the device (0: min(8, CPU cores), at least 2).
    loader_workers: int = 0

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise PocketMLError(f"train.image_size = {self.image_size}; need at least 8 pixels (32+ for backbones)")
        if self.backend not in ("auto", *BACKENDS):
            raise PocketMLError(f"train.backend = {self.backend!r}; accepted: auto, {', '.join(BACKENDS)}")
        if self.precision not in PRECISIONS:
            raise PocketMLError(f"train.precision = {self.precision!r}; accepted: {', '.join(PRECISIONS)}")
        positive = {"batch_size": self.batch_size, "patience": self.patience}
        for name, value in positive.items():
            if value < 1:
                raise PocketMLError(f"train.{name} = {value}; need 1 or more")
        counts = {"epochs_frozen": self.epochs_frozen, "epochs_finetune": self.epochs_finetune,
                  "unfreeze_blocks": self.unfreeze_blocks, "feature_cache_copies": self.feature_cache_copies,
                  "devices": self.devices, "device_batch_size": self.device_batch_size,
                  "steps_per_epoch": self.steps_per_epoch, "loader_workers": self.loader_workers}
        for name, value in counts.items():
            if value < 0:
                raise PocketMLError(f"train.{name} = {value}; need 0 or more")
        if self.epochs_frozen + self.epochs_finetune < 1:
            raise PocketMLError("train.epochs_frozen + train.epochs_finetune is 0; train at least one epoch")
        if not 0.0 <= self.dropout < 1.0:
            raise PocketMLError(f"train.dropout = {self.dropout}; need 0 <= dropout < 1")
        if self.alpha <= 0:
            raise PocketMLError(f"train.alpha = {self.alpha}; need a positive width multiplier (e.g. 0.35, 1.0)")
        for name in ("lr_frozen", "lr_finetune"):
            if getattr(self, name) <= 0:
                raise PocketMLError(f"train.{name} = {getattr(self, name)}; need a positive learning rate")
        fractions = ("augment_rotation", "augment_zoom", "augment_brightness", "augment_contrast")
        for name in fractions:
            if not 0.0 <= getattr(self, name) < 1.0:
                raise PocketMLError(f"train.{name} = {getattr(self, name)}; need a fraction in [0, 1)")
