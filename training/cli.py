"""`pocketml train DATASET_DIR --out MODEL_DIR`: light module; keras (and its backend) is imported inside the handler."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# TrainConfig fields that flags of the same dest override.
FLAG_FIELDS = (
    "backbone", "alpha", "weights", "image_size", "batch_size", "epochs_frozen", "epochs_finetune",
    "lr_frozen", "lr_finetune", "unfreeze_blocks", "dropout", "feature_cache_copies", "augment", "seed", "patience",
    "backend", "precision", "devices", "device_batch_size", "steps_per_epoch",
)


def register(subparsers) -> None:
    from pocketml.training.backbones import BACKBONES  # light: no TensorFlow import

    parser = subparsers.add_parser(
        "train",
        help="fine-tune a pretrained backbone on a dataset and write an app-ready model directory",
        description="Two-phase transfer learning (head on cached features, then the top blocks) and evaluation.",
    )
    parser.add_argument("dataset", type=Path, metavar="DATASET_DIR",
                        help="curated dataset dir (manifest.csv) or ImageFolder with train/ and val/")
    parser.add_argument("--out", type=Path, required=True, metavar="MODEL_DIR", help="where model.keras etc. go")
    parser.add_argument("--config", type=Path, help="TOML file whose [train] table sets defaults for these flags")
    parser.add_argument("--backbone", help=f"one of {', '.join(BACKBONES)} (default mobilenet_v2)")
    parser.add_argument("--weights", help="imagenet (default), none, or a path to a .h5 / .weights.h5 file")
    parser.add_argument("--image-size", dest="image_size", type=int, help="square input side in pixels (default 224)")
    parser.add_argument("--alpha", type=float, help="MobileNet width multiplier (default 1.0)")
    parser.add_argument("--batch-size", dest="batch_size", type=int,
                        help="images per training step (default 32; devices may split it, see --device-batch-size)")
    parser.add_argument("--epochs", dest="epochs_frozen", type=int, help="max epochs of the frozen-backbone phase")
    parser.add_argument("--finetune-epochs", dest="epochs_finetune", type=int, help="max epochs of phase 2 (0 skips)")
    parser.add_argument("--lr", dest="lr_frozen", type=float, help="phase-1 learning rate")
    parser.add_argument("--finetune-lr", dest="lr_finetune", type=float, help="phase-2 learning rate")
    parser.add_argument("--unfreeze-blocks", dest="unfreeze_blocks", type=int, help="top blocks trained in phase 2")
    parser.add_argument("--dropout", type=float, help="dropout before the classifier head, 0 <= p < 1 (default 0.2)")
    parser.add_argument("--feature-copies", dest="feature_cache_copies", type=int,
                        help="augmented copies of the training set whose features phase 1 caches")
    parser.add_argument("--no-augment", dest="augment", action="store_false", default=None,
                        help="train without flips/rotation/zoom/brightness/contrast")
    parser.add_argument("--seed", type=int, help="seed of shuffling, augmentation and initial weights (default 0)")
    parser.add_argument("--patience", type=int, help="early-stopping patience in epochs")
    parser.add_argument("--backend", help="Keras backend: auto (KERAS_BACKEND, else tensorflow), tensorflow, "
                        "or jax (GPUs: pip install 'pocketml[gpu]')")
    parser.add_argument("--precision", help="auto (bf16 mixed on recent GPUs, float32 on CPU), float32, "
                        "mixed_bfloat16 or mixed_float16")
    parser.add_argument("--devices", type=int, help="accelerators to train on, data parallel (default: all)")
    parser.add_argument("--device-batch-size", dest="device_batch_size", type=int,
                        help="images per step per accelerator (default 256, fewer on small datasets)")
    parser.add_argument("--steps-per-epoch", dest="steps_per_epoch", type=int,
                        help="batches per fine-tuning epoch (default: one pass over the training set)")
    parser.set_defaults(func=run_train)


def config_from_args(args: argparse.Namespace):
    """TrainConfig from the optional TOML [train] table, overridden by the flags that were given."""
    from pocketml.config import from_mapping, load_toml
    from pocketml.configs.train import TrainConfig

    table = dict(load_toml(args.config).get("train", {})) if args.config else {}
    for name in FLAG_FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            table[name] = value
    return from_mapping(TrainConfig, table, "train")


def run_train(args: argparse.Namespace) -> int:
    from pocketml.training.train import train

    config = config_from_args(args)
    if config.backend != "auto" and "keras" not in sys.modules:
        # This process only trains: let keras come up on the wanted backend instead of a subprocess.
        os.environ["KERAS_BACKEND"] = config.backend
    train(args.dataset, args.out, config)
    return 0
