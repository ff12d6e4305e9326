"""export_model: files, manifest, failures recorded per variant, bad input leaves nothing behind."""

from __future__ import annotations

import json

import pytest
from pocketml.export.exporter import export_model, planned_variants
from pocketml.export.registry import format_module

from pocketml.artifact import ExportManifest
from pocketml.configs.export import ExportConfig
from pocketml.errors import PocketMLError
from pocketml.fsutil import sha256_file, tree_bytes
from tests.export.export_helpers import TFLITE_PRECISIONS, real_tflite_export, tiny_model_dir


@pytest.fixture(scope="module")
def export_dir(real_model_dir, photos_dir, tmp_path_factory):
    return real_tflite_export(real_model_dir, photos_dir, tmp_path_factory.getbasetemp())


@pytest.fixture
def tiny_dir(tmp_path):
    return tiny_model_dir(tmp_path / "model")


def test_manifest_records_every_file_as_it_is_on_disk(export_dir, real_model_dir):
    manifest = ExportManifest.load(export_dir)
    assert manifest.model.labels == ("cat", "coffee") and manifest.model.image_size == (96, 96)
    assert manifest.model.spec.source_sha256 == sha256_file(real_model_dir / "model.keras")
    assert manifest.model.source == str((real_model_dir / "model.keras").resolve())
    assert len(manifest.images["calibration"]["images"]) == 24  # a quarter of the 96 training photos
    assert manifest.model.normalization.name == "efficientnet_lite"
    written = json.loads((export_dir / "manifest.json").read_text())["model"]  # the file's shape is unchanged
    assert written["labels"] == ["cat", "coffee"] and written["image_size"] == [96, 96] and "opset" in written
    for artifact in manifest.artifacts:
        path = export_dir / artifact.path
        assert artifact.status == "exported"
        assert artifact.sha256 == sha256_file(path) and artifact.bytes == tree_bytes(path)
        assert artifact.convert_seconds > 0
    assert sorted(p.name for p in (export_dir / "tflite").iterdir()) == sorted(
        f"model-{p}.tflite" for p in TFLITE_PRECISIONS
    )
    assert sorted(p.name for p in export_dir.iterdir()) == ["libraries.log", "manifest.json", "tflite"]
    assert not [p for p in export_dir.rglob(".*")], "temporary files left behind"


def test_other_libraries_output_goes_to_the_export_log_not_the_terminal(export_dir):
    # TensorFlow's converter logs and warnings were captured while converting.
    assert (export_dir / "libraries.log").stat().st_size > 0


def test_int8_asked_without_calibration_is_refused_before_anything_is_written(tiny_dir, tmp_path):
    config = ExportConfig(formats=["tflite"], precisions=["fp32", "int8", "int8-dynamic"], validate=False)
    with pytest.raises(PocketMLError, match=r"tflite int8 need\(s\) calibration images; pass --calibration DIR"):
        export_model(tiny_dir, tmp_path / "out", config)
    assert not (tmp_path / "out").exists()


def test_a_failing_variant_is_recorded_and_the_others_export(tiny_dir, tmp_path):
    out = tmp_path / "out"
    # A model this small has no compressed Core ML rung within 30 % of fp32's size: that converter fails for real.
    config = ExportConfig(formats=["coreml"], precisions=["fp32", "fp16", "compressed"], validate=False)
    manifest = export_model(tiny_dir, out, config)
    status = {a.precision: a.status for a in manifest.artifacts}
    assert status == {"fp32": "exported", "fp16": "exported", "compressed": "failed"}
    failed = manifest.find("coreml", "compressed")
    assert "within 30 % of fp32's size" in failed.reason and failed.sha256 is None
    assert "\n" not in failed.reason
    assert not (out / failed.path).exists()
    assert (out / "coreml" / "model-fp16.mlpackage").is_dir()
    saved = json.loads((out / "manifest.json").read_text())
    assert {a["precision"]: a["status"] for a in saved["artifacts"]} == status


def test_default_precisions_leave_out_calibrated_ones_without_calibration():
    modules = {"tflite": format_module("tflite")}
    variants, notes = planned_variants(modules, [], has_calibration=False)
    assert variants == [("tflite", "fp32"), ("tflite", "fp16"), ("tflite", "int8-dynamic")]
    assert any("int8-uint8io skipped" in n for n in notes)
    assert len(planned_variants(modules, [], has_calibration=True)[0]) == 5


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (dict(formats=["tflite", "caffe"]), "accepted: tflite, coreml, onnx"),
        (dict(formats=["tflite"], precisions=["int4"]), "accepted: fp32, fp16, int8-dynamic, int8, int8-uint8io"),
        (dict(formats=["tflite"], precisions=["palettized-6bit"]), "unknown precision"),
        (dict(formats=["tflite"], calibration="EMPTY"), "holds no images"),
        (dict(formats=["tflite"], labels="THREE"), "3 labels but the model outputs 2 classes"),
    ],
)
def test_bad_input_fails_before_anything_is_written(tiny_dir, tmp_path, config, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    three = tmp_path / "three.txt"
    three.write_text("a\nb\nc\n")
    replace = {"EMPTY": empty, "THREE": three}
    out = tmp_path / "out"
    with pytest.raises(PocketMLError) as exc:
        export_model(tiny_dir, out, ExportConfig(**{k: replace.get(v, v) if isinstance(v, str) else v for k, v in config.items()}))
    assert message in str(exc.value) and "\n" not in str(exc.value)
    assert not out.exists()


def test_missing_model_leaves_no_output(tmp_path):
    with pytest.raises(PocketMLError, match="does not exist"):
        export_model(tmp_path / "missing", tmp_path / "out", ExportConfig(formats=["tflite"]))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.timeout(2400)  # the shared default export (with Core AI's ladder when the extra is installed)
def test_every_format_and_precision_exports_and_packages_into_app_bundles(default_export, tmp_path):
    from pocketml.export.exporter import format_modules
    from pocketml.export.package import package

    manifest, out = default_export
    formats = list(format_modules([], []))
    assert formats[:3] == ["tflite", "coreml", "onnx"]
    expected = {(f, p) for f in formats for p in format_module(f).PRECISIONS}
    assert {(a.format, a.precision) for a in manifest.artifacts} == expected
    assert [a.name for a in manifest.artifacts if a.status != "exported"] == []
    package(out, tmp_path / "bundles")
    for bundle, snippet in (("android", "ImageClassifier"), ("ios", "VNCoreMLRequest"), ("onnx", "InferenceSession")):
        assert snippet in (tmp_path / "bundles" / bundle / "README.md").read_text()
    assert (tmp_path / "bundles" / "onnx" / "labels.txt").is_file()
    if "coreai" in formats:  # the iOS bundle carries both Apple formats, each with its snippet
        assert "import CoreAI" in (tmp_path / "bundles" / "ios" / "README.md").read_text()
    for artifact in manifest.artifacts:
        assert artifact.parity.status in ("passed", "failed", "too few images", "skipped")
        if artifact.parity.status == "skipped":
            assert artifact.format == "coreml" and artifact.parity.reason
    assert manifest.find("onnx", "fp32").parity.status == "passed"
    assert manifest.find("tflite", "fp32").parity.status == "passed"
