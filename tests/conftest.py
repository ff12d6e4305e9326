"""Shared fixtures: the real data in ../shared/data and small classifiers with real weights.

MobileNets with random weights give nearly the same output for every image, so anything that
asserts parity uses the real ImageNet backbone weights from ../shared/data/weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("POCKETML_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))
MOBILENET_V2_035 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (a user's clone has no ../shared)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def hotdog_dir(shared_data: Path) -> Path:
    path = shared_data / "hotdog"
    if not path.is_dir():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="session")
def mobilenet_v2_035_weights(shared_data: Path) -> Path:
    path = shared_data / "weights" / MOBILENET_V2_035
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="session")
def real_model_dir(tmp_path_factory, mobilenet_v2_035_weights: Path, hotdog_dir: Path) -> Path:
    """A two-class hot-dog classifier: real MobileNetV2 α0.35 ImageNet backbone at 96 px, a Dense+softmax
    head fitted on the 200 training photos, saved as model.keras + spec.json + labels.txt (what
    `pocketml train` writes).
    """
    from tests.models import save_real_classifier

    return save_real_classifier(
        tmp_path_factory.mktemp("real_model"), mobilenet_v2_035_weights, size=96, train_dir=hotdog_dir / "train"
    )
