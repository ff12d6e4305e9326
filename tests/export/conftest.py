"""Fixtures the format tests share: the real-weights classifier loaded once, and its spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from pocketml.spec import ModelSpec


@pytest.fixture(scope="session")
def keras_model(real_model_dir: Path):
    import keras

    return keras.saving.load_model(real_model_dir / "model.keras", compile=False, safe_mode=True)


@pytest.fixture(scope="session")
def spec(real_model_dir: Path) -> ModelSpec:
    return ModelSpec.load(real_model_dir)
