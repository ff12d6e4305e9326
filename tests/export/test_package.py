"""`pocketml package`: one bundle per platform assembled from the export and bench's choice, in its
own directory; the export directory is never touched."""

from __future__ import annotations

import json
import shutil

import pytest
from pocketml.export.package import package

from pocketml.app import cli
from pocketml.artifact import ExportManifest, Recommendation, save_recommendations
from pocketml.errors import PocketMLError
from tests.export.export_helpers import TFLITE_PRECISIONS, real_tflite_export


@pytest.fixture(scope="module")
def export_dir(real_model_dir, photos_dir, tmp_path_factory):
    return real_tflite_export(real_model_dir, photos_dir, tmp_path_factory.getbasetemp())


def snapshot(root):
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_bundle_leads_with_the_recommended_file_and_carries_only_passed_ones(export_dir, tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    save_recommendations(bench, [Recommendation("android", "tflite-int8-dynamic", "smallest, 3.7 MB")])
    before = snapshot(export_dir)
    contents = package(export_dir, tmp_path / "bundles", bench)
    assert snapshot(export_dir) == before  # one writer per directory
    manifest = ExportManifest.load(export_dir)
    passed = [a for a in manifest.artifacts if a.passed]
    assert contents == {"android": ["model-int8-dynamic.tflite", *(f"model-{a.precision}.tflite" for a in passed
                                                                 if a.precision != "int8-dynamic")]}
    android = tmp_path / "bundles" / "android"
    assert sorted(p.name for p in android.iterdir()) == sorted([*contents["android"], "labels.txt", "README.md",
                                                                "bundle.json"])
    assert (android / "labels.txt").read_text().split() == ["cat", "coffee"]
    bundle = json.loads((android / "bundle.json").read_text())
    assert bundle["recommended"] == "tflite-int8-dynamic" and bundle["model"]["labels"] == ["cat", "coffee"]
    first = bundle["files"][0]
    assert first["file"] == "model-int8-dynamic.tflite" and first["sha256"] == manifest.find("tflite", "int8-dynamic").sha256
    readme = (android / "README.md").read_text()
    assert "Recommended: `model-int8-dynamic.tflite` (int8-dynamic) — smallest, 3.7 MB." in readme
    assert 'setModelAssetPath("model-int8-dynamic.tflite")' in readme and "tasks-vision:0.10.21" in readme
    strict = next(line for line in readme.splitlines() if line.startswith("| `model-int8-uint8io.tflite`"))
    assert strict.endswith("| integer-only (NPU, DSP, Edge TPU, CPU) |")
    # A hard link: the bundle costs no second copy of the weights.
    assert (android / "model-fp32.tflite").stat().st_ino == (export_dir / "tflite" / "model-fp32.tflite").stat().st_ino


def test_a_failed_file_is_listed_not_shipped(export_dir, tmp_path):
    copy = shutil.copytree(export_dir, tmp_path / "export")
    manifest = ExportManifest.load(copy)
    fp16 = manifest.find("tflite", "fp16")
    fp16.parity.status, fp16.parity.reason = "failed", "max|dp| 0.04 > 0.03"
    strict = manifest.find("tflite", "int8-uint8io")
    strict.parity.status, strict.parity.reason = "failed", "top-1 agreement 0.969 < 0.99"
    manifest.save(copy)
    contents = package(copy, tmp_path / "bundles")
    assert "model-fp16.tflite" not in contents["android"]
    readme = (tmp_path / "bundles" / "android" / "README.md").read_text()
    assert "Not included: tflite-fp16 (failed: max|dp| 0.04 > 0.03)." in readme
    assert ("Not included: tflite-int8-uint8io (failed: top-1 agreement 0.969 < 0.99). It is the strict integer-only "
            "file (NPU, DSP, Edge TPU): the export keeps it at `tflite/model-int8-uint8io.tflite`") in readme
    assert "No file is recommended yet" in readme
    # Every table row has the header's four cells, even with '|' in a reason.
    rows = [line for line in readme.splitlines() if line.startswith("| `")]
    assert len(rows) == len(TFLITE_PRECISIONS) - sum(not a.passed for a in manifest.artifacts)
    assert all(row.replace("\\|", "").count("|") == 7 for row in rows)


def test_packaging_again_replaces_the_bundles_whole(export_dir, tmp_path):
    out = tmp_path / "bundles"
    package(export_dir, out)
    (out / "android" / "stale.txt").write_text("from an older run")
    package(export_dir, out)
    assert not (out / "android" / "stale.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary directory left behind"


def test_cli_package_and_a_bench_dir_without_recommendations(export_dir, tmp_path, capsys):
    assert cli.main(["package", str(export_dir), "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "android" / "bundle.json").is_file()
    assert cli.main(["package", str(export_dir), "--out", str(tmp_path / "c"), "--bench", str(tmp_path)]) == 2
    assert "has no recommendations.json" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    with pytest.raises(PocketMLError, match="has no manifest.json"):
        package(tmp_path, tmp_path / "d")
