"""The Python API: the same stages as the CLI, settings validated the same way, typed results."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pocketml
from pocketml.artifact import ExportManifest
from pocketml.errors import PocketMLError


def test_import_pocketml_loads_no_stage_and_no_tensorflow():
    code = "import sys, pocketml; print(sorted(m for m in ('tensorflow', 'export', 'training', 'acquisition', 'benchmarks') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_every_api_function_is_documented():
    for name in pocketml.API:
        function = getattr(pocketml, name)
        assert callable(function) and function.__doc__, name
    with pytest.raises(AttributeError):
        pocketml.exprot  # noqa: B018


def test_a_bad_setting_is_the_same_one_line_error_as_in_a_toml_file(tmp_path):
    with pytest.raises(PocketMLError, match=r"unknown key 'export.calibration_image'.*did you mean 'calibration_images'"):
        pocketml.export(tmp_path / "model.keras", tmp_path / "out", calibration_image=10)
    with pytest.raises(PocketMLError, match=r"bench.threads"):
        pocketml.bench(tmp_path, tmp_path / "bench", threads="four")
    assert not (tmp_path / "out").exists()


def test_export_bench_package_from_python_return_typed_results(real_model_dir, photos_dir, tmp_path):
    manifest = pocketml.export(real_model_dir, tmp_path / "export", formats=["tflite"], precisions=["fp32"],
                               calibration=photos_dir)
    assert isinstance(manifest, ExportManifest) and manifest.find("tflite", "fp32").passed
    results = pocketml.bench(tmp_path / "export", tmp_path / "bench", threads=[1], min_time_s=0.02, min_runs=5,
                             measure_memory=False, probe_peak=False)
    assert results.recommended("android") == "tflite-fp32"
    assert results.row("tflite-fp32")["top1_agreement"] == manifest.find("tflite", "fp32").parity.top1_agreement
    bundles = pocketml.package(tmp_path / "export", tmp_path / "bundles", tmp_path / "bench")
    assert bundles == {"android": ["model-fp32.tflite"]}
    again = pocketml.validate(tmp_path / "export")
    assert again.find("tflite", "fp32").parity == manifest.find("tflite", "fp32").parity


def test_a_users_export_folder_does_not_shadow_the_packages(tmp_path):
    # Where a user runs a notebook there is often an export/ (or training/) folder of their own.
    for name in ("export", "training", "acquisition", "benchmarks"):
        (tmp_path / name / "tflite").mkdir(parents=True)
        (tmp_path / name / "__init__.py").write_text("raise ImportError('the user folder was imported')")
    code = ("import pocketml.export.tflite, pocketml.training.train, pocketml.acquisition.acquire, "
            "pocketml.benchmarks.bench; print(pocketml.export.tflite.SUFFIX)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.strip() == ".tflite"
