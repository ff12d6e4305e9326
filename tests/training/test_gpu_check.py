"""benchmarks/gpu_train_check.py, run end to end on this CPU under JAX with tiny settings: the carried
wheels are unpacked and importable, both phases train on two (forced) host devices without importing
TensorFlow, the RESULT line has every figure, and the model it writes loads on TensorFlow and scores
its own evaluation images exactly as JAX did."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import PROJECT_ROOT

SIZE = 48


def probe_wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel (module probe_pkg), standing in for the carried keras wheel."""
    files = {
        "probe_pkg.py": b"VALUE = 42\n",
        "probe_pkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: probe-pkg\nVersion: 1.0\n",
        "probe_pkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }

    def record(name: str, data: bytes) -> str:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        return f"{name},sha256={digest},{len(data)}"

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "probe_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
        rows = [record(n, d) for n, d in files.items()] + ["probe_pkg-1.0.dist-info/RECORD,,"]
        wheel.writestr("probe_pkg-1.0.dist-info/RECORD", "\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def check_run(photos_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_check")
    probe_wheel(tmp / "wheels")
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), XLA_FLAGS="--xla_force_host_platform_device_count=2")
    env.pop("KERAS_BACKEND", None)  # the script chooses it
    command = [sys.executable, str(PROJECT_ROOT / "benchmarks" / "gpu_train_check.py"),
               "--wheels", str(tmp / "wheels"), "--target", str(tmp / "site"), "--data", str(photos_dir),
               "--out", str(tmp / "out"), "--image-size", str(SIZE), "--device-batch", "16", "--copies", "1",
               "--frozen-epochs", "2", "--epochs", "2", "--steps", "2", "--unfreeze", "1"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(result) == 1 and done.stdout.rstrip().endswith(result[0]), "RESULT must be the last line"
    return tmp, json.loads(result[0][len("RESULT "):])


def test_check_trains_both_phases_with_jax_on_two_devices_without_tensorflow(check_run):
    tmp, figures = check_run
    assert (tmp / "site" / "probe_pkg.py").is_file(), "carried wheels unpack into the target folder"
    assert figures["backend"] == "jax" and figures["platform"] == "cpu" and figures["devices"] == 2
    assert figures["tensorflow_imported"] is False
    assert figures["phase1_images"] == 2 * 96 + 32 and figures["phase1_images_per_s"] > 0
    assert figures["phase2_steps"] == 4 and figures["phase2_images_per_s"] > 0
    assert figures["phase2_step_s"] > figures["phase2_loader_s_per_batch"] >= 0
    assert figures["eval_split"] == "test" and 0.0 <= figures["eval_accuracy"] <= 1.0
    assert figures["peak_gpu_memory_bytes"] is None and figures["phase2_gpu_busy"] is None  # no GPU here
    run = json.loads((tmp / "out" / "model" / "training.json").read_text())
    assert (run["distribution"], run["weight_replicas"], run["batch_size"]) == ("DataParallel", 2, 32)
    assert sorted(p.name for p in (tmp / "out" / "model").iterdir()) == sorted(
        ["model.keras", "spec.json", "labels.txt", "history.csv", "training.json", "eval.json"])


def test_jax_trained_model_scores_the_same_on_tensorflow(check_run, photos_dir):
    import keras
    from pocketml.training.data import decoded_images, load_splits

    tmp, figures = check_run
    assert keras.backend.backend() == "tensorflow"
    model = keras.saving.load_model(tmp / "out" / "model" / "model.keras", safe_mode=True, compile=False)
    split = load_splits(photos_dir).test
    probs = model.predict(decoded_images(split, SIZE), verbose=0)
    report = json.loads((tmp / "out" / "model" / "eval.json").read_text())
    assert float((probs.argmax(axis=1) == split.labels).mean()) == report["accuracy"]
    for miss in report["misclassified"]:  # JAX's probabilities of the images it got wrong
        index = split.paths.index(miss["path"])
        assert abs(float(probs[index].max()) - miss["confidence"]) <= 1e-4
    assert np.isfinite(probs).all()
