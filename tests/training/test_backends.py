"""Training on JAX from this TensorFlow process (a subprocess does it), and data parallelism on two
forced host devices giving the same model as one device."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pocketml.configs.train import TrainConfig
from pocketml.errors import PocketMLError
from tests.conftest import PROJECT_ROOT


def test_jax_backend_trains_in_a_subprocess_and_this_process_stays_on_tensorflow(photos_dir, tmp_path):
    import keras
    from pocketml.training.train import train

    config = TrainConfig(backbone="efficientnet_lite0", weights="imagenet", image_size=32, batch_size=16,
                         epochs_frozen=2, epochs_finetune=0, feature_cache_copies=0, backend="jax")
    out = train(photos_dir, tmp_path / "model", config)
    assert keras.backend.backend() == "tensorflow"
    run = json.loads((out / "training.json").read_text())
    assert run["backend"] == "jax" and [p["phase"] for p in run["phases"]] == ["frozen"]
    assert json.loads((out / "train_config.json").read_text())["backend"] == "jax"
    model = keras.saving.load_model(out / "model.keras", safe_mode=True, compile=False)  # on TensorFlow
    assert model.output_shape == (None, 2)


def test_an_error_inside_the_subprocess_is_the_same_one_line_user_error(photos_dir, tmp_path):
    from pocketml.training.train import train

    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint at all")  # passes the checks before the subprocess starts
    config = TrainConfig(backbone="efficientnet_lite0", weights=str(broken), image_size=32, backend="jax")
    with pytest.raises(PocketMLError, match=r"broken.pth is not a") as info:
        train(photos_dir, tmp_path / "model", config)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_two_devices_train_the_same_model_as_one_without_tensorflow(photos_dir, tmp_path):
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=str(PROJECT_ROOT),
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    done = subprocess.run([sys.executable, "-m", "tests.training.jax_devices_child", str(photos_dir), str(tmp_path)],
                          env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1200, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.loads((tmp_path / "child.json").read_text()) == {"tensorflow_imported": False}
    one, two = (json.loads((tmp_path / f"devices{n}" / "training.json").read_text()) for n in (1, 2))
    assert (one["devices"], one["distribution"], one["weight_replicas"]) == (1, "none", 1)
    assert (two["devices"], two["distribution"], two["weight_replicas"]) == (2, "DataParallel", 2)
    assert one["batch_size"] == two["batch_size"] == 16
    p1, p2 = np.load(tmp_path / "probs1.npy"), np.load(tmp_path / "probs2.npy")
    # Same seeds, same global batch: the sharded gradients sum to the single-device ones.
    assert np.abs(p1 - p2).max() <= 1e-5
    assert p1.std(axis=0).max() > 1e-3, "a trained model, not a constant"
