"""Slow end-to-end training on the real hot-dog photos (200 train / 50 val)."""

from __future__ import annotations

import json
import time

import pytest

from pocketml.configs.train import TrainConfig
from pocketml.spec import ModelSpec


def _val_accuracy(model_dir) -> float:
    report = json.loads((model_dir / "eval.json").read_text())
    assert report["split"] == "val" and report["images"] == 50
    return report["accuracy"]


@pytest.mark.slow
def test_efficientnet_lite0_imagenet_reaches_80_percent_on_hotdog(hotdog_dir, tmp_path):
    config = TrainConfig(backbone="efficientnet_lite0", weights="imagenet", image_size=224, batch_size=25,
                         epochs_frozen=40, epochs_finetune=0, feature_cache_copies=1, patience=8)
    started = time.perf_counter()
    out = tmp_path / "model"
    from training.train import train

    train(hotdog_dir, out, config)
    seconds = time.perf_counter() - started
    accuracy = _val_accuracy(out)
    print(f"efficientnet_lite0 224px: val accuracy {accuracy:.3f} in {seconds:.0f} s")
    assert accuracy >= 0.80
    spec = ModelSpec.load(out)
    assert spec.backbone == "efficientnet_lite0" and spec.weights_sha256 and spec.normalization.mean == (127.0,) * 3


@pytest.mark.slow
def test_mobilenet_v2_035_shared_weights_trains_on_hotdog(hotdog_dir, mobilenet_v2_035_weights, tmp_path):
    config = TrainConfig(backbone="mobilenet_v2", alpha=0.35, weights=str(mobilenet_v2_035_weights),
                         image_size=224, batch_size=25, epochs_frozen=40, epochs_finetune=2,
                         feature_cache_copies=2, patience=8)
    started = time.perf_counter()
    out = tmp_path / "model"
    from training.train import train

    train(hotdog_dir, out, config)
    seconds = time.perf_counter() - started
    accuracy = _val_accuracy(out)
    print(f"mobilenet_v2 a0.35 224px: val accuracy {accuracy:.3f} in {seconds:.0f} s")
    assert accuracy >= 0.75
    history = (out / "history.csv").read_text().splitlines()
    assert history[0].startswith("phase,epoch") and any(row.startswith("finetune,") for row in history)
