"""Fixtures the format tests share: the real-weights classifier loaded once, its spec, and its export
with every default."""

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


@pytest.fixture(scope="session")
def default_export(real_model_dir: Path, photos_dir: Path, tmp_path_factory):
    """(manifest, folder) of `pocketml export MODEL --calibration PHOTOS` with every default: each format
    this machine converts to (Core AI with the extra), each precision, every file judged. The slowest
    export of the suite (about 10 minutes with Core AI on 2 cores), so the tests of every format share it."""
    from pocketml.export.exporter import export_model

    from pocketml.configs.export import ExportConfig

    out = tmp_path_factory.mktemp("default") / "export"
    return export_model(real_model_dir, out, ExportConfig(calibration=photos_dir)), out
