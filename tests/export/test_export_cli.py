"""`pocketml export` / `pocketml validate` through the real command-line entry point."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest

from pocketml.app import cli
from pocketml.artifact import ExportManifest
from pocketml.fsutil import sha256_file
from tests.export.export_helpers import real_tflite_export, tiny_model_dir


@pytest.fixture(autouse=True)
def export_commands_only(monkeypatch):
    # Other stages' CLI modules are written in parallel; this test exercises the export commands.
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("pocketml.export.cli",))


@pytest.fixture
def tiny_dir(tmp_path):
    return tiny_model_dir(tmp_path / "model")


def test_unknown_format_is_one_line_exit_2_and_writes_nothing(tiny_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["export", str(tiny_dir), "--out", str(out), "--formats", "tflite,tensorrt"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "accepted: tflite, coreml, onnx" in err
    assert not out.exists()


def test_unknown_precision_lists_the_accepted_ones(tiny_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["export", str(tiny_dir), "--out", str(out), "--formats", "tflite", "--precisions", "fp8"]
    assert cli.main(argv) == 2
    assert "accepted: fp32, fp16, int8-dynamic, int8, int8-uint8io" in capsys.readouterr().err
    assert not out.exists()


def test_empty_calibration_folder_is_rejected(tiny_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    argv = ["export", str(tiny_dir), "--out", str(tmp_path / "out"), "--calibration", str(tmp_path / "empty")]
    assert cli.main([*argv, "--formats", "tflite"]) == 2
    assert "holds no images" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--formats", "tflite,onnx", "--precisions", "fp32,int8"],
         "tflite int8, onnx int8 need(s) calibration images; pass --calibration DIR"),
        (["--formats", "onnx", "--opset", "19"], "opset 19 is not accepted; use 13..18 (default 17)"),
        (["--formats", "coreml", "--min-ios", "iOS15"], "minimum_deployment_target 'iOS15' is not accepted"),
    ],
)
def test_user_errors_are_one_line_exit_2_before_any_conversion(tiny_dir, tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    assert cli.main(["export", str(tiny_dir), "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err
    assert not out.exists()


def test_a_converter_failure_is_a_failed_row_exit_0_and_exit_1_under_strict(tiny_dir, tmp_path, capsys):
    # A model this small has no compressed Core ML rung within 30 % of fp32's size: that converter fails for real.
    argv = ["export", str(tiny_dir), "--formats", "coreml", "--precisions", "fp32,compressed", "--no-validate"]
    assert cli.main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert "wrote 1 artifacts" in capsys.readouterr().out and (tmp_path / "a" / "coreml" / "model-fp32.mlpackage").is_dir()
    assert cli.main([*argv, "--out", str(tmp_path / "b"), "--strict"]) == 1
    # coremltools' own progress bars reach capsys in-process (issue 23 #10); the error is the last line
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("pocketml export: error: 1 artifact(s) failed")
    assert "coreml-compressed: no coreml compressed rung is within 30 %" in last
    assert (tmp_path / "b" / "manifest.json").is_file()  # the files that exported are kept


def test_export_prints_summary_and_notes(tiny_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["export", str(tiny_dir / "model.keras"), "--out", str(out), "--formats", "tflite"]
    assert cli.main([*argv, "--precisions", "fp32,int8-dynamic", "--no-validate"]) == 0
    stdout = capsys.readouterr().out
    assert "tflite-int8-dynamic" in stdout and "note: tflite-int8-dynamic: int8 weights" in stdout
    assert "wrote 2 artifacts" in stdout
    saved = json.loads((out / "manifest.json").read_text())
    assert [a["parity"]["status"] for a in saved["artifacts"]] == ["skipped", "skipped"]


@pytest.mark.skipif(importlib.util.find_spec("pocketml.export.onnx") is None, reason="export.onnx not written yet")
def test_onnx_dynamic_int8_slowness_is_shown(tiny_dir, tmp_path, capsys):
    from pocketml.export import onnx

    argv = ["export", str(tiny_dir), "--out", str(tmp_path / "out"), "--formats", "onnx"]
    assert cli.main([*argv, "--precisions", "int8-dynamic", "--no-validate"]) == 0
    stdout = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert " ".join(onnx.DYNAMIC_INT8_NOTE.split()) in stdout


def test_validate_strict_exits_1_on_a_mismatch_and_0_without_strict(real_model_dir, photos_dir, tmp_path_factory, capsys):
    export_dir = real_tflite_export(real_model_dir, photos_dir, tmp_path_factory.getbasetemp())
    broken = shutil.copytree(export_dir, tmp_path_factory.mktemp("cli") / "broken")
    shutil.copy(broken / "tflite" / "model-int8.tflite", broken / "tflite" / "model-fp32.tflite")
    # A converter that wrote a bad fp32 file: its manifest entry names that file (a file swapped in
    # behind the manifest's back is refused outright, tests/export/test_export_resume.py).
    manifest = ExportManifest.read(broken)
    manifest.by_name("tflite-fp32").sha256 = sha256_file(broken / "tflite" / "model-fp32.tflite")
    manifest.save(broken)
    images = str(photos_dir / "val")  # other held-out photos than the export's (test)
    assert cli.main(["validate", str(broken), "--images", images]) == 0
    assert cli.main(["validate", str(broken), "--images", images, "--strict"]) == 1
    captured = capsys.readouterr()
    assert "parity vs keras" in captured.out
    assert "tflite-fp32: max|dp|" in captured.err and captured.err.strip().count("\n") == 0


def test_validate_of_a_directory_without_manifest(tmp_path, capsys):
    assert cli.main(["validate", str(tmp_path)]) == 2
    assert "has no manifest.json" in capsys.readouterr().err
