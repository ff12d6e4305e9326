"""A real-weight export judged in headless Chromium (the web device), shared by the web tests: the
EfficientNet-Lite0 classifier of tests/models.py exported to fp32 TFLite and ONNX, benched with
`--device web`, packaged. Needs Chromium and the pinned runtimes (`pocketml device setup web`)."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest


def require_web_device() -> None:
    """Skip, saying what to install, where the browser or the runtimes are absent (CI installs both)."""
    from pocketml.benchmarks.devices import web

    state = web.status()
    if not state.ready:
        pytest.skip("web device not ready: " + "; ".join(state.missing))


@functools.cache
def web_benched_export(model_dir: Path, photos_dir: Path, base: Path) -> tuple[Path, Path, Path]:
    """(export_dir, bench_dir, bundles_dir) of `model_dir`, fp32 TFLite and ONNX, benched on the web."""
    from pocketml.benchmarks.bench import bench
    from pocketml.export.exporter import export_model
    from pocketml.export.package import package

    from pocketml.configs.bench import BenchConfig
    from pocketml.configs.export import ExportConfig

    export_dir, bench_dir, bundles = base / "web_export", base / "web_bench", base / "web_bundles"
    export_model(model_dir, export_dir, ExportConfig(formats=["tflite", "onnx"], precisions=["fp32"],
                                                     calibration=photos_dir))
    config = BenchConfig(threads=[1], min_time_s=0.2, measure_memory=False, probe_peak=False, devices=["web"])
    bench(export_dir, bench_dir, config)
    package(export_dir, bundles, bench_dir)
    return export_dir, bench_dir, bundles
