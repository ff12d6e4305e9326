"""Platforms apart from formats: a platform (bundle folder and recommendation group) takes the files of
every format that declares it — iOS takes Core ML (iOS 16+) and Core AI (iOS 27+) — and a device may
stand for a platform of its own (a browser's "web" running ONNX and TFLite files). Bench recommends one
file per platform and OS tier; package leads the bundle with the file for the export's `--min-ios`."""

from __future__ import annotations

import json

from pocketml.benchmarks import recommend
from pocketml.export.package import package
from pocketml.export.registry import os_tiers, platform_formats, platform_min_os

from pocketml.artifact import (
    Artifact,
    ExportManifest,
    ModelRecord,
    Parity,
    Recommendation,
    load_recommendations,
    save_recommendations,
)
from pocketml.fsutil import sha256_file
from pocketml.spec import ModelSpec


def test_platforms_are_declared_by_the_formats_and_may_be_added_by_a_device():
    assert platform_formats() == {"android": ("tflite",), "ios": ("coreml", "coreai"), "onnx": ("onnx",)}
    assert platform_formats({"web": ("onnx", "tflite")})["web"] == ("onnx", "tflite")
    assert os_tiers(("coreml", "coreai"), "ios") == {16: ("coreml",), 27: ("coreai",)}
    assert os_tiers(("coreml", "coreai"), "web") == {0: ("coreml", "coreai")}
    ios27 = ModelRecord(ModelSpec(labels=("a", "b"), image_size=(96, 96)), minimum_deployment_target="iOS27")
    assert platform_min_os("ios", ios27) == 27
    assert platform_min_os("android", ios27) == 0


def _row(name: str, p50: float | None, size: int) -> dict:
    fmt, precision = name.split("-", 1)
    # The browser judged and timed the files it runs (bench --device web).
    devices = {"web:chromium": {"status": "passed", "speed": p50, "cost": {"p50_ms": p50}}} if fmt in ("onnx", "tflite") else {}
    return {"name": name, "format": fmt, "precision": precision, "status": "passed", "accuracy": 0.9,
            "accuracy_drop_points": 0.0, "top1_agreement": 1.0, "images": 100, "bytes": size,
            "latency": {"1": {"p50_ms": p50}} if p50 else {}, "devices": devices}


def test_ios_gets_one_recommendation_per_os_tier_and_a_device_platform_its_own():
    rows = [{"name": "keras", "accuracy": 0.9}, _row("coreml-fp16", None, 2_000_000),
            _row("coreml-fp32", None, 4_000_000), _row("coreai-fp16", 3.0, 900_000),
            _row("onnx-fp32", 5.0, 4_000_000), _row("tflite-fp16", 2.0, 2_000_000)]
    choices = recommend.choose(rows, "latency", devices={"web": "web:chromium"})
    assert {name: c.artifact for name, c in recommend.keyed(choices).items()} == {
        "android": "tflite-fp16",
        "ios (iOS 16+, macOS 13+ (Core ML))": "coreml-fp16",
        "ios (iOS 27+, macOS 27+ (Core AI))": "coreai-fp16",
        "onnx": "onnx-fp32",
        "web": "tflite-fp16",
    }
    assert set(next(c for c in choices if c.platform == "web").runs_on.split(" / ")) == {
        "ONNX Runtime (desktop, server; ORT Mobile on Android and iOS)", "Android (LiteRT, MediaPipe Tasks)"}


def _export_dir(tmp_path, min_ios: str):
    """An export directory as `pocketml export` leaves it, its files reduced to what package reads."""
    out = tmp_path / f"export-{min_ios}"
    artifacts = []
    for fmt, precision, suffix in (("coreml", "fp16", ".mlpackage"), ("coreai", "fp16", ".aimodel"),
                                   ("coreai", "fp32", ".aimodel")):
        path = f"{fmt}/model-{precision}{suffix}"
        (out / path).mkdir(parents=True)
        (out / path / "weights.bin").write_bytes(b"\0" * 100)
        parity = Parity(max_abs_diff=0.001, top1_agreement=1.0, flips=0, images=100, status="passed")
        artifacts.append(Artifact(fmt, precision, path, sha256=sha256_file(out / path), bytes=100, parity=parity))
    ExportManifest(ModelRecord(ModelSpec(labels=("cat", "coffee"), image_size=(96, 96)), minimum_deployment_target=min_ios),
                   artifacts).save(out)
    return out


def test_the_ios_bundle_carries_core_ml_and_core_ai_and_recommends_per_min_ios(tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    save_recommendations(bench, [
        Recommendation("ios", "coreml-fp16", "smallest", "iOS 16+, macOS 13+ (Core ML)"),
        Recommendation("ios", "coreai-fp16", "fastest", "iOS 27+, macOS 27+ (Core AI)"),
    ])
    assert [r.runs_on for r in load_recommendations(bench)] == ["iOS 16+, macOS 13+ (Core ML)",
                                                                "iOS 27+, macOS 27+ (Core AI)"]
    contents = package(_export_dir(tmp_path, "iOS16"), tmp_path / "b16", bench)
    assert contents == {"ios": ["model-fp16.mlpackage", "model-fp16.aimodel", "model-fp32.aimodel"]}
    bundle = json.loads((tmp_path / "b16" / "ios" / "bundle.json").read_text())
    assert bundle["recommended"] == "coreml-fp16"
    assert [r["artifact"] for r in bundle["recommendations"]] == ["coreml-fp16", "coreai-fp16"]
    readme = (tmp_path / "b16" / "ios" / "README.md").read_text()
    assert readme.startswith("# iOS bundle")
    assert "Recommended: `model-fp16.mlpackage` (fp16) — smallest." in readme
    assert "Recommended on iOS 27+, macOS 27+ (Core AI): `model-fp16.aimodel` (fp16) — fastest." in readme
    assert "## Core ML" in readme and "## Core AI" in readme and "import CoreAI" in readme
    assert 'Bundle.main.url(forResource: "model-fp16.aimodel"' in readme
    assert not (tmp_path / "b16" / "ios" / "labels.txt").exists()  # both formats carry their labels

    package(_export_dir(tmp_path, "iOS27"), tmp_path / "b27", bench)
    bundle = json.loads((tmp_path / "b27" / "ios" / "bundle.json").read_text())
    assert bundle["recommended"] == "coreai-fp16"
    assert [f["file"] for f in bundle["files"]][:2] == ["model-fp16.aimodel", "model-fp16.mlpackage"]


def test_a_platform_only_a_device_recommended_gets_a_bundle_of_its_files(tmp_path):
    # (the browser's own bundle, with its runtime and page, is written by export/web_bundle.py)
    bench = tmp_path / "bench"
    bench.mkdir()
    save_recommendations(bench, [Recommendation("mac", "coreai-fp32", "the one a Mac device ran")])
    contents = package(_export_dir(tmp_path, "iOS16"), tmp_path / "bundles", bench)
    assert contents["mac"] == ["model-fp32.aimodel", "model-fp16.aimodel"]
    readme = (tmp_path / "bundles" / "mac" / "README.md").read_text()
    assert readme.startswith("# mac bundle") and "Recommended: `model-fp32.aimodel`" in readme
