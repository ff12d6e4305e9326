"""Training end to end on real photos (tests/photos.py) with EfficientNet-Lite0's packaged ImageNet
weights, plus the errors a user can hit. Needs nothing outside the repository and its dependencies."""

from __future__ import annotations

import contextlib
import csv
import io
import json

import numpy as np
import pytest

from pocketml.configs.train import TrainConfig
from pocketml.dataset import load_images
from pocketml.errors import PocketMLError
from pocketml.fsutil import sha256_file
from pocketml.spec import ModelSpec
from tests.training.conftest import subset_rows, write_manifest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SIZE = 64  # px: Lite0 at its smallest comfortable size, seconds per phase on 2 cores


def tiny_config(**overrides) -> TrainConfig:
    values = dict(backbone="efficientnet_lite0", weights="imagenet", image_size=SIZE, batch_size=16,
                  epochs_frozen=2, epochs_finetune=1, feature_cache_copies=1, patience=2, unfreeze_blocks=1)
    return TrainConfig(**(values | overrides))


@pytest.fixture(scope="module")
def trained(photos_dir, tmp_path_factory):
    """(model directory, what training printed: stdout is not a terminal here, as in a log or CI)."""
    from pocketml.training.train import train

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        out = train(photos_dir, tmp_path_factory.mktemp("trained"), tiny_config())
    return out, printed.getvalue()


@pytest.fixture(scope="module")
def trained_dir(trained):
    return trained[0]


def test_model_dir_holds_everything_an_export_needs(trained_dir):
    from pocketml.training.efficientnet_lite import checkpoint_path

    for name in ("model.keras", "spec.json", "labels.txt", "history.csv", "eval.json", "training.json",
                 "confusion_matrix.png", "misclassified.png"):
        assert (trained_dir / name).is_file(), name
    spec = ModelSpec.load(trained_dir)
    assert spec.labels == ("cat", "coffee") and spec.image_size == (SIZE, SIZE)
    assert spec.normalization.name == "efficientnet_lite" and spec.backbone == "efficientnet_lite0"
    assert spec.weights_sha256 == sha256_file(checkpoint_path())
    assert spec.source_sha256 == sha256_file(trained_dir / "model.keras")
    assert (trained_dir / "labels.txt").read_text() == "cat\ncoffee\n"
    assert (trained_dir / "confusion_matrix.png").read_bytes().startswith(PNG_MAGIC)
    assert (trained_dir / "misclassified.png").read_bytes().startswith(PNG_MAGIC)


def test_training_record_names_backend_devices_and_speed(trained_dir):
    run = json.loads((trained_dir / "training.json").read_text())
    assert (run["backend"], run["platform"], run["devices"], run["precision"]) == ("tensorflow", "cpu", 1, "float32")
    assert run["batch_size"] == 16 and run["lr_scale"] == 1.0 and run["distribution"] == "none"
    frozen, finetune = run["phases"]
    # Phase 1: one clean and one augmented pass over 96 training photos, one pass over 32 val photos.
    assert frozen["phase"] == "frozen" and frozen["images"] == 2 * 96 + 32 and frozen["images_per_s"] > 0
    assert finetune["phase"] == "finetune" and finetune["steps"] == 6 and finetune["images"] == 96
    assert finetune["started_at"] >= frozen["ended_at"] - 1e-3


def test_saved_model_loads_safely_and_takes_raw_pixels(trained_dir, photos_dir):
    import keras

    model = keras.saving.load_model(trained_dir / "model.keras", safe_mode=True, compile=False)
    layer_types = {type(layer).__name__ for layer in model.layers}
    assert not any(name.startswith("Random") for name in layer_types), "augmentation leaked into the model"
    assert model.layers[1].name == "preprocess" and model.output_shape == (None, 2)
    assert all(w.dtype == "float32" for w in model.weights)
    paths = sorted((photos_dir / "test" / "cat").glob("*.jpg"))[:2] + sorted((photos_dir / "test" / "coffee").glob("*.jpg"))[:2]
    probs = model.predict(load_images(paths, (SIZE, SIZE)).astype(np.float32), verbose=0)
    assert probs.shape == (4, 2) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert probs.std(axis=0).max() > 1e-3, "real backbone weights should separate photos"


def test_history_and_eval_report_both_phases(trained_dir):
    rows = list(csv.DictReader((trained_dir / "history.csv").read_text().splitlines()))
    assert [r["phase"] for r in rows] == ["frozen", "frozen", "finetune"]
    assert all(0.0 <= float(r["val_accuracy"]) <= 1.0 for r in rows)
    report = json.loads((trained_dir / "eval.json").read_text())
    assert report["split"] == "test" and report["images"] == 32
    assert sum(map(sum, report["confusion_matrix"])) == 32
    assert set(report["per_class"]) == {"cat", "coffee"}
    correct = sum(report["confusion_matrix"][i][i] for i in range(2))
    assert report["accuracy"] == pytest.approx(correct / 32)
    assert len(report["misclassified"]) == 32 - correct
    assert report["accuracy"] >= 0.75, "ImageNet features tell a cat from a coffee cup"


def test_each_epoch_is_one_line_without_a_terminal_and_the_curves_are_drawn(trained):
    out, printed = trained
    lines = [line for line in printed.splitlines() if line.startswith("train ")]
    assert [line.split(":")[0] for line in lines] == ["train frozen epoch 1/2", "train frozen epoch 2/2",
                                                      "train finetune epoch 1/1"]
    assert all("val_loss" in line for line in lines)
    assert (out / "history.png").read_bytes().startswith(PNG_MAGIC)


