"""Backend choice, precision, batch and learning-rate scaling: the decisions, checked without a GPU."""

from __future__ import annotations

import json

import pytest
from pocketml.training.devices import (
    ACCELERATOR_BATCH,
    MIN_STEPS_PER_EPOCH,
    Devices,
    configured_backend,
    lr_scale,
    process_backend,
    resolve_backend,
    scaled_batch,
)

from pocketml.configs.train import TrainConfig
from pocketml.errors import PocketMLError


@pytest.mark.parametrize(("devices", "precision"), [
    (Devices("cpu", 1, "cpu"), "float32"),
    (Devices("gpu", 1, "NVIDIA H200", 9.0), "mixed_bfloat16"),
    (Devices("gpu", 8, "NVIDIA A100", 8.0), "mixed_bfloat16"),
    (Devices("gpu", 1, "Tesla V100", 7.0), "mixed_float16"),
    (Devices("gpu", 1, "Tesla P100", 6.0), "float32"),
    (Devices("gpu", 1, "AMD Instinct MI250X", None), "mixed_bfloat16"),
    (Devices("tpu", 4, "TPU v4"), "mixed_bfloat16"),
])
def test_precision_follows_what_the_device_computes_fast(devices, precision):
    assert devices.default_precision() == precision


def test_batch_grows_with_accelerators_but_keeps_steps_on_small_datasets():
    config = TrainConfig(batch_size=32)
    h200 = Devices("gpu", 1, "NVIDIA H200", 9.0)
    assert scaled_batch(config, Devices("cpu", 1, "cpu"), 100_000) == 32
    assert scaled_batch(config, Devices("cpu", 2, "cpu"), 100_000) == 32, "host devices share one CPU"
    assert scaled_batch(TrainConfig(batch_size=15), Devices("cpu", 2, "cpu"), 1000) == 16, "a multiple of 2"
    assert scaled_batch(config, h200, 100_000) == ACCELERATOR_BATCH
    assert scaled_batch(config, Devices("gpu", 4, "A100", 8.0), 100_000) == 4 * ACCELERATOR_BATCH
    assert scaled_batch(config, h200, 200) == 32, f"200 images keep {MIN_STEPS_PER_EPOCH}+ steps per epoch"
    assert scaled_batch(config, h200, 1600) == 200
    assert scaled_batch(TrainConfig(batch_size=32, steps_per_epoch=24), h200, 200) == ACCELERATOR_BATCH
    assert scaled_batch(TrainConfig(device_batch_size=100), Devices("gpu", 3, "A100", 8.0), 10_000) == 300
    assert lr_scale(config, 128) == pytest.approx(2.0) and lr_scale(TrainConfig(scale_lr=False), 128) == 1.0


def test_backend_comes_from_the_environment_then_keras_json(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert configured_backend() == "tensorflow"
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "jax"}))
    assert configured_backend() == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    assert configured_backend() == "tensorflow"
    import keras

    assert process_backend() == keras.backend.backend() == "tensorflow"  # this process already chose
    assert resolve_backend("auto") == "tensorflow" and resolve_backend("jax") == "jax"


def test_unusable_backends_and_precisions_are_user_errors(monkeypatch):
    monkeypatch.setattr("pocketml.training.devices.process_backend", lambda: "torch")
    with pytest.raises(PocketMLError, match="Keras backend 'torch' cannot train here; accepted: auto, tensorflow, jax"):
        resolve_backend("auto")
    with pytest.raises(PocketMLError, match=r"train.backend = 'pytorch'; accepted: auto, tensorflow, jax"):
        TrainConfig(backend="pytorch")
    with pytest.raises(PocketMLError, match="train.precision = 'fp16'; accepted: auto, float32, mixed_bfloat16"):
        TrainConfig(precision="fp16")
    with pytest.raises(PocketMLError, match="train.devices = -1; need 0 or more"):
        TrainConfig(devices=-1)


def test_tensorflow_plan_on_this_cpu():
    from pocketml.training.devices import device_plan

    plan = device_plan(TrainConfig(batch_size=24, loader_workers=3), 96)
    assert plan.record() == {"backend": "tensorflow", "platform": "cpu", "devices": 1, "kind": "cpu",
                             "precision": "float32", "batch_size": 24, "lr_scale": 1.0, "loader_workers": 3,
                             "distribution": "none"}
    import keras

    with device_plan(TrainConfig(precision="mixed_bfloat16"), 96).scope():
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"
