"""`pocketml train DATASET_DIR --out MODEL_DIR`: light module; keras (and its backend) is imported inside the handler."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pocketml.config import Flag

# The flags of `pocketml train`, each setting the TrainConfig field it names (type and default come from there).
FLAGS = (
    Flag("--backbone", "backbone", "pretrained network to fine-tune: {backbones}"),
    Flag("--weights", "weights", "imagenet, none (random), or a path to a .h5 / .weights.h5 / .pth file",
         "imagenet|none|FILE"),
    Flag("--image-size", "image_size", "square input side in pixels"),
    Flag("--alpha", "alpha", "MobileNet width multiplier (v2: 0.35-1.4, v3: 0.75/1.0; ignored by others)"),
    Flag("--batch-size", "batch_size", "images per step on a CPU (and phase 1's batch on any device)"),
    Flag("--epochs", "epochs_frozen", "max epochs of phase 1 (head on the frozen backbone)"),
    Flag("--finetune-epochs", "epochs_finetune", "max epochs of phase 2, top blocks unfrozen (0 skips it)"),
    Flag("--lr", "lr_frozen", "phase-1 Adam learning rate"),
    Flag("--finetune-lr", "lr_finetune", "phase-2 Adam learning rate"),
    Flag("--unfreeze-blocks", "unfreeze_blocks", "backbone blocks, counted from the top, trained in phase 2"),
    Flag("--dropout", "dropout", "fraction of features dropped before the classifier (0 <= x < 1)"),
    Flag("--feature-copies", "feature_cache_copies", "augmented copies of the training set whose features phase 1 caches"),
    Flag("--no-augment", "augment", "train without flips/rotation/zoom/brightness/contrast"),
    Flag("--seed", "seed", "seed for weights init, shuffling and augmentation (same seed, same model)"),
    Flag("--patience", "patience", "epochs without validation-loss improvement before early stopping"),
    Flag("--backend", "backend", "Keras backend: auto (KERAS_BACKEND, else tensorflow), tensorflow, or jax "
         "(GPUs: pip install 'pocketml[gpu]')"),
    Flag("--precision", "precision", "auto (bf16 mixed on recent GPUs, float32 on CPU), float32, mixed_bfloat16 "
         "or mixed_float16"),
    Flag("--devices", "devices", "accelerators to train on, data parallel (0: all)"),
    Flag("--device-batch-size", "device_batch_size", "images per step per accelerator (0: 256, fewer on small datasets)"),
    Flag("--steps-per-epoch", "steps_per_epoch", "batches per fine-tuning epoch (0: one pass over the training set)"),
)


def register(subparsers) -> None:
    from pocketml.training.backbones import BACKBONES  # light: no TensorFlow import

    from pocketml.config import add_flags
    from pocketml.configs.train import TrainConfig

    parser = subparsers.add_parser(
        "train",
        help="fine-tune a pretrained backbone on a dataset and write an app-ready model directory",
        description="Two-phase transfer learning (head on cached features, then the top blocks) and evaluation. "
        "Each flag overrides the same key of --config's [train] table.",
    )
    parser.add_argument("dataset", type=Path, metavar="DATASET_DIR",
                        help="curated dataset dir (manifest.csv) or ImageFolder with train/ and val/")
    parser.add_argument("--out", type=Path, required=True, metavar="MODEL_DIR", help="where model.keras etc. go")
    parser.add_argument("--config", type=Path, metavar="TOML",
                        help="TOML file whose [train] table sets defaults for these flags")
    flags = tuple(Flag(f.name, f.field, f.help.format(backbones=", ".join(BACKBONES)), f.metavar) for f in FLAGS)
    add_flags(parser, TrainConfig, flags)
    parser.set_defaults(func=run_train)


def config_from_args(args: argparse.Namespace):
    """TrainConfig from the optional TOML [train] table, overridden by the flags that were given."""
    from pocketml.config import from_mapping, load_toml, settings_from_flags
    from pocketml.configs.train import TrainConfig

    table = dict(load_toml(args.config).get("train", {})) if args.config else {}
    return from_mapping(TrainConfig, {**table, **settings_from_flags(args, FLAGS)}, "train")


def run_train(args: argparse.Namespace) -> int:
    from pocketml.training.train import train

    config = config_from_args(args)
    if config.backend != "auto" and "keras" not in sys.modules:
        # This process only trains: let keras come up on the wanted backend instead of a subprocess.
        os.environ["KERAS_BACKEND"] = config.backend
    train(args.dataset, args.out, config)
    return 0
