"""An export never mixes with an earlier one: a real `pocketml export` of another model into the same
folder, interrupted by SIGINT, leaves a manifest that vouches only for its own finished files, which
every reader refuses as unfinished; a rerun keeps the files already judged and converts the rest; a
file replaced after its verdict is refused by package, bench, validate and predict in one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pocketml.app import cli
from pocketml.fsutil import sha256_file
from tests.conftest import PROJECT_ROOT
from tests.export.export_helpers import save_model_dir, tiny_classifier, tiny_model_dir

CLI = "import sys; from pocketml.app.cli import main; sys.exit(main())"
FLAGS = ["--formats", "tflite,onnx"]


def flipped_model_dir(directory: Path) -> Path:
    """Another model of the same shape: the first one's head negated."""
    model = tiny_classifier()
    head = model.layers[-1]
    head.set_weights([-w for w in head.get_weights()])
    return save_model_dir(directory, model)


def export_argv(model: Path, out: Path, photos: Path) -> list[str]:
    return ["export", str(model), "--out", str(out), "--calibration", str(photos), *FLAGS]


def run_cli(argv, capsys) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def interrupt_after_first_file(argv: list[str], cwd: Path) -> int:
    """Run `pocketml export` as its own process, SIGINT it once it reports its first finished file."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", CLI, *argv], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("exported "):
            proc.send_signal(signal.SIGINT)
            break
    proc.stdout.read()
    assert proc.wait(timeout=120) == 130, "".join(seen) + proc.stderr.read()
    return proc.returncode


def test_interrupted_reexport_is_refused_then_resumed(tmp_path, photos_dir, capsys):
    first, second = tiny_model_dir(tmp_path / "a"), flipped_model_dir(tmp_path / "b")
    out = tmp_path / "exp"
    assert run_cli(export_argv(first, out, photos_dir), capsys)[0] == 0

    interrupt_after_first_file(export_argv(second, out, photos_dir), tmp_path)
    saved = json.loads((out / "manifest.json").read_text())
    assert saved["model"]["source_sha256"] == sha256_file(second / "model.keras")
    assert 1 <= len(saved["artifacts"]) < saved["planned"]
    done = saved["artifacts"][0]
    assert sha256_file(out / done["path"]) == done["sha256"]
    done_stat = (out / done["path"]).stat()

    for argv in (["package", out, "--out", tmp_path / "bundles"], ["validate", out],
                 ["bench", out, "--out", tmp_path / "bench"]):
        code, _, err = run_cli(argv, capsys)
        assert code == 2 and "unfinished export" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "bundles").exists()

    code, stdout, _ = run_cli(export_argv(second, out, photos_dir), capsys)
    assert code == 0 and "kept 1 file(s) judged by an earlier export" in stdout
    assert (out / done["path"]).stat().st_mtime_ns == done_stat.st_mtime_ns  # not converted again
    saved = json.loads((out / "manifest.json").read_text())
    assert len(saved["artifacts"]) == saved["planned"]
    assert run_cli(["package", out, "--out", tmp_path / "bundles"], capsys)[0] == 0
    for bundle in json.loads((tmp_path / "bundles" / "android" / "bundle.json").read_text())["files"]:
        assert sha256_file(tmp_path / "bundles" / "android" / bundle["file"]) == bundle["sha256"]

    code, stdout, _ = run_cli(export_argv(second, out, photos_dir), capsys)
    assert code == 0 and f"kept {saved['planned'] - sum(a['status'] != 'exported' for a in saved['artifacts'])}" in stdout
    code, stdout, _ = run_cli(export_argv(first, out, photos_dir), capsys)  # another model: all converted again
    assert code == 0 and "kept" not in stdout


@pytest.fixture
def tampered(tmp_path, photos_dir, capsys):
    out = tmp_path / "exp"
    argv = ["export", tiny_model_dir(tmp_path / "a"), "--out", out, "--formats", "tflite", "--precisions", "fp32,fp16",
            "--calibration", photos_dir]
    assert run_cli(argv, capsys)[0] == 0
    shutil.copyfile(out / "tflite" / "model-fp32.tflite", out / "tflite" / "model-fp16.tflite")
    return out


@pytest.mark.parametrize("command", ["package", "validate", "bench", "predict"])
def test_a_file_replaced_after_its_verdict_is_refused(command, tampered, tmp_path, photos_dir, capsys):
    argv = {"package": ["package", tampered, "--out", tmp_path / "bundles"],
            "validate": ["validate", tampered],
            "bench": ["bench", tampered, "--out", tmp_path / "bench"],
            "predict": ["predict", tampered / "tflite" / "model-fp16.tflite", photos_dir / "test"]}[command]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "model-fp16.tflite does not match its manifest.json entry" in err