def test_class_weights_balance_manifest_counts(tmp_path, photos_dir):
    from pocketml.training.data import class_weights, load_splits

    root = write_manifest(tmp_path / "ds", subset_rows(photos_dir, {"val": 2}) + [
        r for r in subset_rows(photos_dir, {"train": 6}) if r["label"] == "cat"
    ] + subset_rows(photos_dir, {"train": 2})[2:])
    weights = class_weights(load_splits(root))
    assert weights == pytest.approx({0: 8 / (2 * 6), 1: 8 / (2 * 2)})


@pytest.mark.parametrize("name", [
    "mobilenet_v2", "mobilenet_v3_small", "efficientnet_lite0",
    pytest.param("mobilenet_v3_large", marks=pytest.mark.slow), pytest.param("resnet50", marks=pytest.mark.slow),
])
def test_backbone_names_its_top_blocks(name):
    from pocketml.training.backbones import Weights, build_backbone, get_backbone

    backbone = get_backbone(name)
    model = build_backbone(backbone, 32, 1.0, Weights("none"))
    start = backbone.top_block_start(model, 2)
    assert 0 < start < len(model.layers) - 1
    assert model.layers[start].name.startswith(backbone.block_names[-2] + "_")
    assert not any(layer.name.startswith(backbone.block_names[-3] + "_") for layer in model.layers[start:])


def test_missing_val_split_is_a_user_error(tmp_path, photos_dir):
    from pocketml.training.train import train

    root = write_manifest(tmp_path / "ds", subset_rows(photos_dir, {"train": 2}))
    with pytest.raises(PocketMLError, match="no val split"):
        train(root, tmp_path / "out", TrainConfig(weights="none"))
    assert not (tmp_path / "out").exists()


def test_class_without_training_images_is_a_user_error(tmp_path, photos_dir):
    from pocketml.training.train import train

    rows = [r for r in subset_rows(photos_dir, {"train": 2}) if r["label"] == "cat"]
    root = write_manifest(tmp_path / "ds", rows + subset_rows(photos_dir, {"val": 2}))
    with pytest.raises(PocketMLError, match="coffee have no training images"):
        train(root, tmp_path / "out", TrainConfig(weights="none"))


def test_too_small_image_and_unknown_backbone_are_user_errors(photos_dir, tmp_path):
    from pocketml.training.train import train

    with pytest.raises(PocketMLError, match="too small for mobilenet_v2; it needs at least 32"):
        train(photos_dir, tmp_path / "out", TrainConfig(weights="none", image_size=16))
    with pytest.raises(PocketMLError, match=r"unknown backbone 'mobilenet_v4'.*valid backbones: mobilenet_v2, "):
        train(photos_dir, tmp_path / "out", TrainConfig(backbone="mobilenet_v4"))
    with pytest.raises(PocketMLError, match="accepted: imagenet, none, or a path"):
        train(photos_dir, tmp_path / "out", TrainConfig(weights="no/such/file.h5"))
    assert not (tmp_path / "out").exists()


def test_offline_imagenet_download_names_the_alternatives(monkeypatch):
    from pocketml.training.backbones import Weights, _keras_cached_file, build_backbone, get_backbone

    cached = _keras_cached_file("mobilenet_v2", 0.35, 96)
    if cached and cached.exists():
        pytest.skip(f"{cached} is cached, so nothing is downloaded")
    # A proxy on a closed local port makes the real download fail as it does offline.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    match = r'offline\?.*`--weights PATH`, or `weights = "PATH"` under \[train\] in a pipeline TOML.*none.*efficientnet_lite0'
    with pytest.raises(PocketMLError, match=match):
        build_backbone(get_backbone("mobilenet_v2"), 96, 0.35, Weights("imagenet"))


def test_cli_reports_bad_backbone_on_one_line(photos_dir, tmp_path):
    import argparse

    from pocketml.training.cli import register

    parser = argparse.ArgumentParser(prog="pocketml")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", str(photos_dir), "--out", str(tmp_path / "m"), "--backbone", "resnet",
                              "--epochs", "3", "--no-augment", "--backend", "tensorflow", "--precision", "float32",
                              "--devices", "1", "--device-batch-size", "64", "--steps-per-epoch", "5"])
    from pocketml.training.cli import config_from_args

    config = config_from_args(args)
    assert (config.epochs_frozen, config.augment, config.backbone) == (3, False, "resnet")
    assert (config.backend, config.precision, config.devices, config.device_batch_size, config.steps_per_epoch) == (
        "tensorflow", "float32", 1, 64, 5)
    with pytest.raises(PocketMLError) as info:
        args.func(args)
    message = str(info.value)
    assert "\n" not in message and message.startswith("unknown backbone 'resnet'") and "resnet50" in message
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_resnet50_takes_rgb_like_keras_takes_bgr():
    import keras
    from pocketml.training.backbones import Weights, build_backbone, get_backbone

    keras.utils.set_random_seed(3)
    keras_bgr = keras.applications.ResNet50(input_shape=(32, 32, 3), include_top=False, weights=None)
    keras.utils.set_random_seed(3)
    ours_rgb = build_backbone(get_backbone("resnet50"), 32, 1.0, Weights("none"))
    rgb = np.random.default_rng(0).uniform(-100, 100, (2, 32, 32, 3)).astype(np.float32)
    expected = keras_bgr.predict(rgb[..., ::-1], verbose=0)
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(ours_rgb.predict(rgb, verbose=0), expected, rtol=1e-4, atol=1e-4)
