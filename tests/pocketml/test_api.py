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
    row = results.row("tflite-fp32")
    assert row.top1_agreement == manifest.find("tflite", "fp32").parity.top1_agreement and row.status == "passed"
    assert row.p50_ms(1) is not None and results.rows[0].name == "keras"
    bundles = pocketml.package(tmp_path / "export", tmp_path / "bundles", tmp_path / "bench")
    assert bundles.bundles == {"android": ["model-fp32.tflite"]} and bundles.folder("android").is_dir()
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


def test_acquire_and_curate_from_python_return_typed_results(tmp_path):
    from pocketml.results import AcquireResult, CurateResult

    sources = [{"type": "glyphs", "letters": ["A", "B"], "per_letter": 12, "image_size": 64}]
    acquired = pocketml.acquire(tmp_path / "ds", sources, workers=1)
    assert isinstance(acquired, AcquireResult)
    assert acquired.images == acquired.by_status["ok"] == 24 and set(acquired.by_label) == {"A", "B"}
    assert acquired.processed == 24 and acquired.out_dir == tmp_path / "ds"
    again = pocketml.acquire(tmp_path / "ds", sources, workers=1)
    assert (again.images, again.processed) == (24, 0)  # a rerun resumes
    curated = pocketml.curate(tmp_path / "ds", near_distance=12, workers=1)
    assert isinstance(curated, CurateResult)
    assert curated.labels == ("A", "B") and curated.images_in == 24
    assert curated.images_kept + curated.images_removed == 24
    assert curated.report["config"]["group_distance"] == 12  # a looser near distance widens grouping
